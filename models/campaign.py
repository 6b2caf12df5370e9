"""The campaign specification, loaded from TOML.

A campaign file declares what to search (``[[parameters]]``), what to optimise
(``[[objectives]]``), how one experiment is made (``[[workflow]]`` steps, each an action on an
instrument of some kind), the instruments and their addresses (``[[instruments]]``, optionally
simulated), the planner and the budget. ``docs/campaigns.md`` documents every key.

Loading never raises anything but :class:`~models.errors.InvalidCampaignError`, whose
``problems`` name the key path of every problem found.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    Tag,
    ValidationError,
    model_validator,
)

from models.constraints import ParameterConstraint
from models.costs import NonNegativeCost
from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import NAME_PATTERN, Parameter, SearchSpace
from models.resources import ResourceSpec, resource_problems

MAX_SEED = 2**63 - 1
"""Largest seed a campaign file may give (the random generators take 64-bit seeds)."""


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
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    prefetch: int = Field(default=0, ge=0, le=64)


class FaultSpec(_Spec):
    """The ``[instruments.simulated.faults]`` table: faults a simulated instrument injects.

    Each rate is the probability that one submitted action meets that fault; at most one
    fault is drawn per action, in the order listed, from a generator seeded with ``seed``,
    so the k-th action of an instrument always meets the same fault.

    Attributes:
        error_rate: The action fails with error code ``sim_fault`` (marked retryable).
        hang_rate: The action never finishes (until the controller cancels it).
        slow_rate: The action takes ``slow_factor`` times its normal duration.
        slow_factor: How much slower a slow action is.
        malformed_rate: The server answers the submit with a frame that is not a protocol
            message (the action itself runs normally).
        bad_result_rate: The action completes with a result that breaks its declared
            schema (an output missing, another not declared).
        crash_rate: The server process exits mid-action (``os._exit``), as a power cut
            would; a supervised server comes back and reports the action interrupted.
        drop_rate: The server drops off the network for ``drop_s`` seconds mid-action
            (socket closed, then bound again); the action goes on.
        drop_s: How long a drop lasts, in seconds.
        seed: Seed of the fault draws (default: derived from the instrument name).
    """

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_factor: float = Field(default=5.0, ge=1.0)
    malformed_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    bad_result_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    crash_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_s: float = Field(default=2.0, gt=0.0, le=600.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _total(self) -> FaultSpec:
        if self.total_rate > 1.0:
            raise ValueError(f"the fault rates add up to {self.total_rate:g}, more than 1")
        return self

    @property
    def total_rate(self) -> float:
        """Probability that an action meets any fault."""
        return (
            self.error_rate
            + self.hang_rate
            + self.slow_rate
            + self.malformed_rate
            + self.bad_result_rate
            + self.crash_rate
            + self.drop_rate
        )


class SimulatedInstrumentSpec(_Spec):
    """The ``[instruments.simulated]`` table: serve this instrument from a simulator.

    Attributes:
        driver: Registered simulated driver name (e.g. ``"objective-station"``).
        world: Registered simulated world (hidden ground truth), e.g. ``"hartmann6"``.
        noise_std: Standard deviation of the Gaussian measurement noise, in output units.
        duration_s: Simulated duration of each action, in seconds.
        seed: Seed of the noise; ``None`` derives one from the instrument name.
        options: Driver-specific settings.
        faults: Faults to inject (none by default).
        cost: The cost the simulated action declares per run (campaign cost unit).
        cost_per: The cost it declares per unit of some of its parameters.
    """

    driver: str = "objective-station"
    world: str
    noise_std: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    duration_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)
    faults: FaultSpec | None = None
    cost: NonNegativeCost = 0.0
    cost_per: dict[str, NonNegativeCost] = Field(default_factory=dict)


_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback_address(address: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine.

    ``ipc://`` and ``inproc://`` always do; ``tcp://`` does when its host is ``localhost``
    or a loopback IP address (``127.0.0.0/8``, ``::1``). A wildcard bind (``tcp://*:5601``,
    ``tcp://0.0.0.0:5601``), any other host name and any other transport do not.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    rest = rest.rpartition(";")[2]  # "tcp://source;host:port": the destination counts
    host = rest.rpartition(":")[0] if ":" in rest else rest
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CurveSpec(_Spec):
    """The ``[instruments.curve]`` table: CURVE keys of the instrument's ZeroMQ link.

    Paths are certificate files as ``sdlab keys generate`` writes them; in a file, a
    relative path is relative to the file's directory. The client pair is what the
    controller uses; the server pair is what a simulated server started from this file uses
    (a real instrument server is configured on its own machine).

    Attributes:
        server_public_key: The instrument server's public key file (``NAME.key``).
        client_keys: The controller's secret key file (``NAME.key_secret``).
        server_secret_key: The server's secret key file (``NAME.key_secret``).
        allowed_clients: Directory of the public key files of the clients the server admits.
    """

    server_public_key: Path | None = None
    client_keys: Path | None = None
    server_secret_key: Path | None = None
    allowed_clients: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> CurveSpec:
        if (self.server_public_key is None) != (self.client_keys is None):
            missing = "client_keys" if self.client_keys is None else "server_public_key"
            raise ValueError(f"{missing} is required with the other client key")
        if (self.server_secret_key is None) != (self.allowed_clients is None):
            missing = "allowed_clients" if self.allowed_clients is None else "server_secret_key"
            raise ValueError(f"{missing} is required with the other server key")
        return self


def _simulated_tag(value: object) -> str:
    return "flag" if isinstance(value, bool) else "table"


_Simulated = Annotated[
    Annotated[SimulatedInstrumentSpec, Tag("table")] | Annotated[bool, Tag("flag")],
    Discriminator(_simulated_tag),
]
"""``simulated``: a simulator table, or ``true`` for a driver's simulated backend (a bad
table is reported as a table, not also as "not a boolean")."""


class InstrumentSpec(_Spec):
    """One ``[[instruments]]`` entry.

    Attributes:
        name: Unique instrument name (as it answers ``describe``).
        kind: What the instrument is for; workflow steps pick instruments by kind, so
            several instruments of one kind share the work.
        address: ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5601"``. For simulated
            instruments it may be left out (``sdlab run`` picks a free loopback port).
        timeout_s: Overrides the time the controller waits for one action.
        driver: A registered driver that a gateway (``sdlab instruments serve``, or the
            local one ``sdlab run`` starts) hosts for this instrument, bound at ``address``.
        options: The driver's settings (``[instruments.options]``), validated by the
            driver's own ``Options`` model when the instrument is hosted.
        simulated: ``true`` runs ``driver`` against its simulated backend; a table
            (``[instruments.simulated]``) serves the instrument from a simulator instead.
        curve: CURVE keys of the link; required for a non-loopback ``address``.
        insecure: Allow a plaintext link to a non-loopback address (not recommended).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    kind: str = Field(pattern=NAME_PATTERN)
    address: str | None = Field(default=None, pattern=r"^(tcp|ipc|inproc)://.+$")
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    driver: str | None = Field(default=None, min_length=1, max_length=128)
    options: dict[str, Any] = Field(default_factory=dict)
    simulated: _Simulated | None = None
    curve: CurveSpec | None = None
    insecure: bool = False

    @property
    def simulator(self) -> SimulatedInstrumentSpec | None:
        """The ``[instruments.simulated]`` table, if the instrument is served by one."""
        return self.simulated if isinstance(self.simulated, SimulatedInstrumentSpec) else None

    @property
    def hosted(self) -> bool:
        """Whether a local gateway serves it (a ``driver`` or a simulator table)."""
        return self.driver is not None or self.simulator is not None

    @model_validator(mode="after")
    def _needs_address(self) -> InstrumentSpec:
        if self.driver is not None and self.simulator is not None:
            raise ValueError(
                "give either driver (with options) or an [instruments.simulated] table, "
                "not both: the table names its own driver"
            )
        if self.driver is None and self.simulated is True:
            raise ValueError("simulated = true needs a driver to simulate")
        if self.driver is None and self.options:
            raise ValueError("options are the settings of a driver: driver is missing")
        if self.address is None and not self.hosted:
            raise ValueError(
                "address is required for an instrument that is not simulated or hosted (no driver)"
            )
        if (
            self.address is not None
            and not self.insecure
            and not is_loopback_address(self.address)
            and (
                self.curve is None
                or (self.curve.server_public_key is None and self.curve.server_secret_key is None)
            )
        ):
            raise ValueError(
                f"instrument {self.name!r}: {self.address!r} is not a loopback address, so "
                "its link must be encrypted: set curve.server_public_key and "
                "curve.client_keys (or, for a simulated server, curve.server_secret_key and "
                "curve.allowed_clients), or insecure = true to allow plaintext"
            )
        return self


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
    """

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    backoff_max_s: float = Field(default=60.0, ge=0.0, le=86400.0)
    quarantine_after: int = Field(default=3, ge=1, le=1000)
    quarantine_s: float = Field(default=60.0, gt=0.0, le=86400.0)
    heartbeat_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    silent_after_s: float = Field(default=10.0, gt=0.0, le=86400.0)
    command_poll_s: float = Field(default=0.5, gt=0.0, le=60.0)


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

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignSpec:
        problems: list[str] = resource_problems(
            self.resources,
            [step.needs for step in self.workflow],
            {s.kind for s in self.instruments},
            self.sample_container,
        )
        names = [p.name for p in self.parameters]
        for i, n in enumerate(names):
            if n in names[:i]:
                problems.append(f"parameters[{i}].name: {n!r} is used twice")
        onames = [o.name for o in self.objectives]
        for i, n in enumerate(onames):
            if n in onames[:i]:
                problems.append(f"objectives[{i}].name: {n!r} is used twice")
        inames = [s.name for s in self.instruments]
        for i, n in enumerate(inames):
            if n in inames[:i]:
                problems.append(f"instruments[{i}].name: {n!r} is used twice")
        for i, inst in enumerate(self.instruments):
            if (
                inst.address is not None
                and not inst.insecure
                and not is_loopback_address(inst.address)
                and (inst.curve is None or inst.curve.client_keys is None)
            ):
                problems.append(
                    f"instruments[{i}].curve.client_keys: instrument {inst.name!r} at "
                    f"{inst.address!r} is not on loopback: the controller needs "
                    "curve.client_keys and curve.server_public_key (or insecure = true)"
                )
        kinds = {s.kind for s in self.instruments}
        for i, step in enumerate(self.workflow):
            if step.kind not in kinds:
                problems.append(
                    f"workflow[{i}].kind: no instrument of kind {step.kind!r} "
                    f"(known: {', '.join(sorted(kinds))})"
                )
            for j, p in enumerate(step.parameters or []):
                if p not in names:
                    problems.append(f"workflow[{i}].parameters[{j}]: unknown parameter {p!r}")
            numeric = {p.name for p in self.parameters if p.type != "categorical"}
            numeric |= {k for k, v in step.fixed.items() if not isinstance(v, str)}
            for p in step.cost_per or {}:
                if p not in numeric:
                    problems.append(
                        f"workflow[{i}].cost_per.{p}: not a numeric campaign parameter or "
                        "fixed value of the step"
                    )
        if self.report.group_by is not None and self.report.group_by not in names:
            problems.append(f"report.group_by: unknown parameter {self.report.group_by!r}")
        if not any(o.kind == "objective" for o in self.objectives):
            problems.append('objectives: at least one entry must have kind = "objective"')
        if not problems:
            try:
                self.space  # noqa: B018 - validates the constraints against the parameters
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    msg = str((err.get("ctx") or {}).get("error", err["msg"]))
                    problems.append(f"parameter_{msg}" if msg.startswith("constraints[") else msg)
        if problems:
            # One ValueError per problem would stop at the first; join them instead.
            raise ValueError("; ".join(problems))
        return self

    @property
    def space(self) -> SearchSpace:
        """The search space the parameters form."""
        return SearchSpace(
            parameters=list(self.parameters), constraints=list(self.parameter_constraints)
        )

    def spec_hash(self) -> str:
        """A stable hash of the spec, to tell whether a resumed campaign's file changed.

        The budget is left out: raising it is how a finished campaign is continued.
        """
        data = self.model_dump(mode="json", exclude={"budget"})
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


_CROSS_CHECK_PATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")

_FRIENDLY = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}

_M = TypeVar("_M", bound=BaseModel)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``("workflow", 0, "fixed", "ramp")`` as ``workflow[0].fixed.ramp``; a key that is not
    a bare TOML key is quoted as TOML quotes it (``options."a.b"``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def _real_loc(data: object, loc: tuple[int | str, ...], missing: bool) -> tuple[int | str, ...]:
    """``loc`` without the parts that are not keys of ``data``.

    pydantic puts the tag of a union member (``continuous``, ``float``, ``str``, a
    ``function-after[...]``) into the location of an error inside that member; users never
    wrote those, so they are left out of the key path. A key reported missing is kept.
    """
    out: list[int | str] = []
    node: object = data
    for i, part in enumerate(loc):
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, Mapping) and part in node):
            node = node[part]  # type: ignore[index]
        elif missing and i == len(loc) - 1 and isinstance(node, Mapping):
            pass  # the key the user has to add
        else:
            continue
        out.append(part)
    return tuple(out)


def _problems(exc: ValidationError, data: object = None) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        if data is None:
            loc = tuple(p for p in err["loc"] if p not in ("continuous", "integer", "categorical"))
        else:
            loc = _real_loc(data, tuple(err["loc"]), err["type"] == "missing")
        etype = err["type"]
        ctx = err.get("ctx") or {}
        if etype in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")  # the discriminator key is what is wrong
        if etype in _FRIENDLY:
            msg = _FRIENDLY[etype]
        elif etype == "literal_error":
            msg = f"expected {ctx.get('expected')}"
        elif etype == "union_tag_invalid":
            msg = f"unknown type {ctx.get('tag')!r}, expected {ctx.get('expected_tags')}"
        elif etype == "union_tag_not_found":
            msg = "required key is missing"
        elif etype == "value_error":
            msg = str(ctx.get("error", err["msg"]))
        else:
            msg = err["msg"]
        if etype == "value_error" and not loc and _CROSS_CHECK_PATH.match(msg):
            # CampaignSpec's cross checks: "path: message; path: message"
            for part in msg.split("; "):
                path, _, m = part.partition(": ")
                problems.append((path, m))
            continue
        problems.append((_key_path(loc), msg))
    # The members of a union each report the same key: one problem per key.
    merged: dict[str, list[str]] = {}
    for path, msg in problems:
        if msg not in merged.setdefault(path, []):
            merged[path].append(msg)
    return [(path, " | ".join(msgs)) for path, msgs in merged.items()]


def parse_spec(data: Mapping[str, Any], model: type[_M], source: str | None = None) -> _M:
    """Validate already-parsed TOML data against ``model``.

    Raises:
        InvalidCampaignError: With one ``(key_path, message)`` per problem.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidCampaignError(source, _problems(exc, data)) from exc


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every I/O or syntax error into an InvalidCampaignError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidCampaignError(str(p), [("", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCampaignError(str(p), [("", f"cannot read file: {exc}")]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCampaignError(str(p), [("", f"invalid TOML: {exc}")]) from exc
    except RecursionError as exc:  # arrays or inline tables nested thousands deep
        raise InvalidCampaignError(str(p), [("", "invalid TOML: nested too deeply")]) from exc


_CURVE_PATHS = ("server_public_key", "client_keys", "server_secret_key", "allowed_clients")


def _anchor_key_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the relative ``curve`` key paths of ``[[instruments]]`` relative to ``base``.

    A controller or simulated server may run in another working directory (a Ray worker),
    so key files are located from the campaign file, as its author sees them. Entries of
    the wrong shape are left for validation to report.
    """
    instruments = data.get("instruments")
    if not isinstance(instruments, list):
        return data
    for entry in instruments:
        curve = entry.get("curve") if isinstance(entry, dict) else None
        if not isinstance(curve, dict):
            continue
        for key in _CURVE_PATHS:
            value = curve.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                curve[key] = str(base / value)
    return data


def load_campaign(path: str | Path) -> CampaignSpec:
    """Load and validate a campaign file.

    Args:
        path: Path to the campaign TOML file.

    Returns:
        The validated campaign spec.

    Raises:
        InvalidCampaignError: If the file cannot be read, is not TOML, or violates the schema;
            the error's ``problems`` name the key path of each problem.
    """
    base = Path(path).resolve().parent
    return parse_spec(_anchor_key_paths(read_toml(path), base), CampaignSpec, str(path))


def load_simulation(path: str | Path) -> SimulationFile:
    """Load a file of simulated instruments.

    A campaign file is accepted too: its simulated instruments are the ones returned.

    Raises:
        InvalidCampaignError: As :func:`load_campaign`; also when a simulation file lists an
            instrument that is not simulated, or a campaign file has none.
    """
    data = _anchor_key_paths(read_toml(path), Path(path).resolve().parent)
    sim = parse_spec({"instruments": data.get("instruments", [])}, SimulationFile, str(path))
    if "campaign" in data:
        chosen = [s for s in sim.instruments if s.simulator is not None]
        if not chosen:
            raise InvalidCampaignError(str(path), [("instruments", "no simulated instrument")])
        return SimulationFile(instruments=chosen)
    bad = [
        (f"instruments[{i}].simulated", "required key is missing")
        for i, s in enumerate(sim.instruments)
        if s.simulator is None
    ]
    if bad:
        raise InvalidCampaignError(str(path), bad)
    return sim
