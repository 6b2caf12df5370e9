"""Campaign endpoints: list, detail, create from a TOML upload, start, and the controls.

The controls (pause, resume, abort, approve, reject, resolve) never touch a running
controller directly: they queue a command in the store (answered 202 with the command's
id) that the controller applies within a poll interval, and ``GET /api/commands/{id}``
tells whether it was applied or refused. Each is recorded in the event log with who asked.
"""

from __future__ import annotations

import logging
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, Response, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.api.auth import DbSession, admin, operator, settings_of, viewer
from controller.api.charts import chart_data
from controller.api.health import instruments_view
from controller.api.runs import RunLauncher, campaign_file, keep_campaign_file
from controller.api.schemas import (
    CampaignDetailOut,
    CampaignOut,
    CommandOut,
    UploadRefusal,
)
from controller.api.settings import ApiSettings
from controller.api.users import Principal
from controller.api.views import (
    campaign_view,
    command_view,
    decision_view,
    last_decision,
)
from controller.store import add_event, create_campaign, set_campaign_status, submit_command
from controller.store.dashboard import best_results
from controller.store.lab import get_lab
from controller.store.lease import LeaseHeldError, lease_is_live, lease_of
from controller.store.timing import timing
from models.campaign import CampaignSpec
from models.campaign_file import parse_spec
from models.errors import CampaignStateError, InvalidCampaignError
from models.lab import LabSpec, resolve_campaign_data
from models.status import CampaignStatus, ExperimentStatus
from models.tables import CampaignRow, CommandRow, ExperimentRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["campaigns"])

MAX_UPLOAD_BYTES = 1_000_000
"""Largest campaign file accepted, in bytes."""

Settings = Annotated[ApiSettings, Depends(settings_of)]
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]
Admin = Annotated[Principal, Depends(admin)]
CampaignId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class ExperimentsBody(BaseModel):
    """Experiments to approve."""

    experiments: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=1000
    )


class RejectBody(ExperimentsBody):
    """Experiments to reject, and why."""

    reason: str = Field(default="rejected by an operator", max_length=500)


class ResolveBody(BaseModel):
    """The fate of an interrupted experiment whose action is not safe to re-run."""

    action: Literal["rerun", "fail"]


class CommandAccepted(BaseModel):
    """A queued command: poll ``url`` until its status is APPLIED or REFUSED."""

    command_id: int
    status: str
    url: str


def launcher_of(request: Request) -> RunLauncher:
    """The app's run launcher."""
    launcher: RunLauncher = request.app.state.launcher
    return launcher


def get_campaign_or_404(s: Session, campaign_id: int) -> CampaignRow:
    """The campaign with that id, or a 404."""
    row = s.get(CampaignRow, campaign_id) if 0 < campaign_id < 2**31 else None
    if row is None:
        raise HTTPException(404, f"no campaign with id {campaign_id}")
    return row


def queue(
    s: Session,
    campaign: CampaignRow,
    command: str,
    args: dict[str, Any],
    who: Principal,
) -> CommandAccepted:
    """Queue a command for the campaign's controller and record who asked."""
    row = submit_command(s, campaign.id, command, args, actor=who.actor)
    add_event(
        s,
        "command.requested",
        f"{who.name} asked for {command} (command {row.id})",
        campaign_id=campaign.id,
        data={"command_id": row.id, "command": command, "args": args},
        actor=who.actor,
    )
    logger.info("campaign %s: %s queued %s (command %d)", campaign.name, who.name, command, row.id)
    return CommandAccepted(
        command_id=row.id, status=row.status.value, url=f"/api/commands/{row.id}"
    )


def _expect(campaign: CampaignRow, allowed: set[CampaignStatus], what: str) -> None:
    if campaign.status not in allowed:
        shown = " or ".join(sorted(s.value for s in allowed))
        raise HTTPException(
            409,
            f"cannot {what} campaign {campaign.name!r}: it is {campaign.status.value}, not {shown}",
        )


@router.get("/campaigns", summary="List campaigns", response_model=list[CampaignOut])
def list_campaigns(s: DbSession, _: Viewer) -> list[dict[str, Any]]:
    """Every campaign with its status and experiment counts, newest first."""
    rows = s.scalars(select(CampaignRow).order_by(CampaignRow.id.desc())).all()
    return [campaign_view(s, r) for r in rows]


@router.get("/campaigns/{campaign_id}", summary="Campaign detail", response_model=CampaignDetailOut)
def campaign_detail(
    campaign_id: CampaignId, s: DbSession, settings: Settings, _: Viewer
) -> dict[str, Any]:
    """A campaign: summary, spec, instruments and its last decision in words."""
    c = get_campaign_or_404(s, campaign_id)
    out = campaign_view(s, c)
    decision = last_decision(s, c.id)
    out["spec"] = dict(c.spec)
    out["last_decision"] = decision_view(decision) if decision is not None else None
    out["instruments"] = instruments_view(s, c.id, settings.instrument_quiet_s)
    out["startable"] = campaign_file(settings, c.name).is_file()
    out["best"] = best_results(s, c)
    out["timing"] = timing(s, c.id).as_dict()  # wall, planning and instrument time, split
    return out


