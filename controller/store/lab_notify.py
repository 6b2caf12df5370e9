"""Waking the controllers of a lab when its grants change: PostgreSQL LISTEN/NOTIFY.

A controller whose steps wait for lab units must learn when another campaign gives one
back. On SQLite it looks (:func:`controller.store.lab.live_grants`, a small query every
``sdlab run --lab-poll-s``); on PostgreSQL the transaction that frees a unit also sends a
notification (:func:`notify_lab`, delivered when it commits), and every waiting controller
of the lab listens for it on a connection of its own (:class:`LabListener`), so it plans
again as soon as the unit is free instead of at its next look.

A notification carries no data: it says only "look at the lab again". Channels are named
per database schema and lab (:func:`lab_channel`), so labs of other schemas on the same
server (test and benchmark runs) do not wake each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

__all__ = ["LabListener", "lab_channel", "notifies", "notify_lab"]

_CHANNEL_SQL = "'sdlab_lab_' || substr(md5(current_schema() || ':' || CAST(:lab AS text)), 1, 20)"


def notifies(s: Session) -> bool:
    """Whether the store of ``s`` sends lab notifications (PostgreSQL)."""
    return s.get_bind().dialect.name == "postgresql"


def lab_channel(s: Session, lab_id: int) -> str:
    """The notification channel of lab ``lab_id`` in the schema ``s`` works in."""
    return str(s.scalar(text(f"SELECT {_CHANNEL_SQL}"), {"lab": lab_id}))


def notify_lab(s: Session, lab_id: int) -> None:
    """Tell the lab's listening controllers, when ``s`` commits, to look at the lab again.

    PostgreSQL delivers a notification only if the transaction commits, and the same
    notification once however often a transaction sends it. Does nothing on SQLite.
    """
    if notifies(s):
        s.execute(text(f"SELECT pg_notify({_CHANNEL_SQL}, '')"), {"lab": lab_id})


class LabListener:
    """Listens on one lab's channel and wakes its owner on every notification.

    Args:
        engine: The store's engine (PostgreSQL); the listener opens a connection of its own
            with the same address and options.
        channel: The lab's channel (:func:`lab_channel`).
    """

    def __init__(self, engine: Engine, channel: str) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.channel = channel
        self.woken = asyncio.Event()
        """Set on every notification (the owner clears it when it has looked)."""
        self.listening = False
        """Whether the listening connection is up (otherwise the owner must poll)."""

    async def run(self, retry_s: float = 1.0) -> None:
        """Listen until cancelled; a lost connection is opened again after ``retry_s``."""
        import psycopg

        while True:
            conn: Any = None
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                await conn.execute(f'LISTEN "{self.channel}"')
                self.listening = True
                self.woken.set()  # anything freed while we were not listening
                async for _ in conn.notifies():
                    self.woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the owner polls meanwhile
                logger.warning("lab channel %s: listening failed: %s", self.channel, exc)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(retry_s)
