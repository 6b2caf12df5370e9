"""The campaign specification: the pydantic models of a campaign file.

A campaign file declares what to search (``[[parameters]]``), what to optimise
(``[[objectives]]``), how one experiment is made (``[[workflow]]`` steps, each an action on an
instrument of some kind), the instruments and their addresses (``[[instruments]]``, optionally
simulated), the planner and the budget. ``docs/campaigns.md`` documents every key.

The cross checks between tables (:meth:`CampaignSpec.cross_check_problems`) report
:class:`~models.errors.Problem` s with their key paths. Reading a file and turning pydantic's
errors into key paths is :mod:`models.campaign_file`'s job; ``load_campaign``,
``load_simulation``, ``parse_spec`` and ``read_toml`` are still importable from here.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    model_validator,
)

from models.constraints import ParameterConstraint
from models.costs import NonNegativeCost
from models.errors import InvalidCampaignError, Problem
from models.instrument_spec import MAX_SEED, InstrumentSpec, is_loopback_address
from models.objectives import Objective
from models.params import NAME_PATTERN, Parameter, SearchSpace, constraint_problem
from models.placement import PlannerPlacement
from models.resources import ResourceSpec, resource_problems

if TYPE_CHECKING:  # the loader imports this module; it is loaded on first use from here
    from models.campaign_file import load_campaign as load_campaign
    from models.campaign_file import load_simulation as load_simulation
    from models.campaign_file import parse_spec as parse_spec
    from models.campaign_file import read_toml as read_toml

_LOADER_NAMES = frozenset({"load_campaign", "load_simulation", "parse_spec", "read_toml"})


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignInfo(_Spec):
    """The ``[campaign]`` table.

    Attributes:
        name: Unique campaign name; running a file whose name is already in the database
            resumes that campaign.
        description: Free text for the operator.
        seed: Seed of every random choice the planner makes (``--seed`` overrides it).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class BudgetSpec(_Spec):
    """The ``[budget]`` table: when the campaign stops.

    Attributes:
        max_experiments: Completed experiments after which the campaign is done.
        max_failures: Failed experiments after which the campaign stops as FAILED
            (``None``: never).
        max_cost: Cost (in the campaign's cost unit, see :mod:`models.costs`) that the
            completed and running experiments may add up to: the campaign is done when the
            next experiment would pass it (``None``: no cost budget).
    """

    max_experiments: int = Field(ge=1)
    max_failures: int | None = Field(default=None, ge=1)
    max_cost: NonNegativeCost | None = None


class ReportSpec(_Spec):
    """The ``[report]`` table: how the end-of-run summary groups experiments.

    A campaign with several goals in one search space (an A-Lab campaign's target compounds,
    a screening campaign's substrates) wants one line per goal: how often it was tried and
    the best result so far.

    Attributes:
        group_by: A campaign parameter; the summary shows one row per value it took
            (``None``: no grouped rows).
        success_at: A group counts as a success when its best value of the first objective
            reaches this (at least it for ``maximize``, at most it for ``minimize``); the
            summary then says how many groups succeeded (``None``: no success count).
    """

    group_by: str | None = None
    success_at: FiniteFloat | None = None


