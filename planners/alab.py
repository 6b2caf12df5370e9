"""The ``alab`` planner: solid-state synthesis recipes that learn from failed attempts.

The planning loop of the A-Lab (Szymanski et al., "An autonomous laboratory for the
accelerated synthesis of novel materials", Nature 624, 86-91, 2023) with its active
learning, ARROWS3 (Szymanski et al., "Autonomous and dynamic precursor selection for
solid-state materials synthesis", Nat. Commun. 14, 6956, 2023). One experiment is one
recipe: string parameters ``target`` and ``precursors`` (reduced formulas sorted and joined
by ``+``) and the number ``temperature_c``.

1. Every subset of the available precursors (up to ``max_precursors``) that balances to the
   target, open gases (O2) free to enter or leave, is a candidate (:mod:`planners.reactions`).
2. A target's first recipe is the set with the largest thermodynamic driving force (reaction
   energy per atom of target from the computed entries, most negative first), favouring
   sets similar to recipes that already worked in the campaign (Jaccard similarity of the
   precursor sets, worth ``similarity_weight_ev`` eV/atom).
3. After each attempt the phases the XRD analysis identified (``wf_<Formula>``) tell which
   pairwise reactions happened (:mod:`planners.alab_memory`). Later recipes are ranked by
   the driving force LEFT to form the target once each set's predicted intermediates have
   formed (observed pair reactions, else the hull's most favourable one); sets predicted to
   pass through an intermediate observed to be inert for that target are skipped.
4. Temperatures come from a grid inside the campaign's bounds: a recipe starts mid-grid and
   is repeated one step hotter when precursors were left unreacted, as the A-Lab did.
5. A target is made at ``target_yield >= yield_threshold``; it is given up after
   ``max_attempts`` or when no balanced set is left, with the reason. When every target is
   made or given up, ``ask`` returns no proposals and ``details["finished"]``.

Strategies ``random`` (a random balanced set at a random grid temperature) and
``first_recipe`` (only the best-ranked first recipe, at every temperature of the grid) are
the baselines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from models.errors import InvalidCampaignError, ParameterLimitError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from planners.alab_memory import Attempt, CampaignMemory, parse_phases
from planners.alab_recipes import Candidate, RecipeBook
from planners.base import Planner, PlannerOptions, register_planner
from planners.reactions import Thermo, load_thermo_file, normalize_formula

logger = logging.getLogger(__name__)

__all__ = ["AlabOptions", "AlabPlanner"]


class AlabOptions(PlannerOptions):
    """Options of the ``alab`` planner (``[planner.options]``).

    Attributes:
        targets: Target formulas, served in this order (round-robin).
        precursors: Available precursor formulas.
        thermo_file: JSON file of computed entries (``{"entries": [{"formula",
            "energy_per_atom"}]}``, eV/atom, elemental references included); a relative
            path is read from the working directory.
        thermo: The same entries inline (exactly one of ``thermo_file`` and ``thermo``).
        yield_threshold: Target weight fraction at which a target counts as made.
        max_attempts: Attempts per target before it is given up.
        temperatures_c: The temperature grid in °C (inside the campaign's bounds);
            default: ``n_temperatures`` evenly spaced points spanning the bounds.
        n_temperatures: Points of the default grid.
        strategy: ``"arrows"`` (default), ``"random"`` or ``"first_recipe"`` (baselines).
        max_precursors: Largest precursor set.
        max_pending_per_target: Most recipes of one target running at once (more keep
            furnaces busy when few targets are left, fewer learn more from each result).
        open_gases: Gases free to enter or leave a reaction.
        min_fraction: Smallest weight fraction counting a phase as present.
        inert_threshold_ev: Driving force (eV/atom) below which an observed intermediate is
            inert for the target.
        similarity_weight_ev: Ranking bonus (eV/atom) of a set identical to one that worked.
        target_parameter: The string parameter holding the target.
        precursors_parameter: The string parameter holding the precursor set.
        temperature_parameter: The numeric parameter holding the temperature.
        yield_objective: The objective holding the target's yield (default: the first).
    """

    targets: list[str] = Field(min_length=1)
    precursors: list[str] = Field(min_length=1)
    thermo_file: str | None = None
    thermo: list[dict[str, Any]] | None = None
    yield_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    max_attempts: int = Field(default=6, ge=1, le=1000)
    temperatures_c: list[float] | None = Field(default=None, min_length=1)
    n_temperatures: int = Field(default=5, ge=1, le=100)
    strategy: Literal["arrows", "random", "first_recipe"] = "arrows"
    max_precursors: int = Field(default=3, ge=1, le=4)
    max_pending_per_target: int = Field(default=1, ge=1, le=1000)
    open_gases: list[str] = Field(default_factory=lambda: ["O2"])
    min_fraction: float = Field(default=0.03, ge=0.0, lt=1.0)
    inert_threshold_ev: float = Field(default=0.05, ge=0.0)
    similarity_weight_ev: float = Field(default=0.05, ge=0.0)
    target_parameter: str = "target"
    precursors_parameter: str = "precursors"
    temperature_parameter: str = "temperature_c"
    yield_objective: str | None = None

    @field_validator("targets", "precursors", "open_gases")
    @classmethod
    def _formulas(cls, v: list[str]) -> list[str]:
        out = [normalize_formula(f) for f in v]
        if len(set(out)) != len(out):
            raise ValueError(f"a formula is given twice: {out}")
        return out

    @model_validator(mode="after")
    def _one_thermo(self) -> AlabOptions:
        if (self.thermo_file is None) == (self.thermo is None):
            raise ValueError("give exactly one of thermo_file and thermo")
        return self


def _problem(key: str, message: str) -> InvalidCampaignError:
    return InvalidCampaignError(None, [(f"planner.options.{key}", message)])


@dataclass(frozen=True)
class _Pick:
    target: str
    candidate: Candidate


@register_planner("alab")
class AlabPlanner(Planner):
    """A-Lab recipe planning with ARROWS3 re-ranking (see the module docstring).

    ``Decision.details``: ``strategy``, ``decision_seed``, ``repeat``, ``proposals`` (per
    proposal: target, precursors, temperature_c, origin, driving force and driving force
    left in eV/atom, predicted intermediates, the pair reactions used with their source,
    why this temperature, similarity), ``targets`` (per target: status ``active`` /
    ``made`` / ``given_up``, attempts, pending, best yield and recipe, reason, inert
    intermediates, skipped sets), ``pair_reactions`` (every observed one) and, when
    nothing is left to do, ``finished`` (one line per target).
    """

    version = "1"
    Options: ClassVar[type[PlannerOptions]] = AlabOptions

    def __init__(
        self, space: SearchSpace, objectives: Sequence[Objective], *, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(space, objectives, seed=seed, **options)
        opts = self.options
        assert isinstance(opts, AlabOptions)
        self.opts = opts
        for key in ("target_parameter", "precursors_parameter", "temperature_parameter"):
            name = getattr(opts, key)
            if name not in space.names:
                raise _problem(key, f"the search space has no parameter {name!r}")
        names = [o.name for o in self.objectives]
        self.yield_name = opts.yield_objective or names[0]
        if self.yield_name not in names:
            raise _problem("yield_objective", f"not an objective: {self.yield_name!r}")
        self.thermo = self._load_thermo()
        self._check_formulas()
        self.grid = self._temperature_grid()
        self.book = RecipeBook(
            self.thermo,
            opts.precursors,
            max_precursors=opts.max_precursors,
            grid_c=self.grid,
            similarity_weight_ev=opts.similarity_weight_ev,
            min_fraction=opts.min_fraction,
        )

    def _load_thermo(self) -> Thermo:
        o = self.opts
        if o.thermo_file is not None:
            return Thermo(
                load_thermo_file(o.thermo_file), o.open_gases, "planner.options.thermo_file"
            )
        assert o.thermo is not None
        return Thermo(o.thermo, o.open_gases, "planner.options.thermo")

    def _check_formulas(self) -> None:
        o = self.opts
        source = "thermo_file" if o.thermo_file is not None else "thermo"
        for key, formulas in (("targets", o.targets), ("precursors", o.precursors)):
            unknown = [f for f in formulas if not self.thermo.has(f)]
            if unknown:
                raise _problem(key, f"no computed entry in {source} for {unknown}")
            param = self.space[o.target_parameter if key == "targets" else o.precursors_parameter]
            for f in formulas:
                try:
                    param.check(f)
                except ParameterLimitError as exc:
                    raise _problem(
                        key, f"{f!r} does not fit parameter {param.name!r}: {exc}"
                    ) from exc
        missing = self.thermo.missing_elements([*o.targets, *o.precursors, *o.open_gases])
        if missing:
            raise _problem(source, f"no elemental reference entry for element(s) {missing}")

    def _temperature_grid(self) -> list[float]:
        o = self.opts
        param = self.space[o.temperature_parameter]
        if o.temperatures_c is not None:
            grid = sorted({float(t) for t in o.temperatures_c})
            for t in grid:
                try:
                    param.check(t)
                except ParameterLimitError as exc:
                    raise _problem(
                        "temperatures_c", f"{t:g} lies outside the campaign's bounds: {exc}"
                    ) from exc
            return grid
        lower, upper = getattr(param, "lower", None), getattr(param, "upper", None)
        if not isinstance(lower, (int, float)) or not isinstance(upper, (int, float)):
            raise _problem("temperatures_c", f"give a grid: {param.name!r} has no numeric bounds")
        if o.n_temperatures == 1:
            return [float((lower + upper) / 2)]
        return [float(t) for t in np.linspace(float(lower), float(upper), o.n_temperatures)]

    # -- reading the campaign --------------------------------------------------------------

    def _attempt(self, obs: Observation) -> Attempt | None:
        """The recipe attempt an observation records (``None`` if it is not a recipe)."""
        o = self.opts
        try:
            target = normalize_formula(str(obs.parameters[o.target_parameter]))
            precursors = tuple(
                sorted(
                    normalize_formula(p)
                    for p in str(obs.parameters[o.precursors_parameter]).split("+")
                )
            )
            temperature = float(obs.parameters[o.temperature_parameter])
        except (KeyError, ValueError) as exc:
            logger.info(
                "alab: observation %s is not a recipe (%s); ignored", obs.experiment_id, exc
            )
            return None
        value = obs.objectives.get(self.yield_name, obs.measurements.get(self.yield_name, 0.0))
        return Attempt(
            target=target,
            precursors=precursors,
            temperature_c=temperature,
            yield_fraction=float(value) if obs.feasible else 0.0,
            feasible=bool(obs.feasible),
            phases=parse_phases(obs.measurements) if obs.feasible else {},
            experiment_id=obs.experiment_id,
        )

    def memory(self) -> CampaignMemory:
        """What the campaign has learned so far (rebuilt from the observations)."""
        mem = CampaignMemory(self.thermo, self.opts.min_fraction, self.opts.inert_threshold_ev)
        for obs in self._observations:
            attempt = self._attempt(obs)
            if attempt is not None:
                mem.add(attempt, self.opts.yield_threshold)
        return mem

    def _pending(
        self, pending: Sequence[Mapping[str, ParamValue]]
    ) -> dict[str, list[tuple[str, float]]]:
        """``{target: [(precursor set, temperature_c), ...]}`` of the pending recipes."""
        o = self.opts
        out: dict[str, list[tuple[str, float]]] = {}
        for p in pending:
            try:
                target = normalize_formula(str(p[o.target_parameter]))
                key = "+".join(
                    sorted(normalize_formula(x) for x in str(p[o.precursors_parameter]).split("+"))
                )
                temperature = float(p[o.temperature_parameter])
            except (KeyError, ValueError):
                continue
            out.setdefault(target, []).append((key, temperature))
        return out

    # -- asking ------------------------------------------------------------------------------

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose up to ``n`` recipes (see the class docstring).

        Fewer than ``n`` when fewer are worth running now; none, with
        ``details["finished"]``, when every target is made or given up.
        """
        started = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        rng = np.random.default_rng(seed)
        o = self.opts
        mem = self.memory()
        pend = self._pending(pending)
        states = {
            t: self.book.state(t, mem, pend.get(t, []), o.yield_threshold, o.max_attempts)
            for t in o.targets
        }
        queues: dict[str, list[Candidate]] = {}
        for t, st in states.items():
            if st.status == "active":
                queues[t] = self.book.candidates(t, st, mem, o.strategy, rng, o.yield_threshold)
                st.settle(bool(queues[t]))
        picks: list[_Pick] = []
        load = {t: len(st.attempts) + len(st.pending) for t, st in states.items()}
        running = {t: len(st.pending) for t, st in states.items()}
        while len(picks) < n:
            ready = [
                t
                for t in o.targets
                if queues.get(t)
                and load[t] < o.max_attempts
                and running[t] < o.max_pending_per_target
                and states[t].status == "active"
            ]
            if not ready:
                break
            t = min(ready, key=lambda x: (load[x], o.targets.index(x)))
            picks.append(_Pick(t, queues[t].pop(0)))
            load[t] += 1
            running[t] += 1
        details: dict[str, Any] = {
            "strategy": o.strategy,
            "decision_seed": seed,
            "repeat": repeat,
            "temperatures_c": self.grid,
            "proposals": [p.candidate.as_details(p.target) for p in picks],
            "targets": {t: st.as_details() for t, st in states.items()},
            "pair_reactions": mem.observed_pairs(),
        }
        if all(st.status != "active" for st in states.values()):
            details["finished"] = "; ".join(f"{t}: {st.summary()}" for t, st in states.items())
        proposals = [
            Proposal(
                parameters=self.space.validate_point(
                    {
                        o.target_parameter: p.target,
                        o.precursors_parameter: p.candidate.key,
                        o.temperature_parameter: p.candidate.temperature_c,
                    }
                ),
                score=p.candidate.score,
                origin=p.candidate.origin,
            )
            for p in picks
        ]
        return self.decision(
            proposals,
            len(pending),
            started,
            details,
            candidate_scores=[p.candidate.score for p in picks],
        )
