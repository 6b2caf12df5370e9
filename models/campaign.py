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
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.constraints import ParameterConstraint
from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import NAME_PATTERN, Parameter, SearchSpace


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
    seed: int = Field(default=0, ge=0)


class BudgetSpec(_Spec):
    """The ``[budget]`` table: when the campaign stops.

    Attributes:
        max_experiments: Completed experiments after which the campaign is done.
        max_failures: Failed experiments after which the campaign stops as FAILED
            (``None``: never).
    """

    max_experiments: int = Field(ge=1)
    max_failures: int | None = Field(default=None, ge=1)


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


class SimulatedInstrumentSpec(_Spec):
    """The ``[instruments.simulated]`` table: serve this instrument from a simulator.

    Attributes:
        driver: Registered simulated driver name (e.g. ``"objective-station"``).
        world: Registered simulated world (hidden ground truth), e.g. ``"hartmann6"``.
        noise_std: Standard deviation of the Gaussian measurement noise, in output units.
        duration_s: Simulated duration of each action, in seconds.
        seed: Seed of the noise; ``None`` derives one from the instrument name.
        options: Driver-specific settings.
    """

    driver: str = "objective-station"
    world: str
    noise_std: float = Field(default=0.0, ge=0.0)
    duration_s: float = Field(default=0.0, ge=0.0)
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class InstrumentSpec(_Spec):
    """One ``[[instruments]]`` entry.

    Attributes:
        name: Unique instrument name (as it answers ``describe``).
        kind: What the instrument is for; workflow steps pick instruments by kind, so
            several instruments of one kind share the work.
        address: ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5601"``. For simulated
            instruments it may be left out (``sdlab run`` picks a free loopback port).
        timeout_s: Overrides the time the controller waits for one action.
        simulated: Present when ``sdlab run`` should start a simulated server for it.
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    kind: str = Field(pattern=NAME_PATTERN)
    address: str | None = Field(default=None, pattern=r"^(tcp|ipc|inproc)://.+$")
    timeout_s: float | None = Field(default=None, gt=0)
    simulated: SimulatedInstrumentSpec | None = None

    @model_validator(mode="after")
    def _needs_address(self) -> InstrumentSpec:
        if self.address is None and self.simulated is None:
            raise ValueError("address is required for an instrument that is not simulated")
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
    """

    kind: str = Field(pattern=NAME_PATTERN)
    action: str = Field(pattern=NAME_PATTERN)
    parameters: list[str] | None = None
    fixed: dict[str, float | int | str] = Field(default_factory=dict)


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

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignSpec:
        problems: list[str] = []
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
    for obj in data.get("objectives", []):
        for key, default in _LATER_OBJECTIVE_KEYS.items():
            if key in obj and obj[key] == default:
                del obj[key]


class SimulationFile(_Spec):
    """A file for ``sdlab instruments serve``: just ``[[instruments]]``, all simulated."""

    instruments: list[InstrumentSpec] = Field(min_length=1)


_CROSS_CHECK_PATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")

_FRIENDLY = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}

_M = TypeVar("_M", bound=BaseModel)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            # pydantic puts the discriminator tag into the location of a union member;
            # users never wrote it, so leave it out of the key path.
            p
            for p in err["loc"]
            if p not in ("continuous", "integer", "categorical")
        )
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
    return problems


def parse_spec(data: Mapping[str, Any], model: type[_M], source: str | None = None) -> _M:
    """Validate already-parsed TOML data against ``model``.

    Raises:
        InvalidCampaignError: With one ``(key_path, message)`` per problem.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidCampaignError(source, _problems(exc)) from exc


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
    return parse_spec(read_toml(path), CampaignSpec, str(path))


def load_simulation(path: str | Path) -> SimulationFile:
    """Load a file of simulated instruments.

    A campaign file is accepted too: its simulated instruments are the ones returned.

    Raises:
        InvalidCampaignError: As :func:`load_campaign`; also when a simulation file lists an
            instrument that is not simulated, or a campaign file has none.
    """
    data = read_toml(path)
    sim = parse_spec({"instruments": data.get("instruments", [])}, SimulationFile, str(path))
    if "campaign" in data:
        chosen = [s for s in sim.instruments if s.simulated is not None]
        if not chosen:
            raise InvalidCampaignError(str(path), [("instruments", "no simulated instrument")])
        return SimulationFile(instruments=chosen)
    bad = [
        (f"instruments[{i}].simulated", "required key is missing")
        for i, s in enumerate(sim.instruments)
        if s.simulated is None
    ]
    if bad:
        raise InvalidCampaignError(str(path), bad)
    return sim