class PlannerSpec(_Spec):
    """The ``[planner]`` table.

    Attributes:
        name: A registered planner name (``random``, ``sobol``, ``qlognei``, ...).
        options: Planner-specific settings, passed to the planner's constructor.
        prefetch: Proposals kept ready ahead of need, so that a freed instrument never waits
            for the planner. Each is planned before the results still to come are known
            (they are passed as pending); 0 plans when an instrument frees, with every
            result so far.
        placement: Where its Ray actor runs and how often it is restarted
            (:class:`~models.placement.PlannerPlacement`); not part of the campaign's hash.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    prefetch: int = Field(default=0, ge=0, le=64)
    placement: PlannerPlacement = Field(default_factory=PlannerPlacement)


class WorkflowStep(_Spec):
    """One ``[[workflow]]`` entry: an action that makes part of each experiment.

    Attributes:
        kind: The instrument kind that performs the action.
        action: The action's name, as the instrument describes it.
        parameters: Campaign parameters sent with the action; ``None`` sends every
            campaign parameter the action declares.
        fixed: Constant parameters sent with every run of the action (a scan range, a
            ramp rate), checked against the instrument's limits like the others.
        cost: Overrides the cost one run of the action declares (campaign cost unit);
            ``None`` uses the instrument's declaration.
        cost_per: Overrides the action's declared cost per unit of its parameters
            (``None``: the declaration; with ``cost`` set and this left out, none).
        needs: Resources (``[[resources]]`` names) the step holds while it runs, one unit
            of each, granted together with the instrument (all or nothing).
    """

    kind: str = Field(pattern=NAME_PATTERN)
    action: str = Field(pattern=NAME_PATTERN)
    parameters: list[str] | None = None
    fixed: dict[str, FiniteFloat | int | str] = Field(default_factory=dict)
    cost: NonNegativeCost | None = None
    cost_per: dict[str, NonNegativeCost] | None = None
    needs: list[str] = Field(default_factory=list, max_length=64)


class ReliabilitySpec(_Spec):
    """The ``[reliability]`` table: how the controller rides out instrument faults.

    Attributes:
        max_attempts: Attempts of one step (the first included) before its experiment
            fails. Only actions their instrument declares ``retry_safe`` are tried again.
        backoff_s: Wait before the first retry, doubled at each further one, in seconds.
        backoff_max_s: Longest wait between retries, in seconds.
        quarantine_after: Consecutive faults after which an instrument is quarantined
            (its work goes to other instruments of its kind, or waits).
        quarantine_s: How long a quarantine lasts before the instrument is probed again.
        heartbeat_s: Interval of the heartbeats sent to each instrument, in seconds.
        silent_after_s: An instrument that has not answered for this long is UNKNOWN.
        command_poll_s: How often the controller looks for operator commands.
        max_refused_in_a_row: Proposals refused in a row (by the safety gate: limits,
            constraints, or at dispatch) after which the campaign cannot make progress and
            stops as FAILED, with a ``no_progress`` alarm naming the last refusal. The
            streak ends when an experiment's first step is sent.
    """

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    backoff_max_s: float = Field(default=60.0, ge=0.0, le=86400.0)
    quarantine_after: int = Field(default=3, ge=1, le=1000)
    quarantine_s: float = Field(default=60.0, gt=0.0, le=86400.0)
    heartbeat_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    silent_after_s: float = Field(default=10.0, gt=0.0, le=86400.0)
    command_poll_s: float = Field(default=0.5, gt=0.0, le=60.0)
    max_refused_in_a_row: int = Field(default=50, ge=1, le=1_000_000)


class AlarmSpec(_Spec):
    """The ``[alarms]`` table: who is told when something needs a person.

    Every alarm is an event in the store and a WARNING log line; with ``webhook`` set it is
    also POSTed as JSON to that URL (e.g. a chat or paging service), retried with backoff.

    Attributes:
        webhook: ``http://`` or ``https://`` URL to POST alarms to.
        webhook_attempts: Attempts per alarm before giving up (the event stays in the store).
        webhook_timeout_s: Time allowed for one POST.
    """

    webhook: str | None = Field(default=None, pattern=r"^https?://.+$")
    webhook_attempts: int = Field(default=5, ge=1, le=50)
    webhook_timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)


class SafetySpec(_Spec):
    """The ``[safety]`` table.

    Attributes:
        require_approval: Proposals wait (PROPOSED) until an operator approves them; a
            rejected proposal is abandoned and the planner told it is infeasible.
    """

    require_approval: bool = False


class CampaignLabSpec(_Spec):
    """The ``[lab]`` table of a campaign file: which lab instruments and resources it uses.

    Attributes:
        name: The lab (as recorded by ``sdlab lab apply``).
        instruments: Lab instruments by name.
        kinds: Every lab instrument of these kinds.
        resources: Lab resources the campaign's steps may list in ``needs`` (or name as
            ``sample_container``).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    instruments: list[str] = Field(default_factory=list, max_length=1024)
    kinds: list[str] = Field(default_factory=list, max_length=256)
    resources: list[str] = Field(default_factory=list, max_length=256)


