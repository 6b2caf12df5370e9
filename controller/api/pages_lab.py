"""The lab's pages, rendered on the server from the JSON API's own functions.

* ``/`` the lab overview (landing page): what needs the operator first, then every campaign
  with its state and health, progress, best result with its parameters, last activity,
  open alarms and proposals awaiting approval;
* ``/campaigns`` the campaign list (and, for admins, the upload form);
* ``/instruments`` every instrument: state, what it runs for which campaign, last error,
  fault totals, utilisation, heartbeat age, and the lab file's instruments;
* ``/alarms`` alarms and the event log of the whole lab, filterable, with acknowledgement;
* ``/approvals`` proposals awaiting approval across campaigns, with why the planner chose
  each, approved or rejected in bulk;
* ``/users`` (admins) users and their roles, tokens and passwords.

Each page calls the function behind the matching JSON endpoint, so a page never shows
anything the API would not; the buttons call the JSON API (``static/lab.js``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from controller.api import routes_lab, routes_store, routes_users
from controller.api.auth import factory_of, settings_of
from controller.api.pages import PageUser, _render
from controller.api.users import Role
from controller.store import transaction
from models.tables import CampaignRow

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

EVENT_PAGE = 100
"""Entries of the event log per page."""


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, who: PageUser) -> Response:
    """The lab at a glance: what needs the operator first, then every campaign."""
    with transaction(factory_of(request), read_only=True) as s:
        data = routes_lab.overview(s, settings_of(request), who)
    return _render(request, "overview.html", who, **data)


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, who: PageUser) -> Response:
    """The campaign list (filled in by the page's script); admins upload campaigns here."""
    return _render(request, "index.html", who)


@router.get("/instruments", response_class=HTMLResponse)
def instruments_page(request: Request, who: PageUser) -> Response:
    """Every instrument of every campaign, and the instruments of the applied lab files."""
    with transaction(factory_of(request), read_only=True) as s:
        instruments = routes_lab.lab_instruments(s, settings_of(request), who)
        lab = routes_lab.lab_instrument_states(s, who)
    return _render(request, "instruments.html", who, instruments=instruments, lab=lab)


@router.get("/alarms", response_class=HTMLResponse)
def alarms_page(
    request: Request,
    who: PageUser,
    campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    show: Annotated[str, Query(pattern="^(open|all)$")] = "open",
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.]*$")] = None,
    instrument: Annotated[str | None, Query(max_length=128)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """Alarms (open ones, or all) and the lab-wide event log, newest first, filtered by
    campaign, kind prefix and instrument, paged by ``before_id``."""
    with transaction(factory_of(request), read_only=True) as s:
        alarms = routes_lab.list_alarms(
            s, who, campaign_id=campaign_id, only_open=show == "open", limit=200
        )
        events = routes_store.list_events(
            s,
            who,
            campaign_id=campaign_id,
            before_id=before_id,
            kind=kind or None,
            instrument=instrument or None,
            limit=EVENT_PAGE,
        )
        rows = s.execute(select(CampaignRow.id, CampaignRow.name).order_by(CampaignRow.id))
        campaigns = [{"id": cid, "name": name} for cid, name in rows]
    names = {c["id"]: c["name"] for c in campaigns}
    older = events[-1]["id"] if len(events) == EVENT_PAGE else None
    return _render(
        request,
        "alarms.html",
        who,
        alarms=alarms,
        events=events,
        campaigns=campaigns,
        names=names,
        filters={
            "campaign_id": campaign_id,
            "show": show,
            "kind": kind or "",
            "instrument": instrument or "",
        },
        older=older,
    )


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(
    request: Request,
    who: PageUser,
    campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Proposals awaiting approval across campaigns, with why each was chosen."""
    with transaction(factory_of(request), read_only=True) as s:
        items = routes_lab.approvals(s, who, campaign_id=campaign_id)
    return _render(request, "approvals.html", who, items=items, campaign_id=campaign_id)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, who: PageUser) -> Response:
    """Users, their roles and state; admins only."""
    if not who.role.allows(Role.ADMIN):
        raise HTTPException(403, "admin role required")
    with transaction(factory_of(request), read_only=True) as s:
        users: list[Any] = [u.model_dump() for u in routes_users.get_users(s, who)]
    return _render(request, "users.html", who, users=users, roles=[r.value for r in Role])
