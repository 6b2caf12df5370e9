"""The shapes of the JSON API's refusals, as the OpenAPI schema documents them.

Every operation may answer 400 (a body that cannot be parsed at all), 401 (no valid token
or session), 403 (the role does not allow it, or a cookie request lacks its CSRF token),
413 (the body is too large; answered before it is read), 404 (something the path names
does not exist) and 409 (the request does not apply to the present state: pausing a
paused campaign, a name taken, a store conflict). These share ``{"detail": "<words>"}``.
Validation problems (422) list ``loc``, ``msg`` and ``type`` per problem, never the input; a
refused campaign upload lists each problem of the file by its key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Refusal(BaseModel):
    """Why a request was refused, in words."""

    detail: str


class ValidationProblem(BaseModel):
    """One problem of a request that failed validation (its input is never echoed)."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationRefusal(BaseModel):
    """A request that failed validation (422)."""

    detail: list[ValidationProblem]


class FileProblem(BaseModel):
    """One problem of an uploaded campaign file: the key it concerns and what is wrong."""

    key: str
    message: str


class UploadProblems(BaseModel):
    """The problems of an uploaded campaign file."""

    message: str
    problems: list[FileProblem]


class UploadRefusal(BaseModel):
    """A campaign upload refused (422): the file's problems, by key; or, for a malformed
    request, the validation problems."""

    detail: UploadProblems | list[ValidationProblem]


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "The body could not be parsed (not JSON, not a form)"},
    401: {"model": Refusal, "description": "No valid token or session"},
    403: {"model": Refusal, "description": "The role does not allow this, or CSRF token missing"},
    404: {"model": Refusal, "description": "What the path names does not exist"},
    409: {"model": Refusal, "description": "Does not apply to the present state"},
    413: {"model": Refusal, "description": "Request body too large (refused before reading)"},
    422: {"model": ValidationRefusal, "description": "Validation problems (input not echoed)"},
}
"""Refusals every operation of the JSON API may answer (``FastAPI(responses=...)``)."""


# ------------------------------------------------------------------ answers (response_model)


class ObjectiveOut(BaseModel):
    """An objective and which way is better."""

    name: str
    direction: str


class ControllerOut(BaseModel):
    """The controller holding a campaign's lease; ``live`` is false once it stopped renewing."""

    host: str
    pid: int
    acquired_at: str | None
    renewed_at: str | None
    expires_at: str | None
    live: bool


class CampaignOut(BaseModel):
    """A campaign's summary (``display_status`` reads CONTROLLER LOST when nothing drives it)."""

    id: int
    name: str
    status: str
    display_status: str
    controller_lost: bool
    description: str
    planner: str | None
    objectives: list[ObjectiveOut]
    parameters: list[str]
    require_approval: bool
    budget: int | None
    seed: int | None
    counts: dict[str, int]
    completed: int
    created_at: str | None
    updated_at: str | None
    controller: ControllerOut | None


class BestOut(BaseModel):
    """The best completed experiment for one objective."""

    objective: str
    direction: str
    value: float
    experiment_id: int
    parameters: dict[str, Any]


class RunningOut(BaseModel):
    """The step an instrument runs now, and how long it is expected to take."""

    experiment_id: int
    action: str
    since: str | None
    elapsed_s: float
    expected_s: float | None


class InstrumentOut(BaseModel):
    """An instrument's health, as :func:`controller.api.health.instruments_view` derives it."""

    name: str
    kind: str
    address: str
    state: str
    display_state: str
    in_service: bool
    consecutive_faults: int
    fault_total: int
    last_error: str | None
    reason: str | None
    driver: str | None
    last_seen_at: str | None
    silent_s: float | None
    quiet: bool
    campaign_id: int
    campaign: str
    utilisation: float
    running: RunningOut | None
    overdue_s: float | None
    campaign_status: str | None = None


class HolderOut(BaseModel):
    """Who holds a lab unit under a live grant."""

    campaign_id: int | None
    campaign: str
    experiment_id: int | None


class LabInstrumentOut(BaseModel):
    """An instrument of an applied lab file, as every campaign of the lab sees it."""

    lab: str
    name: str
    kind: str
    address: str
    gateway: str | None
    state: str
    reason: str | None
    until: str | None
    changed_by: str | None
    updated_at: str
    held_by: HolderOut | None


class DecisionOut(BaseModel):
    """A planner decision, with ``summary`` in words."""

    id: int
    planner: str
    version: str
    seed: int | None
    n_train: int
    n_pending: int
    n_proposed: int
    candidate_scores: list[Any]
    details: dict[str, Any]
    seconds: float
    created_at: str | None
    summary: str


class TimingOut(BaseModel):
    """Where a campaign's time goes (:class:`controller.store.timing.Timing`): wall time per
    finished experiment, planning time per decision, instrument time per experiment."""

    wall_s_per_experiment: float | None
    planning_s_per_decision: float | None
    planning_s_total: float
    decisions: int
    instrument_s_per_experiment: float | None
    finished: int
    text: str


class CampaignDetailOut(CampaignOut):
    """A campaign with its spec, instruments, last decision, best results and time split."""

    spec: dict[str, Any]
    last_decision: DecisionOut | None
    instruments: list[InstrumentOut]
    startable: bool
    best: list[BestOut]
    timing: TimingOut


class OverviewCampaignOut(CampaignOut):
    """A campaign as the lab overview shows it."""

    best: list[BestOut]
    last_activity: str | None
    open_alarms: int
    awaiting_approval: int
    overdue_instruments: list[str]


class AttentionOut(BaseModel):
    """Something that needs the operator; ``level`` 0 is the most urgent."""

    level: int
    what: str
    text: str
    campaign_id: int | None
    campaign: str | None = None


class OverviewOut(BaseModel):
    """The lab at a glance."""

    campaigns: list[OverviewCampaignOut]
    attention: list[AttentionOut]
    open_alarms: int
    open_tasks: int


class EventOut(BaseModel):
    """An entry of the event log."""

    id: int
    campaign_id: int | None
    experiment_id: int | None
    instrument: str | None
    kind: str
    message: str
    data: dict[str, Any]
    actor: str
    created_at: str | None


class AckOut(BaseModel):
    """Who acknowledged an alarm, when, with what note."""

    by: str
    at: str
    note: str


class AlarmOut(EventOut):
    """An alarm and its acknowledgement (``null`` while open)."""

    acknowledged: AckOut | None


class AckedOut(BaseModel):
    """The answer to an acknowledgement."""

    alarm_id: int
    by: str
    at: str


class WhyOut(BaseModel):
    """Why the planner proposed an experiment."""

    proposer: str
    summary: str
    acquisition_value: float | None = None
    acquisition: Any = None
    predictions: dict[str, Any] = {}


class ExperimentOut(BaseModel):
    """An experiment's row (no steps)."""

    id: int
    campaign_id: int
    status: str
    parameters: dict[str, Any]
    decision_id: int | None
    origin: str | None
    score: float | None
    reason: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    waiting_for: str | None


class ExperimentPageOut(BaseModel):
    """A page of experiments and how many there are in all."""

    total: int
    offset: int
    limit: int
    items: list[ExperimentOut]


class ApprovalOut(ExperimentOut):
    """A proposal awaiting approval, its campaign, and why it was proposed."""

    campaign: str
    why: WhyOut


class CommandOut(BaseModel):
    """An operator command and what became of it."""

    id: int
    campaign_id: int
    command: str
    args: dict[str, Any]
    actor: str
    status: str
    result: str | None
    created_at: str | None
    applied_at: str | None