class CampaignSpec(_Spec):
    """A whole campaign file.

    Attributes:
        campaign: Name, description and seed.
        parameters: The search space, in order.
        parameter_constraints: Linear and mixture constraints between continuous
            parameters (``[[parameter_constraints]]``, see :mod:`models.constraints`).
        objectives: One or more objectives, each a measurement name and a direction.
        workflow: The ordered steps that make one experiment.
        instruments: The instruments the steps run on.
        planner: Which planner proposes experiments.
        budget: When to stop.
        safety: Operator approval and other safety settings.
        reliability: Retries, quarantine and heartbeats.
        alarms: Where alarms go.
        report: How the end-of-run summary groups experiments.
        resources: Shared resources that steps hold besides their instrument
            (``[[resources]]``, see :mod:`models.resources`).
        sample_container: The resource whose unit (a crucible) each experiment holds from
            its first step to its last; ``None``: samples are not held in containers.
        lab: The lab whose instruments and resources the campaign shares with others
            (``None``: it has its own only); see :mod:`models.lab`.
    """

    campaign: CampaignInfo
    parameters: list[Parameter] = Field(min_length=1)
    parameter_constraints: list[ParameterConstraint] = Field(default_factory=list)
    objectives: list[Objective] = Field(min_length=1)
    workflow: list[WorkflowStep] = Field(min_length=1)
    instruments: list[InstrumentSpec] = Field(min_length=1)
    planner: PlannerSpec
    budget: BudgetSpec
    safety: SafetySpec = Field(default_factory=SafetySpec)
    reliability: ReliabilitySpec = Field(default_factory=ReliabilitySpec)
    alarms: AlarmSpec = Field(default_factory=AlarmSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    resources: list[ResourceSpec] = Field(default_factory=list, max_length=256)
    sample_container: str | None = None
    lab: CampaignLabSpec | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignSpec:
        problems = self.cross_check_problems()
        if problems:
            # One ValueError per problem would stop at the first: raise them all at once,
            # structured (the loader takes them from the error as they are).
            raise InvalidCampaignError(None, problems)
        return self

    def cross_check_problems(self) -> list[Problem]:
        """What is wrong between the tables of the file (each table being valid alone).

        Returns:
            One problem per finding, with its key path; empty when the file holds together.
        """
        problems = resource_problems(
            self.resources,
            [step.needs for step in self.workflow],
            {s.kind for s in self.instruments},
            self.sample_container,
        )
        for table, entries in (
            ("parameters", self.parameters),
            ("objectives", self.objectives),
            ("instruments", self.instruments),
        ):
            seen: list[str] = []
            for i, entry in enumerate(entries):
                if entry.name in seen:
                    problems.append(Problem((table, i, "name"), f"{entry.name!r} is used twice"))
                seen.append(entry.name)
        for i, inst in enumerate(self.instruments):
            if (
                inst.address is not None
                and not inst.insecure
                and not is_loopback_address(inst.address)
                and (inst.curve is None or inst.curve.client_keys is None)
            ):
                problems.append(
                    Problem(
                        ("instruments", i, "curve", "client_keys"),
                        f"instrument {inst.name!r} at {inst.address!r} is not on loopback: the "
                        "controller needs curve.client_keys and curve.server_public_key (or "
                        "insecure = true)",
                    )
                )
        problems += self._workflow_problems()
        names = [p.name for p in self.parameters]
        if self.report.group_by is not None and self.report.group_by not in names:
            problems.append(
                Problem(("report", "group_by"), f"unknown parameter {self.report.group_by!r}")
            )
        if not any(o.kind == "objective" for o in self.objectives):
            problems.append(
                Problem(("objectives",), 'at least one entry must have kind = "objective"')
            )
        if not problems and self.parameter_constraints:
            bare = SearchSpace(parameters=list(self.parameters))
            for i, constraint in enumerate(self.parameter_constraints):
                why = constraint_problem(bare, constraint)
                if why is not None:
                    problems.append(Problem(("parameter_constraints", i), why))
        return problems

    def _workflow_problems(self) -> list[Problem]:
        """Steps on instruments the campaign lacks, or sending parameters it does not declare.

        A step that sends a parameter the search space does not declare could never run:
        every proposal would be refused, and the campaign would abandon experiments
        without end. (What an instrument's action itself requires is known only from its
        ``describe``; the controller checks that when it connects.)
        """
        problems: list[Problem] = []
        kinds = {s.kind for s in self.instruments}
        names = [p.name for p in self.parameters]
        numeric = {p.name for p in self.parameters if p.type != "categorical"}
        for i, step in enumerate(self.workflow):
            if step.kind not in kinds:
                problems.append(
                    Problem(
                        ("workflow", i, "kind"),
                        f"no instrument of kind {step.kind!r} (known: {', '.join(sorted(kinds))})",
                    )
                )
            for j, p in enumerate(step.parameters or []):
                if p not in names:
                    problems.append(
                        Problem(
                            ("workflow", i, "parameters", j),
                            f"step {step.action!r} sends parameter {p!r}, which the search "
                            f"space does not declare (declared: {', '.join(names)}); add it "
                            "to [[parameters]], or give it a value in fixed",
                        )
                    )
            step_numeric = numeric | {k for k, v in step.fixed.items() if not isinstance(v, str)}
            for p in step.cost_per or {}:
                if p not in step_numeric:
                    problems.append(
                        Problem(
                            ("workflow", i, "cost_per", p),
                            "not a numeric campaign parameter or fixed value of the step",
                        )
                    )
        return problems

    @property
    def space(self) -> SearchSpace:
        """The search space the parameters form."""
        return SearchSpace(
            parameters=list(self.parameters), constraints=list(self.parameter_constraints)
        )

    def spec_hash(self) -> str:
        """A stable hash of the spec, to tell whether a resumed campaign's file changed.

        The budget is left out: raising it is how a finished campaign is continued; so is
        the planner's placement: where the planner runs changes no decision.
        """
        data = self.model_dump(mode="json", exclude={"budget": True, "planner": {"placement"}})
        _drop_later_defaults(data)
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


_LATER_OBJECTIVE_KEYS = {
    "kind": "objective",
    "target": None,
    "lower": None,
    "upper": None,
    "reference": None,
}


def _drop_later_defaults(data: dict[str, Any]) -> None:
    """Remove keys added after the first release while they hold their defaults.

    A campaign written before those keys existed then keeps its hash, and resumes.
    """
    if not data.get("parameter_constraints"):
        data.pop("parameter_constraints", None)
    if not data.get("resources"):
        data.pop("resources", None)
    if data.get("sample_container") is None:
        data.pop("sample_container", None)
    if data.get("lab") is None:
        data.pop("lab", None)
    for obj in data.get("objectives", []):
        for key, default in _LATER_OBJECTIVE_KEYS.items():
            if key in obj and obj[key] == default:
                del obj[key]
    for step in data.get("workflow", []):
        for key in ("cost", "cost_per"):
            if key in step and step[key] is None:
                del step[key]
        if step.get("needs") == []:
            del step["needs"]
    for inst in data.get("instruments", []):
        if inst.get("driver") is None and inst.get("options") == {}:
            inst.pop("driver", None)
            inst.pop("options", None)
        sim = inst.get("simulated")
        if isinstance(sim, dict):
            if sim.get("cost") == 0.0:
                sim.pop("cost")
            if sim.get("cost_per") == {}:
                sim.pop("cost_per")


class SimulationFile(_Spec):
    """A file for ``sdlab instruments serve``: just ``[[instruments]]``, all simulated."""

    instruments: list[InstrumentSpec] = Field(min_length=1)


def __getattr__(name: str) -> Any:
    """``from models.campaign import load_campaign`` (and the loader's other functions)."""
    if name in _LOADER_NAMES:
        return getattr(importlib.import_module("models.campaign_file"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
