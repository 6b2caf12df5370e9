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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from controller.api.auth import factory_of
from controller.api.routes_campaigns import CampaignId, Settings, Viewer
from controller.api.routes_campaigns import get_campaign_or_404 as campaign_or_404
from controller.api.views import event_view, experiment_view, instruments_view, iso
from controller.store import count_by_status, events, transaction
from models.status import ExperimentStatus, StepStatus
from models.tables import CampaignRow, ExperimentRow, StepRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["live"])

KEEPALIVE_S = 15.0
"""A comment line is sent at least this often so proxies keep the connection open."""

_DONE_EXPERIMENT = frozenset(
    s.value
    for s in (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.ABANDONED)
)
"""Experiments no longer followed (a FAILED one queued again shows in the counts)."""
_DONE_STEP = frozenset(
    s.value
    for s in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.INTERRUPTED, StepStatus.ABANDONED)
)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


class CampaignWatcher:
    """What one stream has seen of a campaign, and the changes since.

    Args:
        campaign_id: The campaign.
        quiet_after_s: Silence after which an instrument is reported quiet, in seconds.
    """

    def __init__(self, campaign_id: int, quiet_after_s: float) -> None:
        self.campaign_id = campaign_id
        self.quiet_after_s = quiet_after_s
        self.primed = False
        self._campaign: tuple[str, dict[str, int]] | None = None
        # open experiments -> status and what it waits for
        self._experiments: dict[int, tuple[str, str | None]] = {}
        self._last_experiment = 0
        self._steps: dict[int, str] = {}  # unfinished steps -> status
        self._last_step = 0
        self._last_event = 0
        self._instruments: dict[str, tuple[str, bool, bool]] = {}

    def poll(self, s: Session) -> list[tuple[str, dict[str, Any]]]:
        """Read the store and return the changes since the last poll as ``(kind, data)``."""
        out: list[tuple[str, dict[str, Any]]] = []
        out += self._poll_campaign(s)
        out += self._poll_experiments(s)
        out += self._poll_steps(s)
        out += self._poll_instruments(s)
        logs = events(s, self.campaign_id, since_id=self._last_event, limit=500)
        if logs:
            self._last_event = logs[-1].id
            out += [("log", event_view(e)) for e in logs]
        if not self.primed:
            self.primed = True
            return []
        return out

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
            key = (view["state"], view["in_service"], view["quiet"])
            if self._instruments.get(view["name"]) != key:
                self._instruments[view["name"]] = key
                out.append(("instrument", view))
        return out


def _poll(factory: sessionmaker[Session], watcher: CampaignWatcher) -> list[tuple[str, Any]]:
    with transaction(factory, read_only=True) as s:
        return watcher.poll(s)


def sse(kind: str, data: Any, event_id: int) -> str:
    """One server-sent event."""
    return f"event: {kind}\nid: {event_id}\ndata: {json.dumps(data, default=str)}\n\n"


async def stream_changes(
    request: Request, watcher: CampaignWatcher, poll_s: float, max_s: float
) -> AsyncIterator[str]:
    """Server-sent events of ``watcher``'s changes until ``max_s`` pass or the client leaves."""
    factory = factory_of(request)
    deadline = time.monotonic() + max_s
    n = 0
    last_sent = time.monotonic()
    await run_in_threadpool(_poll, factory, watcher)  # take stock before the first line
    yield f"retry: {int(max(poll_s, 1.0) * 1000)}\n\n"
    while time.monotonic() < deadline:
        changes = await run_in_threadpool(_poll, factory, watcher)
        for kind, data in changes:
            n += 1
            yield sse(kind, data, n)
            last_sent = time.monotonic()
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        if await request.is_disconnected():
            break
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@router.get(
    "/campaigns/{campaign_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream(
    campaign_id: CampaignId,
    request: Request,
    settings: Settings,
    _: Viewer,
    max_s: Annotated[float, Query(gt=0, le=3600)] = 600.0,
) -> StreamingResponse:
    """Live changes of a campaign as server-sent events (see the module docs for the kinds).

    The stream ends after ``max_s`` seconds; browsers reconnect by themselves.
    """
    with transaction(factory_of(request), read_only=True) as s:  # not held open while streaming
        c = campaign_or_404(s, campaign_id)
        watcher = CampaignWatcher(c.id, settings.instrument_quiet_s)
    return StreamingResponse(
        stream_changes(request, watcher, settings.stream_poll_s, max_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
