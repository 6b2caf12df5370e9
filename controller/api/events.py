"""Live updates of a campaign as server-sent events, found by polling the store.

The controller writes to the store and nothing else, so the stream polls it: every
``stream_poll_s`` a :class:`CampaignWatcher` compares what it saw last with the store and
turns the differences into events:

=================  ============================================================
``campaign``       the campaign's status or experiment counts changed
``experiment``     a new experiment, or one whose status changed
``step``           a new step, or one whose status changed (e.g. finished)
``instrument``     an instrument's state, service or silence changed (``quiet``:
                   not heard from for ``instrument_quiet_s``)
``log``            a new entry of the event log
=================  ============================================================

Each ``data`` is the JSON the matching ``/api`` endpoint returns for that thing. The first
poll only takes stock (the page has just loaded the present state), so only changes are
sent. Queries are bounded: experiments and steps below the oldest one still open are not
read again.

Log entries are never replayed: the stream starts after the event id the client names
(``Last-Event-ID``, which a browser sends by itself when it reconnects, or ``after_id``,
the newest id the page loaded), else after the newest entry of the campaign. Each message's
``id`` is the newest log id delivered so far, so a reconnecting browser resumes where it
left off. A stream ends when its user is disabled, and, without a ``closed`` event (so the
browser reconnects once the server is back), when the server is asked to stop
(``app.state.stopping``, set by ``sdlab serve`` on SIGINT or SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from controller.api.auth import factory_of
from controller.api.health import instruments_view
from controller.api.routes_campaigns import CampaignId, Settings, Viewer
from controller.api.routes_campaigns import get_campaign_or_404 as campaign_or_404
from controller.api.users import get_user
from controller.api.views import event_view, experiment_view, iso
from controller.store import count_by_status, events, transaction
from controller.store.dashboard import newest_event_id
from models.status import FINISHED_EXPERIMENT, FINISHED_STEP
from models.tables import CampaignRow, ExperimentRow, StepRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["live"])

KEEPALIVE_S = 15.0
"""A comment line is sent at least this often so proxies keep the connection open."""

_DONE_EXPERIMENT = frozenset(s.value for s in FINISHED_EXPERIMENT)
"""Experiments no longer followed (a FAILED one queued again shows in the counts)."""
_DONE_STEP = frozenset(s.value for s in FINISHED_STEP)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


class CampaignWatcher:
    """What one stream has seen of a campaign, and the changes since.

    Args:
        campaign_id: The campaign.
        quiet_after_s: Silence after which an instrument is reported quiet, in seconds.
        after_event: Log entries up to this event id are not reported (already shown);
            ``None``: those older than the first poll.
    """

    def __init__(
        self, campaign_id: int, quiet_after_s: float, after_event: int | None = None
    ) -> None:
        self.campaign_id = campaign_id
        self.quiet_after_s = quiet_after_s
        self.primed = False
        self._campaign: tuple[str, dict[str, int]] | None = None
        # open experiments -> status and what it waits for
        self._experiments: dict[int, tuple[str, str | None]] = {}
        self._last_experiment = 0
        self._steps: dict[int, str] = {}  # unfinished steps -> status
        self._last_step = 0
        self._last_event = after_event if after_event is not None else -1
        self._instruments: dict[str, tuple[str, bool, bool]] = {}

    def poll(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        """Read the store and return the changes since the last poll as ``(kind, data)``."""
        out: list[tuple[str, dict[str, Any]]] = []
        out += self._poll_campaign(s)
        out += self._poll_experiments(s)
        out += self._poll_steps(s)
        out += self._poll_instruments(s)
        if self._last_event < 0:
            self._last_event = newest_event_id(s, self.campaign_id)
        logs = events(s, self.campaign_id, since_id=self._last_event, limit=500)
        if logs:
            self._last_event = logs[-1].id
        if not self.primed:
            self.primed = True
            out = []  # the page has just loaded the present state
        return out + [("log", event_view(e)) for e in logs]

    @property
    def last_event(self) -> int:
        """The newest log id reported so far (the stream's resume point)."""
        return self._last_event

    def _poll_campaign(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        row = s.get(CampaignRow, self.campaign_id)
        if row is None:
            return []
        counts = {k.value: v for k, v in count_by_status(s, row.id).items()}
        now = (row.status.value, counts)
        if now == self._campaign:
            return []
        self._campaign = now
        return [("campaign", {"id": row.id, "status": now[0], "counts": counts})]

    def _poll_experiments(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        low = min(self._experiments, default=self._last_experiment + 1)
        rows = s.scalars(
            select(ExperimentRow)
            .where(ExperimentRow.campaign_id == self.campaign_id, ExperimentRow.id >= low)
            .order_by(ExperimentRow.id)
        ).all()
        out: list[tuple[str, dict[str, Any]]] = []
        for e in rows:
            status = _value(e.status)
            now = (status, e.waiting_for)
            known = e.id <= self._last_experiment
            if known and self._experiments.get(e.id, now) == now:
                continue
            out.append(("experiment", experiment_view(e)))
            self._last_experiment = max(self._last_experiment, e.id)
            if status in _DONE_EXPERIMENT:
                self._experiments.pop(e.id, None)
            else:
                self._experiments[e.id] = now
        return out

    def _poll_steps(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        low = min(self._steps, default=self._last_step + 1)
        rows = s.execute(
            select(
                StepRow.id,
                StepRow.experiment_id,
                StepRow.instrument,
                StepRow.action,
                StepRow.status,
                StepRow.sent_at,
                StepRow.started_at,
                StepRow.finished_at,
            )
            .join(ExperimentRow, StepRow.experiment_id == ExperimentRow.id)
            .where(ExperimentRow.campaign_id == self.campaign_id, StepRow.id >= low)
            .order_by(StepRow.id)
        ).all()
        out: list[tuple[str, dict[str, Any]]] = []
        for sid, eid, inst, action, status, sent, started, finished in rows:
            st = _value(status)
            known = sid <= self._last_step
            if known and self._steps.get(sid) in (None, st):
                continue
            out.append(
                (
                    "step",
                    {
                        "id": sid,
                        "experiment_id": eid,
                        "instrument": inst,
                        "action": action,
                        "status": st,
                        "sent_at": iso(sent),
                        "started_at": iso(started),
                        "finished_at": iso(finished),
                    },
                )
            )
            self._last_step = max(self._last_step, sid)
            if st in _DONE_STEP:
                self._steps.pop(sid, None)
            else:
                self._steps[sid] = st
        return out

    def _poll_instruments(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for view in instruments_view(s, self.campaign_id, self.quiet_after_s):
            shown = str(view["display_state"]).split(" by ")[0]  # not every second overdue
            key = (shown, view["in_service"], view["quiet"])
            if self._instruments.get(view["name"]) != key:
                self._instruments[view["name"]] = key
                out.append(("instrument", view))
        return out


def _poll(
    factory: sessionmaker[Session], watcher: CampaignWatcher, who: str
) -> list[tuple[str, Any]] | None:
    """The watcher's changes, or ``None`` when the stream's user may no longer read."""
    with transaction(factory, read_only=True) as s:
        user = get_user(s, who)
        if user is None or user.disabled:
            return None
        return watcher.poll(s)


def sse(kind: str, data: Any, event_id: int) -> str:
    """One server-sent event."""
    return f"event: {kind}\nid: {event_id}\ndata: {json.dumps(data, default=str)}\n\n"


async def stream_changes(
    request: Request, watcher: CampaignWatcher, poll_s: float, max_s: float, who: str
) -> AsyncIterator[str]:
    """Server-sent events of ``watcher``'s changes until ``max_s`` pass, the client leaves,
    or user ``who`` is disabled."""
    factory = factory_of(request)
    stopping: threading.Event = request.app.state.stopping
    deadline = time.monotonic() + max_s
    last_sent = time.monotonic()
    first = await run_in_threadpool(_poll, factory, watcher, who)  # takes stock
    if first is None:
        return
    yield f"retry: {int(max(poll_s, 1.0) * 1000)}\n\n"
    for kind, data in first:  # only log entries after the resume point
        yield sse(kind, data, watcher.last_event)
    while time.monotonic() < deadline and not stopping.is_set():
        changes = await run_in_threadpool(_poll, factory, watcher, who)
        if changes is None:
            logger.info("stream of campaign %d closed: user %s disabled", watcher.campaign_id, who)
            yield 'event: closed\ndata: {"reason": "user disabled"}\n\n'
            return
        for kind, data in changes:
            yield sse(kind, data, watcher.last_event)
            last_sent = time.monotonic()
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        if await request.is_disconnected():
            break
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _resume_point(request: Request, after_id: int | None) -> int | None:
    header = request.headers.get("last-event-id", "").strip()
    if header.isdigit() and len(header) < 19:
        return int(header)
    return after_id


@router.get(
    "/campaigns/{campaign_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        404: {"description": "No such campaign"},
    },
)
def stream(
    campaign_id: CampaignId,
    request: Request,
    settings: Settings,
    who: Viewer,
    max_s: Annotated[float, Query(gt=0, le=3600)] = 600.0,
    after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """Live changes of a campaign as server-sent events (see the module docs for the kinds).

    Log entries after ``after_id`` (or the ``Last-Event-ID`` header; by default the newest
    entry now) are sent, each once. The stream ends after ``max_s`` seconds (browsers
    reconnect by themselves, resuming from the last id) or when the user is disabled.
    """
    with transaction(factory_of(request), read_only=True) as s:  # not held open while streaming
        c = campaign_or_404(s, campaign_id)
        start = _resume_point(request, after_id)
        if start is None:
            start = newest_event_id(s, c.id)
        watcher = CampaignWatcher(c.id, settings.instrument_quiet_s, after_event=start)
    return StreamingResponse(
        stream_changes(request, watcher, settings.stream_poll_s, max_s, who.name),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
