"""Alarms: when something needs a person, say so in the store, the log and a webhook.

An alarm is an event of kind ``alarm.<what>`` in the store (the dashboard lists them), a
WARNING log line, and, when the campaign's ``[alarms] webhook`` is set, a JSON POST to that
URL (a chat channel, a pager) retried with exponential backoff in the background, so a slow
or dead webhook never holds up the campaign. The POST body is::

    {"campaign": "name", "alarm": "instrument_quarantined", "message": "...",
     "instrument": "furnace-1", "experiment": null, "data": {...}, "time": "ISO 8601"}
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from controller.store import add_event, transaction
from models.campaign import AlarmSpec

logger = logging.getLogger(__name__)


class Alarms:
    """Raises a campaign's alarms.

    Args:
        spec: The campaign's ``[alarms]`` table.
        campaign: The campaign's name (in log lines and webhook bodies).
        campaign_id: The campaign's id in the store.
        sessions: Session factory of the store.
        spawn: Runs a coroutine in the background (the controller keeps the task).
        backoff_s: Wait before the first webhook retry, doubled at each further one.
    """

    def __init__(
        self,
        spec: AlarmSpec,
        campaign: str,
        campaign_id: int,
        sessions: sessionmaker[Session],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        backoff_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.campaign = campaign
        self.campaign_id = campaign_id
        self._sessions = sessions
        self._spawn = spawn
        self.backoff_s = backoff_s

    def raise_(
        self,
        what: str,
        message: str,
        *,
        instrument: str | None = None,
        experiment_id: int | None = None,
        data: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        """Raise an alarm.

        Args:
            what: Short name of what happened, e.g. ``"instrument_quarantined"``.
            message: What an operator should read.
            instrument: The instrument concerned, if any.
            experiment_id: The experiment concerned, if any.
            data: Details, stored with the event and sent to the webhook.
            session: Write the event in this session (the caller's transaction) instead of
                a new one.
        """
        logger.warning("ALARM campaign %s: %s: %s", self.campaign, what, message)
        fields: dict[str, Any] = {
            "campaign_id": self.campaign_id,
            "instrument": instrument,
            "experiment_id": experiment_id,
            "data": dict(data or {}),
        }
        if session is not None:
            add_event(session, f"alarm.{what}", message, **fields)
        else:
            with transaction(self._sessions) as s:
                add_event(s, f"alarm.{what}", message, **fields)
        if self.spec.webhook:
            body = {
                "campaign": self.campaign,
                "alarm": what,
                "message": message,
                "instrument": instrument,
                "experiment": experiment_id,
                "data": dict(data or {}),
                "time": datetime.now(UTC).isoformat(),
            }
            self._spawn(self._deliver(self.spec.webhook, body))

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, default=str).encode()
        delay = self.backoff_s
        for attempt in range(1, self.spec.webhook_attempts + 1):
            try:
                await asyncio.to_thread(_post, url, payload, self.spec.webhook_timeout_s)
                return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                logger.warning(
                    "alarm webhook attempt %d/%d failed: %s",
                    attempt,
                    self.spec.webhook_attempts,
                    exc,
                )
            if attempt < self.spec.webhook_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)
        logger.error("alarm webhook gave up after %d attempts", self.spec.webhook_attempts)


def _post(url: str, payload: bytes, timeout_s: float) -> None:
    """POST ``payload`` as JSON; raise unless the answer is 2xx."""
    req = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        if not 200 <= resp.status < 300:
            raise OSError(f"webhook answered HTTP {resp.status}")