@router.get("/campaigns/{campaign_id}/charts", summary="Chart data of a campaign")
def campaign_charts(campaign_id: CampaignId, s: DbSession, _: Viewer) -> dict[str, Any]:
    """Best-so-far curve, parameter space, Pareto front, phase map and instrument timeline."""
    return chart_data(s, get_campaign_or_404(s, campaign_id))


def _lab_of_upload(s: Session, data: dict[str, Any]) -> LabSpec | None:
    """The lab an uploaded campaign's ``[lab]`` table names, if the store has it."""
    table = data.get("lab")
    name = table.get("name") if isinstance(table, dict) else None
    found = get_lab(s, name) if isinstance(name, str) else None
    return None if found is None else found[1]


def _parse_upload(
    raw: bytes, filename: str, s: Session
) -> tuple[CampaignSpec, str, LabSpec | None]:
    if len(raw) > MAX_UPLOAD_BYTES:
        raise InvalidCampaignError(filename, [("", f"file is larger than {MAX_UPLOAD_BYTES} B")])
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise InvalidCampaignError(filename, [("", "file is not UTF-8 text")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCampaignError(filename, [("", f"invalid TOML: {exc}")]) from exc
    lab = _lab_of_upload(s, data)
    spec = parse_spec(resolve_campaign_data(data, lab, filename), CampaignSpec, filename)
    return spec, text, lab


def _check_planner(text: str, filename: str, seed: int | None, lab: LabSpec | None) -> None:
    from controller.runner import validate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.toml"
        path.write_text(text, encoding="utf-8")
        try:
            validate(path, seed, lab=lab)
        except InvalidCampaignError as exc:
            raise InvalidCampaignError(filename, exc.problems) from exc


@router.post(
    "/campaigns",
    status_code=201,
    summary="Create a campaign from a TOML upload",
    responses={422: {"model": UploadRefusal, "description": "The file's problems, by key"}},
)
def create_from_upload(
    file: Annotated[UploadFile, File(description="The campaign TOML file")],
    s: DbSession,
    who: Admin,
    settings: Settings,
    seed: Annotated[int | None, Form(ge=0, le=2**63 - 1)] = None,
    budget: Annotated[int | None, Form(ge=1, le=10**9)] = None,
) -> dict[str, Any]:
    """Validate an uploaded campaign file and record the campaign (status CREATED).

    An invalid file is answered 422 with one ``{"key", "message"}`` per problem, a taken
    name 409; nothing is recorded then.
    """
    raw = file.file.read(MAX_UPLOAD_BYTES + 1)
    filename = file.filename or "upload.toml"
    try:
        spec, text, lab = _parse_upload(raw, filename, s)
        _check_planner(text, filename, seed, lab)
    except InvalidCampaignError as exc:
        raise HTTPException(
            422,
            {
                "message": str(exc),
                "problems": [{"key": p.key, "message": p.message} for p in exc.problems],
            },
        ) from exc
    if s.scalars(select(CampaignRow).where(CampaignRow.name == spec.campaign.name)).first():
        raise HTTPException(409, f"a campaign named {spec.campaign.name!r} exists already")
    row = create_campaign(
        s,
        spec,
        seed=seed if seed is not None else spec.campaign.seed,
        max_experiments=budget or spec.budget.max_experiments,
        source=f"upload {filename}",
        actor=who.actor,
    )
    keep_campaign_file(settings, row.name, text)
    return campaign_view(s, row)


@router.post("/campaigns/{campaign_id}/start", status_code=202, summary="Start a campaign")
def start(campaign_id: CampaignId, request: Request, s: DbSession, who: Admin) -> dict[str, Any]:
    """Run ``sdlab run`` for an uploaded campaign that is CREATED or FAILED, or RUNNING or
    PAUSED with no live controller (its controller crashed: the run resumes it; a paused
    campaign restarts paused)."""
    c = get_campaign_or_404(s, campaign_id)
    startable = {CampaignStatus.CREATED, CampaignStatus.FAILED}
    resumable = {CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.ESTOPPED}
    _expect(c, startable | resumable, "start")
    held = lease_of(s, c.id)
    if held is not None and lease_is_live(held):
        raise HTTPException(409, str(LeaseHeldError(c.id, held)))
    try:
        pid = launcher_of(request).start(c.name)
    except CampaignStateError as exc:
        raise HTTPException(409, str(exc)) from exc
    add_event(
        s,
        "campaign.start_requested",
        f"{who.name} started campaign {c.name} (process {pid})",
        campaign_id=c.id,
        data={"pid": pid},
        actor=who.actor,
    )
    return {"campaign_id": c.id, "pid": pid}


@router.post("/campaigns/{campaign_id}/pause", status_code=202, summary="Pause a campaign")
def pause(campaign_id: CampaignId, s: DbSession, who: Operator) -> CommandAccepted:
    """Start no new steps; steps already sent finish."""
    c = get_campaign_or_404(s, campaign_id)
    _expect(c, {CampaignStatus.RUNNING}, "pause")
    return queue(s, c, "pause", {}, who)


@router.post("/campaigns/{campaign_id}/resume", status_code=202, summary="Resume a campaign")
def resume(campaign_id: CampaignId, s: DbSession, who: Operator) -> CommandAccepted:
    """Undo a pause."""
    c = get_campaign_or_404(s, campaign_id)
    _expect(c, {CampaignStatus.PAUSED}, "resume")
    return queue(s, c, "resume", {}, who)


@router.post(
    "/campaigns/{campaign_id}/abort",
    summary="Abort a campaign",
    responses={202: {"description": "Queued for the controller (a CommandAccepted)"}},
)
def abort(
    campaign_id: CampaignId, request: Request, response: Response, s: DbSession, who: Admin
) -> dict[str, Any]:
    """Start nothing more; waiting experiments are abandoned.

    A campaign that never started (CREATED or FAILED, and no run of this server alive) is
    aborted at once (200); otherwise the command goes to its controller (202).
    """
    c = get_campaign_or_404(s, campaign_id)
    live = {
        CampaignStatus.CREATED,
        CampaignStatus.RUNNING,
        CampaignStatus.PAUSED,
        CampaignStatus.ESTOPPED,
    }
    _expect(c, live | {CampaignStatus.FAILED}, "abort")
    idle = c.status in (CampaignStatus.CREATED, CampaignStatus.FAILED)
    if idle and not launcher_of(request).running(c.name):
        set_campaign_status(
            s, c, CampaignStatus.ABORTED, reason=f"aborted by {who.name}", actor=who.actor
        )
        return {"campaign_id": c.id, "status": CampaignStatus.ABORTED.value}
    response.status_code = 202
    return queue(s, c, "abort", {}, who).model_dump()


def _proposed(s: Session, c: CampaignRow, ids: list[int]) -> None:
    if not bool(dict(c.spec).get("safety", {}).get("require_approval", False)):
        raise HTTPException(409, f"campaign {c.name!r} does not require approval")
    found = dict(
        s.execute(
            select(ExperimentRow.id, ExperimentRow.status).where(
                ExperimentRow.campaign_id == c.id, ExperimentRow.id.in_(ids)
            )
        ).all()
    )
    missing = [i for i in ids if i not in found]
    if missing:
        raise HTTPException(404, f"no experiment(s) {missing} in campaign {c.name!r}")
    waiting = ExperimentStatus.PROPOSED.value
    late = [i for i in ids if str(getattr(found[i], "value", found[i])) != waiting]
    if late:
        raise HTTPException(409, f"experiment(s) {late} are not awaiting approval")


@router.post("/campaigns/{campaign_id}/approve", status_code=202, summary="Approve proposals")
def approve(
    campaign_id: CampaignId, body: ExperimentsBody, s: DbSession, who: Operator
) -> CommandAccepted:
    """Let proposals that await approval (status PROPOSED) run."""
    c = get_campaign_or_404(s, campaign_id)
    _proposed(s, c, body.experiments)
    return queue(s, c, "approve", {"experiments": body.experiments}, who)


@router.post("/campaigns/{campaign_id}/reject", status_code=202, summary="Reject proposals")
def reject(
    campaign_id: CampaignId, body: RejectBody, s: DbSession, who: Operator
) -> CommandAccepted:
    """Abandon proposals that await approval; the planner is told they are infeasible."""
    c = get_campaign_or_404(s, campaign_id)
    _proposed(s, c, body.experiments)
    return queue(s, c, "reject", {"experiments": body.experiments, "reason": body.reason}, who)


@router.post(
    "/campaigns/{campaign_id}/experiments/{experiment_id}/resolve",
    status_code=202,
    summary="Decide the fate of an interrupted experiment",
)
def resolve(
    campaign_id: CampaignId,
    experiment_id: CampaignId,
    body: ResolveBody,
    s: DbSession,
    who: Operator,
) -> CommandAccepted:
    """Re-run or fail an INTERRUPTED experiment whose action is not safe to re-run."""
    c = get_campaign_or_404(s, campaign_id)
    e = s.get(ExperimentRow, experiment_id)
    if e is None or e.campaign_id != c.id:
        raise HTTPException(404, f"no experiment {experiment_id} in campaign {c.name!r}")
    if e.status != ExperimentStatus.INTERRUPTED:
        raise HTTPException(409, f"experiment {experiment_id} is {e.status.value}, not INTERRUPTED")
    return queue(s, c, "resolve", {"experiment": experiment_id, "action": body.action}, who)


@router.get("/commands/{command_id}", summary="A command's status", response_model=CommandOut)
def command_status(command_id: CampaignId, s: DbSession, _: Viewer) -> dict[str, Any]:
    """PENDING until the controller applies (APPLIED) or refuses (REFUSED, with ``result``)."""
    row = s.get(CommandRow, command_id)
    if row is None:
        raise HTTPException(404, f"no command with id {command_id}")
    return command_view(row)
