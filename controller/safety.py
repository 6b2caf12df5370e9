"""The safety gate: nothing reaches an instrument outside the limits it declared.

Every proposal is checked twice. When it becomes an experiment, against the campaign's
search space and against the declared limits of *every* instrument that could run each of
its workflow steps (so a refusal happens before anything is queued). Right before a step
is sent, against the limits of the one instrument chosen, including its rate limits. A
refusal raises :class:`~models.errors.ParameterLimitError` naming the parameter, the value,
the limit and the instrument; the controller records it and tells the planner the point is
infeasible.

Rate limits (``ParameterLimit.max_rate_per_s``, e.g. a furnace's maximum ramp) depend on the
instrument's history, so only the dispatch check can apply them: the gate remembers, per
instrument and parameter, the last value the instrument acknowledged and when, and refuses a
value whose change from it, divided by the time since, exceeds the limit. The controller tells
the gate what became of each command (:meth:`SafetyGate.sent`): one the instrument
acknowledged replaces the history; one whose delivery is unknown (the submit got no answer)
is added to it, and later values must then respect the limit from *every* value the
instrument may be holding; one the instrument refused, or that was never sent, leaves it
alone. The first command to an instrument after the gate is built is measured against
nothing and passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from instruments.driver import ActionSpec, InstrumentDescription
from models.campaign import CampaignSpec, WorkflowStep
from models.errors import InvalidCampaignError, ParameterLimitError, Problem
from models.params import ParamValue

logger = logging.getLogger(__name__)


class SafetyGate:
    """Checks proposals and step parameters against campaign bounds and instrument limits.

    Args:
        spec: The campaign.
        descriptions: What each connected instrument declared, by instrument name.
        clock: Monotonic clock for rate limits, in seconds.

    Raises:
        InvalidCampaignError: If a workflow step's action is missing on an instrument of its
            kind, or an objective is not an output of any step (key path in the problems).
    """

    def __init__(
        self,
        spec: CampaignSpec,
        descriptions: Mapping[str, InstrumentDescription],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.spec = spec
        self._clock = clock
        # (instrument, parameter) -> every value the instrument may hold, with the clock
        # reading when it was sent (one entry once an acknowledged command settled it)
        self._last_sent: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.space = spec.space
        self._kinds = {inst.name: inst.kind for inst in spec.instruments}
        self._descriptions = dict(descriptions)
        # (instrument, step index) -> the action spec that instrument declared for the step
        self._actions: dict[tuple[str, int], ActionSpec] = {}
        # step index -> names of the campaign parameters the step sends
        self._step_params: dict[int, list[str]] = {}
        problems: list[Problem] = []
        outputs: set[str] = set()
        for i, step in enumerate(spec.workflow):
            for inst, kind in self._kinds.items():
                if kind != step.kind or inst not in self._descriptions:
                    continue
                try:
                    action = self._descriptions[inst].action(step.action)
                except KeyError:
                    problems.append(
                        Problem(
                            ("workflow", i, "action"),
                            f"instrument {inst!r} has no action {step.action!r} (it offers "
                            f"{', '.join(a.name for a in self._descriptions[inst].actions)})",
                        )
                    )
                    continue
                self._actions[(inst, i)] = action
                outputs.update(o.name for o in action.outputs)
                self._step_params.setdefault(i, self._params_for(step, action))
                problems += step_parameter_problems(spec, i, inst, action)
        for j, obj in enumerate(spec.objectives):
            if obj.name not in outputs:
                problems.append(
                    Problem(
                        ("objectives", j, "name"),
                        f"no workflow action measures {obj.name!r} "
                        f"(outputs: {', '.join(sorted(outputs)) or 'none'})",
                    )
                )
        if problems:
            raise InvalidCampaignError("connected instruments", _unique(problems))

    def _params_for(self, step: WorkflowStep, action: ActionSpec) -> list[str]:
        if step.parameters is not None:
            return list(step.parameters)
        declared = {p.name for p in action.parameters}
        return [n for n in self.space.names if n in declared]

    def step_parameters(self, index: int, point: Mapping[str, ParamValue]) -> dict[str, Any]:
        """The parameters step ``index`` sends for an experiment at ``point``."""
        step = self.spec.workflow[index]
        out: dict[str, Any] = {n: point[n] for n in self._step_params.get(index, [])}
        out.update(step.fixed)
        return out

    def instruments_for(self, index: int) -> list[str]:
        """Names of the connected instruments that can run step ``index``."""
        return [inst for (inst, i) in self._actions if i == index]

    def check_proposal(self, point: Mapping[str, object]) -> dict[str, ParamValue]:
        """Check a proposed point against the space and every instrument that may run it.

        Returns:
            The point, normalised to the parameters' types.

        Raises:
            ParameterLimitError: For the first violated limit.
        """
        clean = self.space.validate_point(point)
        self.space.check_constraints(clean)  # linear and mixture constraints of the space
        for i in range(len(self.spec.workflow)):
            params = self.step_parameters(i, clean)
            for inst in self.instruments_for(i):
                self._actions[(inst, i)].check(params, inst)
        return clean

    def check_dispatch(self, instrument: str, index: int, params: Mapping[str, Any]) -> None:
        """Check the exact parameters about to be sent to ``instrument`` for step ``index``.

        Nothing is remembered: tell :meth:`sent` what became of the command.

        Raises:
            ParameterLimitError: If any value lies outside that instrument's declared limits
                or changes faster than a declared rate limit allows, or the instrument cannot
                run the step.
        """
        action = self._actions.get((instrument, index))
        if action is None:
            raise ParameterLimitError(
                "action", self.spec.workflow[index].action, "not offered", instrument
            )
        action.check(params, instrument)
        now = self._clock()
        for limit, value in self._rated(action, params):
            assert limit.max_rate_per_s is not None
            for last_value, last_t in self._last_sent.get((instrument, limit.name), ()):
                change = abs(value - last_value)
                elapsed = max(0.0, now - last_t)
                if change > limit.max_rate_per_s * elapsed:
                    raise ParameterLimitError(
                        limit.name,
                        value,
                        f"max rate {limit.max_rate_per_s:g} {limit.unit or 'units'}/s "
                        f"(change {change:g} from {last_value:g} after {elapsed:.3g} s)",
                        instrument,
                    )

    def sent(
        self, instrument: str, index: int, params: Mapping[str, Any], *, acknowledged: bool
    ) -> None:
        """Record a command checked by :meth:`check_dispatch` that went out.

        Args:
            instrument: Where it went.
            index: The workflow step.
            params: Its parameters.
            acknowledged: ``True`` when the instrument accepted it (its values are now what
                it holds); ``False`` when the submit got no answer (it may or may not have
                arrived: both the old and the new values are kept for the rate limits).
        """
        action = self._actions.get((instrument, index))
        if action is None:
            return
        now = self._clock()
        for limit, value in self._rated(action, params):
            key = (instrument, limit.name)
            if acknowledged:
                self._last_sent[key] = [(value, now)]
            else:
                self._last_sent.setdefault(key, []).append((value, now))

    @staticmethod
    def _rated(action: ActionSpec, params: Mapping[str, Any]) -> list[tuple[Any, float]]:
        return [
            (limit, float(params[limit.name]))
            for limit in action.parameters
            if limit.max_rate_per_s is not None and limit.name in params
        ]

    def carry_history(self, other: SafetyGate) -> None:
        """Take over what ``other`` let through, for the rate limits (a rebuilt gate)."""
        self._last_sent.update({k: list(v) for k, v in other._last_sent.items()})

    def action(self, instrument: str, index: int) -> ActionSpec:
        """The action spec ``instrument`` declared for step ``index``."""
        return self._actions[(instrument, index)]

    def objective_names(self) -> Sequence[str]:
        """Names of the campaign's objectives."""
        return [o.name for o in self.spec.objectives]


