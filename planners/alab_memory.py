"""What an A-Lab campaign has learned: attempts, pairwise reactions, inert intermediates.

Built afresh from the told observations at every ``ask`` of the ``alab`` planner
(:mod:`planners.alab`), so a planner rebuilt from the store knows exactly what the old one
knew. From each attempt's phases (the ``wf_<Formula>`` weight fractions the XRD analysis
reports) it infers, as ARROWS3 does (Szymanski et al., Nat. Commun. 14, 6956, 2023):

- the pairwise reactions that happened: each new phase is attributed to the pair of
  precursors that can make it (preferring pairs that were used up, then the more
  favourable reaction), recorded as ``(A, B) -> products`` at the attempt's temperature,
  or, when no pair can make it but one precursor alone can, to that precursor's
  decomposition (``(A, A)``); pairs that were both still present and formed nothing are
  recorded as not reacting;
- the inert intermediates of a target: phases formed in a failed attempt that leave less
  than ``inert_threshold_ev`` eV/atom of driving force to the target (or none that can be
  computed: the phases present cannot make it, or one has no computed entry).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planners.reactions import PairLookup, Thermo, normalize_formula

logger = logging.getLogger(__name__)

__all__ = ["Attempt", "CampaignMemory", "parse_phases"]

_T_EPS = 1e-6


def parse_phases(measurements: Mapping[str, float]) -> dict[str, float]:
    """Weight fraction of each identified phase, from ``wf_<Formula>`` measurements.

    Entries whose name is not a formula are ignored (logged).
    """
    out: dict[str, float] = {}
    for name, value in measurements.items():
        if not name.startswith("wf_"):
            continue
        try:
            formula = normalize_formula(name[3:])
        except ValueError:
            logger.info("measurement %s does not name a phase; ignored", name)
            continue
        out[formula] = out.get(formula, 0.0) + float(value)
    return out


@dataclass(frozen=True)
class Attempt:
    """One finished synthesis attempt.

    Attributes:
        target: Target reduced formula.
        precursors: The precursor set, sorted.
        temperature_c: Heating temperature, in °C.
        yield_fraction: Target weight fraction identified (0 when the attempt failed).
        feasible: ``False`` when the experiment failed (e.g. dosing could not balance).
        phases: Identified weight fraction of each phase.
        experiment_id: The store's id, if known.
    """

    target: str
    precursors: tuple[str, ...]
    temperature_c: float
    yield_fraction: float
    feasible: bool
    phases: Mapping[str, float]
    experiment_id: int | None = None

    @property
    def key(self) -> str:
        """The precursor set as the ``precursors`` parameter writes it."""
        return "+".join(self.precursors)

    def present(self, min_fraction: float) -> set[str]:
        """Phases identified with at least ``min_fraction`` weight fraction."""
        return {p for p, w in self.phases.items() if w >= min_fraction}

    def unreacted(self, min_fraction: float) -> list[str]:
        """Precursors still present after heating, sorted."""
        return sorted(set(self.precursors) & self.present(min_fraction))


@dataclass
class CampaignMemory:
    """Pairwise reactions and inert intermediates inferred from a campaign's attempts.

    Args:
        thermo: The computed energies.
        min_fraction: Smallest weight fraction that counts a phase as present.
        inert_threshold_ev: An intermediate leaving a driving force weaker than this (eV per
            atom of target) is inert for that target.
    """

    thermo: Thermo
    min_fraction: float
    inert_threshold_ev: float
    attempts: list[Attempt] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[tuple[float, tuple[str, ...]]]] = field(default_factory=dict)
    inert: dict[str, dict[str, str]] = field(default_factory=dict)
    unexplained: list[dict[str, Any]] = field(default_factory=list)

    def add(self, attempt: Attempt, yield_threshold: float) -> None:
        """Learn from one attempt (pair reactions; inert intermediates if it failed)."""
        self.attempts.append(attempt)
        if not attempt.feasible or not attempt.phases:
            return
        present = attempt.present(self.min_fraction)
        gases = set(self.thermo.open_gases)
        new = sorted(present - set(attempt.precursors) - {attempt.target} - gases)
        assigned: dict[tuple[str, str], set[str]] = {}
        for phase in new:
            pair = self._explaining_pair(phase, attempt, present)
            if pair is None:  # a precursor that decomposed on its own (SrO2 -> SrO + O2)?
                alone = [p for p in attempt.precursors if self.thermo.balance(phase, [p])]
                pair = (alone[0], alone[0]) if alone else None
            if pair is None:
                self.unexplained.append(
                    {"phase": phase, "attempt": attempt.key, "temperature_c": attempt.temperature_c}
                )
                continue
            assigned.setdefault(pair, set()).add(phase)
        if attempt.yield_fraction >= self.min_fraction and len(attempt.precursors) == 2:
            a, b = attempt.precursors
            assigned.setdefault((a, b), set()).add(attempt.target)
        for pair, products in assigned.items():
            self.pairs.setdefault(pair, []).append((attempt.temperature_c, tuple(sorted(products))))
        for a, b in itertools.combinations(attempt.precursors, 2):
            if (a, b) not in assigned and a in present and b in present:
                self.pairs.setdefault((a, b), []).append((attempt.temperature_c, ()))
        if attempt.yield_fraction < yield_threshold and new:
            rest = sorted(present - {attempt.target} - gases)
            left = self.thermo.reaction_energy(attempt.target, rest, use_all=False)
            if left is None or left > -self.inert_threshold_ev:
                why = f"formed at {attempt.temperature_c:g} C from {attempt.key}; " + (
                    "no driving force to the target can be computed from the phases present"
                    if left is None
                    else f"leaves {left:.3f} eV/atom to the target"
                )
                for phase in new:
                    self.inert.setdefault(attempt.target, {}).setdefault(phase, why)

    def _explaining_pair(
        self, phase: str, attempt: Attempt, present: set[str]
    ) -> tuple[str, str] | None:
        """The pair of the attempt's phases that most plausibly formed ``phase``."""
        pool = sorted(set(attempt.precursors) | (present - {phase, attempt.target}))
        best: tuple[tuple[int, float, str], tuple[str, str]] | None = None
        for a, b in itertools.combinations(pool, 2):
            if self.thermo.balance(phase, [a, b]) is None:
                continue
            energy = self.thermo.reaction_energy(phase, [a, b])
            used_up = (a not in present) + (b not in present)
            rank = (-used_up, energy if energy is not None else 0.0, f"{a}+{b}")
            if best is None or rank < best[0]:
                best = (rank, (a, b))
        return None if best is None else best[1]

    def lookup(self, temperature_c: float) -> PairLookup:
        """``lookup(a, b)`` for :func:`planners.reactions.predict_pathway` at a temperature.

        A pair observed to react at or below ``temperature_c`` reacts as seen at the
        highest such temperature; one observed not to react at or above it does not
        react; otherwise the pair is unobserved (``None``).
        """

        def find(a: str, b: str) -> tuple[str, ...] | None:
            records = self.pairs.get((min(a, b), max(a, b)), [])
            reacted = [(t, p) for t, p in records if p and t <= temperature_c + _T_EPS]
            if reacted:
                top = max(t for t, _ in reacted)
                return tuple(sorted({x for t, p in reacted if t == top for x in p}))
            if any(not p and t >= temperature_c - _T_EPS for t, p in records):
                return ()
            return None

        return find

    def observed_pairs(self) -> list[dict[str, Any]]:
        """Every observed pair record, JSON-serialisable, sorted."""
        return [
            {"reactants": sorted(set(pair)), "temperature_c": t, "products": list(products)}
            for pair, records in sorted(self.pairs.items())
            for t, products in sorted(records)
        ]
