"""Alarms: when something needs a person, say so in the store, the log and a webhook.

An alarm is an event of kind ``alarm.<what>`` in the store (the dashboard lists them), a
WARNING log line, and, when the campaign's ``[alarms] webhook`` is set, a JSON POST to that
URL (a chat channel, a pager) retried with exponential backoff in the background, so a slow
or dead webhook never holds up the campaign. The POST body is::

    {"id": 1234, "campaign": "name", "alarm": "instrument_quarantined", "message": "...",
     "instrument": "furnace-1", "experiment": null, "data": {...}, "time": "ISO 8601"}

Delivery is at least once, with the store as the outbox: a delivered alarm gets a
``webhook.delivered`` event, one whose attempts ran out a ``webhook.failed`` event, and a
controller that starts sends again every alarm of the last :data:`REDELIVER_WITHIN` that has
neither (its predecessor died while retrying). ``id`` (the alarm's event id) lets the
receiver drop a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.store import add_event, transaction
from models.campaign import AlarmSpec
from models.tables import EventRow, utcnow

logger = logging.getLogger(__name__)

REDELIVER_WITHIN = timedelta(hours=24)
"""How old an undelivered alarm may be for a starting controller to send it again."""


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
            event = add_event(session, f"alarm.{what}", message, **fields)
            session.flush()
        else:
            with transaction(self._sessions) as s:
                event = add_event(s, f"alarm.{what}", message, **fields)
                s.flush()
        if self.spec.webhook:
            self._spawn(self._deliver(self.spec.webhook, self._body(event)))

    def _body(self, event: EventRow) -> dict[str, Any]:
        return {
            "id": event.id,
            "campaign": self.campaign,
            "alarm": event.kind.removeprefix("alarm."),
            "message": event.message,
            "instrument": event.instrument,
            "experiment": event.experiment_id,
            "data": dict(event.data or {}),
            "time": (event.created_at or datetime.now(UTC)).isoformat(),
        }

    def redeliver_pending(self) -> int:
        """Send again every recent alarm of the campaign that was neither delivered nor given
        up on (a controller died while retrying it). Returns how many."""
        if not self.spec.webhook:
            return 0
        with transaction(self._sessions) as s:
            rows = s.scalars(
                select(EventRow)
                .where(
                    EventRow.campaign_id == self.campaign_id,
                    EventRow.created_at >= utcnow() - REDELIVER_WITHIN,
                    EventRow.kind.like("alarm.%") | EventRow.kind.like("webhook.%"),
                )
                .order_by(EventRow.id)
            ).all()
            settled = {
                int(r.data.get("alarm_event", -1)) for r in rows if r.kind.startswith("webhook.")
            }
            bodies = [
                self._body(r) for r in rows if r.kind.startswith("alarm.") and r.id not in settled
            ]
        for body in bodies:
            logger.warning("alarm %d was never delivered; sending it again", body["id"])
            self._spawn(self._deliver(self.spec.webhook, body))
        return len(bodies)

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, default=str).encode()
        delay = self.backoff_s
        for attempt in range(1, self.spec.webhook_attempts + 1):
            try:
                await asyncio.to_thread(_post, url, payload, self.spec.webhook_timeout_s)
                self._settle(body, "webhook.delivered", f"alarm {body['id']} delivered", attempt)
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
        self._settle(
            body,
            "webhook.failed",
            f"alarm {body['id']} could not be delivered to the webhook",
            self.spec.webhook_attempts,
        )

    def _settle(self, body: dict[str, Any], kind: str, message: str, attempts: int) -> None:
        try:
            with transaction(self._sessions) as s:
                add_event(
                    s,
                    kind,
                    message,
                    campaign_id=self.campaign_id,
                    data={"alarm_event": body["id"], "attempts": attempts},
                )
        except Exception as exc:  # at worst the alarm is sent again after a restart
            logger.warning("could not record the webhook outcome of alarm %s: %s", body["id"], exc)


def _post(url: str, payload: bytes, timeout_s: float) -> None:
    """POST ``payload`` as JSON; raise unless the answer is 2xx."""
    req = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        if not 200 <= resp.status < 300:
            raise OSError(f"webhook answered HTTP {resp.status}")
