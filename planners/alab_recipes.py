"""Candidate recipes of the ``alab`` planner and the state of each target.

:class:`RecipeBook` enumerates the balanced precursor sets of a target once, and at every
``ask`` ranks the recipes worth trying next under one of three strategies: ``arrows``
(first recipes by driving force and similarity to recipes that worked, as the A-Lab
ranks them, Szymanski et al., Nature 624, 86-91, 2023; later ones by the driving force left
after the predicted intermediates, skipping sets that pass through an inert one, as ARROWS3
does, Szymanski et al., Nat. Commun. 14, 6956, 2023), ``first_recipe`` and ``random``
(the baselines). :class:`TargetState` says whether a target is made, given up (and why)
or still active.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pymatgen.core import Composition

from planners.alab_memory import Attempt, CampaignMemory
from planners.reactions import Thermo, predict_pathway

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "RecipeBook", "TargetState"]

_T_EPS = 1e-6
Status = Literal["active", "made", "given_up"]


@dataclass(frozen=True)
class Candidate:
    """One recipe worth running, with the reasoning behind it.

    Attributes:
        key: The precursor set (sorted formulas joined by ``+``).
        temperature_c: Proposed heating temperature, in °C.
        origin: ``"first_recipe"``, ``"arrows"``, ``"retry_hotter"`` or ``"random"``.
        score: Ranking key, lower is better (eV/atom for ``arrows``/``first_recipe``).
        driving_force_ev_per_atom: Reaction energy precursors -> target (eV/atom of target).
        remaining_ev_per_atom: Driving force left after the predicted intermediates.
        intermediates: Predicted intermediates.
        steps: The predicted pair reactions (with their source: observed or hull).
        temperature_reason: Why this temperature.
        similarity: Largest Jaccard similarity to a precursor set that worked.
    """

    key: str
    temperature_c: float
    origin: str
    score: float
    driving_force_ev_per_atom: float
    remaining_ev_per_atom: float | None
    intermediates: tuple[str, ...]
    steps: tuple[dict[str, Any], ...]
    temperature_reason: str
    similarity: float

    def as_details(self, target: str) -> dict[str, Any]:
        """JSON-serialisable reasoning, for the decision's details."""
        return {
            "target": target,
            "precursors": self.key,
            "temperature_c": self.temperature_c,
            "origin": self.origin,
            "score": self.score,
            "driving_force_ev_per_atom": self.driving_force_ev_per_atom,
            "remaining_driving_force_ev_per_atom": self.remaining_ev_per_atom,
            "predicted_intermediates": list(self.intermediates),
            "pair_reactions": list(self.steps),
            "temperature_reason": self.temperature_reason,
            "similarity": self.similarity,
        }


@dataclass
class TargetState:
    """Where one target stands.

    Attributes:
        target: Target reduced formula.
        attempts: Finished attempts at it, in the order told.
        pending: ``(precursor set, temperature_c)`` of its recipes still running.
        status: ``"active"``, ``"made"`` or ``"given_up"``.
        reason: Why it is made or given up (``""`` while active).
        n_sets: Number of balanced precursor sets.
        skipped: Sets skipped in the last ranking, with the reason.
        inert: Intermediates observed to be inert for it, with the reason.
    """

    target: str
    attempts: list[Attempt]
    pending: list[tuple[str, float]]
    status: Status = "active"
    reason: str = ""
    n_sets: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    inert: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> Attempt | None:
        """The attempt with the highest yield (the first of equals)."""
        if not self.attempts:
            return None
        return max(self.attempts, key=lambda a: a.yield_fraction)

    def settle(self, has_candidates: bool) -> None:
        """Give the target up when nothing is left to try and nothing is running."""
        if self.status == "active" and not has_candidates and not self.pending:
            tried = len({a.key for a in self.attempts})
            why = f"every balanced precursor set tried or skipped ({tried} tried"
            if self.skipped:
                why += f", {len(self.skipped)} skipped: " + "; ".join(
                    f"{k}: {v}" for k, v in sorted(self.skipped.items())
                )
            self.status, self.reason = "given_up", why + ")" + self._best_text()

    def _best_text(self) -> str:
        best = self.best
        if best is None:
            return ""
        return f"; best yield {best.yield_fraction:.3f} ({best.key} at {best.temperature_c:g} C)"

    def summary(self) -> str:
        """One line: made or given up, and why."""
        return f"{self.status.replace('_', ' ')}: {self.reason}"

    def as_details(self) -> dict[str, Any]:
        """JSON-serialisable state, for the decision's details."""
        best = self.best
        return {
            "status": self.status,
            "reason": self.reason,
            "attempts": len(self.attempts),
            "pending": len(self.pending),
            "best_yield": None if best is None else best.yield_fraction,
            "best_recipe": None
            if best is None
            else {"precursors": best.key, "temperature_c": best.temperature_c},
            "n_balanced_sets": self.n_sets,
            "inert_intermediates": dict(self.inert),
            "skipped": dict(self.skipped),
        }