def step_parameter_problems(
    spec: CampaignSpec, index: int, instrument: str, action: ActionSpec
) -> list[Problem]:
    """Why workflow step ``index`` can never run on ``instrument``, whatever is proposed.

    The step sends the campaign parameters it names (or, naming none, those the action
    declares) and its ``fixed`` values. A parameter the action requires that is neither
    would make the instrument refuse every proposal, as would one it does not accept: the
    campaign would abandon experiments without end, so it must not start.

    Args:
        spec: The campaign.
        index: The workflow step.
        instrument: The instrument that may run it.
        action: What that instrument declared for the step's action.

    Returns:
        One problem per such parameter, with the key path to fix; empty if none.
    """
    step = spec.workflow[index]
    names = spec.space.names
    declared = [p.name for p in action.parameters]
    who = f"instrument {instrument!r}: action {step.action!r}"
    takes = f"it takes {', '.join(declared) or 'no parameters'}"
    problems: list[Problem] = []
    for j, name in enumerate(step.parameters or []):
        if name not in declared:
            problems.append(
                Problem(
                    ("workflow", index, "parameters", j),
                    f"{who} has no parameter {name!r} ({takes})",
                )
            )
    for name in step.fixed:
        if name not in declared:
            problems.append(
                Problem(
                    ("workflow", index, "fixed", name), f"{who} has no parameter {name!r} ({takes})"
                )
            )
    sent = set(step.fixed) | set(step.parameters if step.parameters is not None else names)
    for limit in action.parameters:
        if not limit.required or limit.name in sent:
            continue
        if step.parameters is not None and limit.name in names:
            problems.append(
                Problem(
                    ("workflow", index, "parameters"),
                    f"{who} requires parameter {limit.name!r}, which the step does not send: "
                    "add it to the list",
                )
            )
        else:
            problems.append(
                Problem(
                    ("workflow", index),
                    f"{who} requires parameter {limit.name!r}, which the search space does "
                    f"not declare (declared: {', '.join(names)}): add it to [[parameters]], "
                    f"or give it a value in workflow[{index}].fixed",
                )
            )
    return problems


def _unique(problems: Sequence[Problem]) -> list[Problem]:
    """``problems`` without repeats (several instruments of a kind report the same)."""
    return list(dict.fromkeys(problems))
