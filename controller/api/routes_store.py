"""Experiments, instruments and the event log.

Reading needs any role; taking an instrument out of service (or back) needs an operator.
Users are managed in :mod:`controller.api.routes_users`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from controller.api.health import instruments_view
from controller.api.routes_campaigns import (
    CampaignId,
    CommandAccepted,
    DbSession,
    Operator,
    Settings,
    Viewer,
    get_campaign_or_404,
    queue,
)
from controller.api.schemas import EventOut, ExperimentPageOut, InstrumentOut
from controller.api.views import (
    event_view,
    experiment_detail,
    experiment_view,
    sample_view,
)
from controller.store import events, list_instruments
from controller.store.dashboard import event_page
from controller.store.samples import list_samples
from models.status import ExperimentStatus
from models.tables import ExperimentRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api")

MAX_PAGE = 500
"""Largest page of experiments or events one request returns."""


class OutOfServiceBody(BaseModel):
    """Why an instrument is taken out of service."""

    reason: str = Field(default="taken out of service by an operator", max_length=500)


@router.get(
    "/campaigns/{campaign_id}/experiments",
    tags=["experiments"],
    response_model=ExperimentPageOut,
)
def list_experiments(
    campaign_id: CampaignId,
    s: DbSession,
    _: Viewer,
    status: Annotated[list[ExperimentStatus] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    """A page of the campaign's experiments, optionally only those in some statuses."""
    c = get_campaign_or_404(s, campaign_id)
    where = [ExperimentRow.campaign_id == c.id]
    if status:
        where.append(ExperimentRow.status.in_([st.value for st in status]))
    total = s.scalar(select(func.count()).select_from(ExperimentRow).where(*where)) or 0
    by = ExperimentRow.id.desc() if order == "desc" else ExperimentRow.id.asc()
    rows = s.scalars(select(ExperimentRow).where(*where).order_by(by).offset(offset).limit(limit))
    return {
        "total": int(total),
        "offset": offset,
        "limit": limit,
        "items": [experiment_view(e) for e in rows],
    }


@router.get("/campaigns/{campaign_id}/samples", tags=["experiments"])
def list_campaign_samples(campaign_id: CampaignId, s: DbSession, _: Viewer) -> list[dict[str, Any]]:
    """Every sample of the campaign: its container, where it is now and its state, by
    experiment; its moves are the ``sample.moved`` events."""
    c = get_campaign_or_404(s, campaign_id)
    return [sample_view(r) for r in list_samples(s, c.id)]


@router.get("/experiments/{experiment_id}", tags=["experiments"])
def get_experiment(experiment_id: CampaignId, s: DbSession, _: Viewer) -> dict[str, Any]:
    """An experiment with its steps, measurements and the planner's decision."""
    e = s.get(ExperimentRow, experiment_id)
    if e is None:
        raise HTTPException(404, f"no experiment with id {experiment_id}")
    return experiment_detail(s, e)


@router.get(
    "/campaigns/{campaign_id}/instruments",
    tags=["instruments"],
    response_model=list[InstrumentOut],
)
def list_campaign_instruments(
    campaign_id: CampaignId, s: DbSession, settings: Settings, _: Viewer
) -> list[dict[str, Any]]:
    """Each instrument's state, whether it is in service, its last heartbeat and faults."""
    c = get_campaign_or_404(s, campaign_id)
    return instruments_view(s, c.id, settings.instrument_quiet_s)


def _instrument(s: DbSession, campaign_id: int, name: str) -> Any:
    c = get_campaign_or_404(s, campaign_id)
    if not any(r.name == name for r in list_instruments(s, c.id)):
        names = {i["name"] for i in c.spec.get("instruments", [])}
        if name not in names:
            raise HTTPException(404, f"campaign {c.name!r} has no instrument {name!r}")
    return c


@router.post(
    "/campaigns/{campaign_id}/instruments/{name}/out", status_code=202, tags=["instruments"]
)
def instrument_out(
    campaign_id: CampaignId,
    name: str,
    s: DbSession,
    who: Operator,
    body: OutOfServiceBody | None = None,
) -> CommandAccepted:
    """Take an instrument out of service: it gets no new steps until put back."""
    c = _instrument(s, campaign_id, name)
    reason = (body or OutOfServiceBody()).reason
    return queue(s, c, "instrument_out", {"instrument": name, "reason": reason}, who)


@router.post(
    "/campaigns/{campaign_id}/instruments/{name}/in", status_code=202, tags=["instruments"]
)
def instrument_in(
    campaign_id: CampaignId, name: str, s: DbSession, who: Operator
) -> CommandAccepted:
    """Put an instrument back in service."""
    c = _instrument(s, campaign_id, name)
    return queue(s, c, "instrument_in", {"instrument": name}, who)


@router.get("/events", tags=["events"], response_model=list[EventOut])
def list_events(
    s: DbSession,
    _: Viewer,
    campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    since_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.]+$")] = None,
    instrument: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> list[dict[str, Any]]:
    """A page of the event log (all campaigns unless one is named).

    Newest first, older pages by ``before_id`` (the last id of the page before), optionally
    only kinds starting with ``kind`` (``alarm.``) or about one ``instrument``. With
    ``since_id`` instead: the entries after it, oldest first, for a script that follows the
    log.
    """
    if since_id is not None:
        rows = events(s, campaign_id, since_id=since_id, limit=limit)
        return [event_view(e) for e in rows if not kind or e.kind.startswith(kind)]
    page = event_page(
        s,
        campaign_id=campaign_id,
        before_id=before_id,
        kind_prefix=kind,
        instrument=instrument,
        limit=limit,
    )
    return [event_view(e) for e in page]