@dataclass
class RecipeBook:
    """The balanced precursor sets of each target and their ranking.

    Args:
        thermo: The computed energies.
        precursors: Available precursor formulas (reduced).
        max_precursors: Largest set.
        grid_c: The temperature grid, ascending, in °C.
        similarity_weight_ev: Ranking bonus (eV/atom) of a set identical to one that worked.
        min_fraction: Smallest weight fraction counting a phase as present.
    """

    thermo: Thermo
    precursors: Sequence[str]
    max_precursors: int
    grid_c: Sequence[float]
    similarity_weight_ev: float
    min_fraction: float
    _sets: dict[str, list[tuple[tuple[str, ...], float]]] = field(init=False, default_factory=dict)

    @property
    def start_c(self) -> float:
        """The temperature a new recipe starts at: the middle of the grid."""
        return float(self.grid_c[len(self.grid_c) // 2])

    def sets(self, target: str) -> list[tuple[tuple[str, ...], float]]:
        """Balanced precursor sets of ``target`` with their driving force (eV/atom), cached.

        A set balances when every member takes part in making the target (open gases
        balancing); a precursor holding an element that is neither in the target nor in an
        open gas cannot. Sets without a driving force (reaction energy >= 0) are left out.
        """
        if target not in self._sets:
            allowed = {el.symbol for el in Composition(target).elements}
            allowed |= {el.symbol for g in self.thermo.open_gases for el in Composition(g)}
            usable = sorted(
                p
                for p in self.precursors
                if p != target and {el.symbol for el in Composition(p).elements} <= allowed
            )
            found: list[tuple[tuple[str, ...], float]] = []
            for k in range(1, self.max_precursors + 1):
                for combo in itertools.combinations(usable, k):
                    energy = self.thermo.reaction_energy(target, list(combo))
                    if energy is not None and energy < 0.0:
                        found.append((combo, energy))
            self._sets[target] = found
        return self._sets[target]

    def state(
        self,
        target: str,
        mem: CampaignMemory,
        pending: Sequence[tuple[str, float]],
        yield_threshold: float,
        max_attempts: int,
    ) -> TargetState:
        """The target's state from the attempts told and the recipes pending."""
        attempts = [a for a in mem.attempts if a.target == target]
        st = TargetState(target, attempts, list(pending), n_sets=len(self.sets(target)))
        st.inert = dict(mem.inert.get(target, {}))
        made = [a for a in attempts if a.yield_fraction >= yield_threshold]
        if made:
            first = made[0]
            st.status, st.reason = (
                "made",
                f"yield {first.yield_fraction:.3f} >= {yield_threshold:g} with {first.key} "
                f"at {first.temperature_c:g} C (attempt {attempts.index(first) + 1})",
            )
        elif not st.n_sets:
            st.status, st.reason = "given_up", "no subset of the precursors balances to it"
        elif len(attempts) >= max_attempts and not pending:
            st.status = "given_up"
            st.reason = f"max_attempts ({max_attempts}) reached" + st._best_text()
        return st

    def candidates(
        self,
        target: str,
        st: TargetState,
        mem: CampaignMemory,
        strategy: str,
        rng: np.random.Generator,
        yield_threshold: float,
    ) -> list[Candidate]:
        """The recipes worth running next for ``target``, best first."""
        if strategy == "random":
            return self._random(target, st, rng)
        if strategy == "first_recipe":
            return self._first_recipe(target, st, mem, yield_threshold)
        return self._arrows(target, st, mem, yield_threshold)

    # -- strategies -------------------------------------------------------------------------

    def _similarity(self, combo: tuple[str, ...], worked: list[set[str]]) -> float:
        s = set(combo)
        return max((len(s & w) / len(s | w) for w in worked), default=0.0)

    def _worked(self, mem: CampaignMemory, yield_threshold: float) -> list[set[str]]:
        return [set(a.precursors) for a in mem.attempts if a.yield_fraction >= yield_threshold]

    def _reacting_from(
        self, combo: tuple[str, ...], mem: CampaignMemory, temperatures: list[float]
    ) -> tuple[float | None, str]:
        """The first of ``temperatures`` at which some pair of ``combo`` may react.

        A pair observed not to react at or above a temperature (in any target's attempt)
        will not react there; the set is heated no lower than where one of its pairs is
        not known to be inert (or reacted before).
        """
        pairs = list(itertools.combinations(combo, 2))
        if not pairs:
            return (temperatures[0], "") if temperatures else (None, "")
        for t in temperatures:
            lookup = mem.lookup(t)
            if any(lookup(a, b) != () for a, b in pairs):
                skipped = [x for x in temperatures if x < t]
                why = (
                    f"; its pairs were observed not to react at {max(skipped):g} C"
                    if skipped
                    else ""
                )
                return float(t), why
        return None, ""

    def _start_temperature(
        self, combo: tuple[str, ...], mem: CampaignMemory, st: TargetState
    ) -> tuple[float | None, str]:
        """Where a new recipe starts: mid-grid, or hotter where the target only formed
        hotter so far, or where its pairs did not react."""
        start, reason = self.start_c, "new recipe: starts mid-grid"
        formed = [a.temperature_c for a in st.attempts if a.yield_fraction >= self.min_fraction]
        if formed and min(formed) > start + _T_EPS:
            start = min(formed)
            reason = f"new recipe: starts at {start:g} C, the lowest at which the target formed"
        temperature, why = self._reacting_from(
            combo, mem, [t for t in self.grid_c if t >= start - _T_EPS]
        )
        if temperature is None:
            return None, "its pairs were observed not to react at any temperature of the grid"
        return temperature, reason + why

    def _next_temperature(
        self, combo: tuple[str, ...], history: list[Attempt], mem: CampaignMemory
    ) -> tuple[float | None, str]:
        """Next temperature of a set tried before: hotter if precursors remained."""
        last = max(history, key=lambda a: a.temperature_c)
        if not last.feasible:
            return None, f"failed at {last.temperature_c:g} C"
        left = last.unreacted(self.min_fraction)
        if not left:
            return None, f"precursors all reacted at {last.temperature_c:g} C without the target"
        hotter = [t for t in self.grid_c if t > last.temperature_c + _T_EPS]
        temperature, why = self._reacting_from(combo, mem, hotter)
        if temperature is None:
            return None, f"{'+'.join(left)} unreacted at the hottest temperature"
        return temperature, (
            f"hotter than {last.temperature_c:g} C: {'+'.join(left)} left unreacted" + why
        )

    def _candidate(
        self,
        target: str,
        combo: tuple[str, ...],
        energy: float,
        temperature_c: float,
        reason: str,
        origin: str,
        mem: CampaignMemory,
        similarity: float,
    ) -> tuple[Candidate, tuple[str, ...]]:
        path = predict_pathway(self.thermo, target, combo, mem.lookup(temperature_c))
        steps = tuple(s.as_dict() for s in path.steps)
        for s, raw in zip(steps, path.steps, strict=True):
            if raw.source == "observed":
                s["source"] = f"observed at <= {temperature_c:g} C"
        bonus = self.similarity_weight_ev * similarity
        base = energy if origin == "first_recipe" else path.remaining_ev_per_atom
        score = (base if base is not None else 0.0) - bonus
        cand = Candidate(
            key="+".join(combo),
            temperature_c=float(temperature_c),
            origin=origin,
            score=float(score),
            driving_force_ev_per_atom=energy,
            remaining_ev_per_atom=path.remaining_ev_per_atom,
            intermediates=path.intermediates,
            steps=steps,
            temperature_reason=reason,
            similarity=similarity,
        )
        return cand, path.intermediates

    def _arrows(
        self, target: str, st: TargetState, mem: CampaignMemory, yield_threshold: float
    ) -> list[Candidate]:
        worked = self._worked(mem, yield_threshold)
        pending = {k for k, _ in st.pending}
        first = not st.attempts
        out: list[Candidate] = []
        for combo, energy in self.sets(target):
            key = "+".join(combo)
            if key in pending:
                continue
            history = [a for a in st.attempts if a.key == key]
            if history:
                temperature, reason = self._next_temperature(combo, history, mem)
                origin = "retry_hotter"
            else:
                temperature, reason = self._start_temperature(combo, mem, st)
                origin = "first_recipe" if first else "arrows"
            if temperature is None:
                if not history:
                    st.skipped[key] = reason
                continue
            cand, inter = self._candidate(
                target,
                combo,
                energy,
                temperature,
                reason,
                origin,
                mem,
                self._similarity(combo, worked),
            )
            inert = sorted(set(inter) & set(st.inert))
            if inert:
                st.skipped[key] = f"predicted to pass through inert {', '.join(inert)}"
                continue
            if origin != "first_recipe" and cand.remaining_ev_per_atom is None:
                st.skipped[key] = "its predicted intermediates cannot make the target"
                continue
            out.append(cand)
        # equal driving forces (to 1 µeV/atom): a set already under way goes hotter first
        out.sort(key=lambda c: (round(c.score, 6), c.origin != "retry_hotter", c.key))
        return out

    def _first_recipe(
        self, target: str, st: TargetState, mem: CampaignMemory, yield_threshold: float
    ) -> list[Candidate]:
        sets = dict(self.sets(target))
        started = [a.precursors for a in st.attempts] + [tuple(k.split("+")) for k, _ in st.pending]
        chosen = next((c for c in started if c in sets), None)  # the one recipe it keeps
        worked = self._worked(mem, yield_threshold)
        if chosen is None:
            chosen = min(
                sets,
                key=lambda c: (
                    sets[c] - self.similarity_weight_ev * self._similarity(c, worked),
                    c,
                ),
            )
        mid = len(self.grid_c) // 2
        order = [*self.grid_c[mid:], *reversed(self.grid_c[:mid])]
        used = [a.temperature_c for a in st.attempts if a.precursors == chosen]
        used += [t for k, t in st.pending if k == "+".join(chosen)]
        out = []
        for t in order:
            if any(abs(t - u) <= _T_EPS for u in used):
                continue
            cand, _ = self._candidate(
                target,
                chosen,
                sets[chosen],
                t,
                "next temperature of the grid (mid, up, down)",
                "first_recipe",
                mem,
                self._similarity(chosen, worked),
            )
            out.append(cand)
        return out

    def _random(self, target: str, st: TargetState, rng: np.random.Generator) -> list[Candidate]:
        done = {(a.key, a.temperature_c) for a in st.attempts} | set(st.pending)
        pool = [
            (combo, energy, float(t))
            for combo, energy in self.sets(target)
            for t in self.grid_c
            if not any(k == "+".join(combo) and abs(t - u) <= _T_EPS for k, u in done)
        ]
        out = []
        for i in rng.permutation(len(pool)):
            combo, energy, t = pool[int(i)]
            out.append(
                Candidate(
                    key="+".join(combo),
                    temperature_c=t,
                    origin="random",
                    score=0.0,
                    driving_force_ev_per_atom=energy,
                    remaining_ev_per_atom=None,
                    intermediates=(),
                    steps=(),
                    temperature_reason="random grid temperature",
                    similarity=0.0,
                )
            )
        return out
