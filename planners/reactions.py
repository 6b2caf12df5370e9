"""Solid-state reaction thermodynamics for recipe planning: balancing, driving forces, pairs.

The ``alab`` planner (:mod:`planners.alab`) ranks precursor sets the way the A-Lab does
(Szymanski et al., Nature 624, 86-91, 2023) and re-ranks them after failed attempts with
ARROWS3 (Szymanski et al., Nat. Commun. 14, 6956, 2023). This module holds the chemistry it
needs, computed from "computed data": a list of entries ``{"formula", "energy_per_atom"}``
(eV/atom, elemental references included), as the A-Lab takes them from the Materials
Project.

- :meth:`Thermo.balance` finds the amounts of a precursor set that make one formula unit of
  a target, with open gases (O2) free to enter or leave (non-negative least squares,
  :func:`scipy.optimize.nnls`);
- :meth:`Thermo.reaction_energy` is the reaction energy of that balanced reaction, in eV per
  atom of the target (more negative: a larger driving force);
- :meth:`Thermo.pair_reaction` is the most favourable reaction between two phases on the
  convex hull: the most negative kink of pymatgen's
  :class:`~pymatgen.analysis.interface_reactions.InterfacialReactivity` (ARROWS3 assumes
  that, of the pairs present, the one with the largest driving force reacts first);
- :func:`predict_pathway` walks a precursor set through its pairwise reactions (observed ones
  first, then the hull's) to the intermediates that are left when the target forms, and
  the driving force left to form it from them.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.interface_reactions import InterfacialReactivity
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element
from scipy.optimize import nnls

from models.errors import InvalidCampaignError

logger = logging.getLogger(__name__)

__all__ = [
    "PairLookup",
    "PairStep",
    "Pathway",
    "Thermo",
    "load_thermo_file",
    "normalize_formula",
    "predict_pathway",
]

_TOL = 1e-6
PairLookup = Callable[[str, str], "tuple[str, ...] | None"]
"""``lookup(a, b)``: observed products of ``a + b`` (``()``: observed not to react), or
``None`` when the pair was never observed at a usable temperature; ``lookup(a, a)``: what
``a`` was observed to decompose into."""


def normalize_formula(text: str) -> str:
    """The reduced formula of ``text`` (``"Ti2O4"`` -> ``"TiO2"``).

    Raises:
        ValueError: If ``text`` is not a chemical formula.
    """
    try:
        comp = Composition(text)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise ValueError(f"{text!r} is not a chemical formula: {exc}") from exc
    if comp.num_atoms <= 0 or not comp.valid:
        raise ValueError(f"{text!r} is not a chemical formula")
    return str(comp.reduced_formula)


def load_thermo_file(path: str) -> list[dict[str, Any]]:
    """The ``entries`` of a thermo JSON file (``{"entries": [{"formula", "energy_per_atom"}]}``).

    Raises:
        InvalidCampaignError: If the file cannot be read or has no ``entries`` list
            (key path ``planner.options.thermo_file``).
    """
    key = "planner.options.thermo_file"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCampaignError(path, [(key, f"cannot read: {exc}")]) from exc
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InvalidCampaignError(path, [(key, "needs an 'entries' list")])
    return entries


@dataclass(frozen=True)
class PairStep:
    """One pairwise reaction of a predicted pathway.

    Attributes:
        reactants: The two phases, sorted (the same phase twice: it decomposed).
        products: What they form (sorted reduced formulas).
        source: ``"observed@<T>C"`` when seen in an experiment at that temperature,
            ``"hull"`` when predicted from the convex hull.
        energy_ev_per_atom: Reaction energy per atom of the mixture (hull steps), or of the
            balanced observed reaction; ``None`` when it cannot be balanced.
    """

    reactants: tuple[str, str]
    products: tuple[str, ...]
    source: str
    energy_ev_per_atom: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for decision details (one reactant: a decomposition)."""
        return {
            "reactants": sorted(set(self.reactants)),
            "products": list(self.products),
            "source": self.source,
            "energy_ev_per_atom": self.energy_ev_per_atom,
        }


@dataclass(frozen=True)
class Pathway:
    """The predicted course of a precursor set toward a target.

    Attributes:
        steps: The pairwise reactions, in the order they are predicted to happen.
        phases: The phases present when the target forms (or when nothing reacts any more).
        intermediates: Phases formed on the way that are neither precursor nor target.
        remaining_ev_per_atom: Driving force left to form the target from ``phases``
            (eV per atom of target, negative is favourable); ``None`` if ``phases`` cannot
            make the target at all.
    """

    steps: tuple[PairStep, ...]
    phases: tuple[str, ...]
    intermediates: tuple[str, ...]
    remaining_ev_per_atom: float | None


@dataclass
class Thermo:
    """Computed energies of the phases a campaign can meet.

    Args:
        entries: ``{"formula": str, "energy_per_atom": float}`` dicts (eV/atom); other keys
            (``structure``) are ignored. Several entries of one composition: the lowest
            energy is used.
        open_gases: Gas species free to enter or leave a reaction (``["O2"]``).
        source_key: Key path named in errors (``planner.options.thermo``).

    Raises:
        InvalidCampaignError: If an entry is malformed.
    """

    entries: Sequence[Mapping[str, Any]]
    open_gases: Sequence[str] = ("O2",)
    source_key: str = "planner.options.thermo"
    energy_per_atom: dict[str, float] = field(init=False)
    _pairs: dict[tuple[str, str], tuple[tuple[str, ...], float]] = field(
        init=False, default_factory=dict
    )
    _pds: dict[frozenset[str], PhaseDiagram] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        energies: dict[str, float] = {}
        for i, entry in enumerate(self.entries):
            where = f"{self.source_key}[{i}]"
            if not isinstance(entry, Mapping):
                raise InvalidCampaignError(None, [(where, "an entry must be a table")])
            try:
                formula = normalize_formula(str(entry["formula"]))
                energy = float(entry["energy_per_atom"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidCampaignError(
                    None, [(where, f"needs 'formula' and a numeric 'energy_per_atom': {exc}")]
                ) from exc
            if not math.isfinite(energy):
                raise InvalidCampaignError(None, [(where, "energy_per_atom must be finite")])
            energies[formula] = min(energy, energies.get(formula, math.inf))
        self.energy_per_atom = energies
        self.open_gases = tuple(normalize_formula(g) for g in self.open_gases)

    @cached_property
    def elemental_ev_per_atom(self) -> dict[str, float]:
        """Energy per atom of each element's reference entry (its lowest-energy form)."""
        refs: dict[str, float] = {}
        for formula, e in self.energy_per_atom.items():
            comp = Composition(formula)
            if len(comp.elements) == 1:
                sym = comp.elements[0].symbol
                refs[sym] = min(e, refs.get(sym, math.inf))
        return refs

    def missing_elements(self, formulas: Iterable[str]) -> list[str]:
        """Elements of ``formulas`` that have no elemental reference entry, sorted."""
        need = {el.symbol for f in formulas for el in Composition(f).elements}
        return sorted(need - set(self.elemental_ev_per_atom))

    def has(self, formula: str) -> bool:
        """Whether ``formula`` has an entry."""
        return normalize_formula(formula) in self.energy_per_atom

    def formation_energy(self, formula: str) -> float:
        """Formation energy of one reduced formula unit from the elemental references, in eV.

        Raises:
            KeyError: If ``formula`` or one of its elements has no entry.
        """
        comp = Composition(formula).reduced_composition
        refs = self.elemental_ev_per_atom
        total = self.energy_per_atom[str(comp.reduced_formula)] * comp.num_atoms
        return float(total - sum(n * refs[el.symbol] for el, n in comp.items()))

    def balance(
        self, target: str, phases: Sequence[str], *, use_all: bool = True
    ) -> dict[str, float] | None:
        """Amounts of ``phases`` (moles per mole of target formula unit) that make ``target``.

        Open gases balance the rest and are not listed. With ``use_all`` every phase must
        take part and the amounts must be unique (a set with a superfluous or redundant
        member, such as SrO with SrO2, is not a recipe: its elements other than the gases'
        must fix every amount); without it, phases left over get amount 0 (they stay
        unreacted).

        Returns:
            ``{formula: amount}`` or ``None`` if the phases cannot make the target.
        """
        solids = [p for p in phases if p not in self.open_gases]
        if not solids:
            return None
        elements = sorted(
            {el.symbol for f in [target, *solids, *self.open_gases] for el in Composition(f)}
        )

        def column(formula: str) -> np.ndarray:
            comp = Composition(formula).reduced_composition
            return np.array([comp.get(Element(e), 0.0) for e in elements], dtype=float)

        if use_all:
            gas_elements = {el.symbol for g in self.open_gases for el in Composition(g)}
            rows = [i for i, e in enumerate(elements) if e not in gas_elements]
            fixed = np.column_stack([column(p)[rows] for p in solids]) if rows else None
            if fixed is None or np.linalg.matrix_rank(fixed) < len(solids):
                return None
        gas_cols = [column(g) for g in self.open_gases]
        a = np.column_stack(
            [column(p) for p in solids] + gas_cols + [-c for c in gas_cols]
        )  # gases may enter (+) or leave (-)
        b = column(target)
        x, residual = nnls(a, b)
        if residual > 1e-6 * max(1.0, float(np.linalg.norm(b))):
            return None
        amounts = {p: float(x[i]) for i, p in enumerate(solids)}
        if use_all and any(v <= _TOL for v in amounts.values()):
            return None
        if sum(amounts.values()) <= _TOL:
            return None
        return amounts

    def reaction_energy(
        self, target: str, phases: Sequence[str], *, use_all: bool = True
    ) -> float | None:
        """Energy of ``phases -> target`` (open gases balancing), in eV per atom of target.

        Returns:
            The reaction energy (negative: the reaction is favourable), or ``None`` if the
            phases cannot make the target or one of them has no computed entry (a phase
            the XRD analysis identified that the entries lack, say).
        """
        amounts = self.balance(target, phases, use_all=use_all)
        if amounts is None:
            return None
        n_atoms = Composition(target).reduced_composition.num_atoms
        try:
            reactants = sum(self._formation_per_unit(p) * a for p, a in amounts.items())
            product = self._formation_per_unit(target)
        except KeyError:
            return None
        # open gases are elemental references here: their formation energy is zero
        return float((product - reactants) / n_atoms)

    def _formation_per_unit(self, formula: str) -> float:
        comp = Composition(formula).reduced_composition
        if len(comp.elements) == 1 and str(comp.reduced_formula) not in self.energy_per_atom:
            return 0.0
        return self.formation_energy(formula)

    def phase_diagram(self, elements: Iterable[str]) -> PhaseDiagram:
        """The phase diagram of the entries inside the chemical system ``elements`` (cached)."""
        key = frozenset(elements)
        if key not in self._pds:
            entries = [
                PDEntry(Composition(f), e * Composition(f).num_atoms)
                for f, e in sorted(self.energy_per_atom.items())
                if {el.symbol for el in Composition(f).elements} <= key
            ]
            self._pds[key] = PhaseDiagram(entries)
        return self._pds[key]

    def pair_reaction(self, a: str, b: str) -> tuple[tuple[str, ...], float]:
        """The hull's most favourable reaction between phases ``a`` and ``b`` (cached).

        Returns:
            ``(products, energy)``: the sorted products of the most negative kink of the
            interface reaction and its energy in eV per atom of mixture; ``((), 0.0)`` when
            the two do not react.
        """
        key = (min(a, b), max(a, b))
        if key not in self._pairs:
            self._pairs[key] = self._compute_pair(*key)
        return self._pairs[key]

    def _compute_pair(self, a: str, b: str) -> tuple[tuple[str, ...], float]:
        if a == b:
            return (), 0.0
        elements = {el.symbol for f in (a, b) for el in Composition(f).elements}
        try:
            pd = self.phase_diagram(elements)
            ir = InterfacialReactivity(
                Composition(a), Composition(b), pd, norm=True, use_hull_energy=False
            )
            kinks = list(ir.get_kinks())
        except Exception as exc:  # a degenerate pair (same composition line, ...)
            logger.debug("no interface reaction for %s + %s: %s", a, b, exc)
            return (), 0.0
        best: tuple[tuple[str, ...], float] = ((), 0.0)
        for _, _, energy, reaction, _ in kinks:
            if float(energy) < best[1] - _TOL:
                products = tuple(
                    sorted(
                        {
                            str(c.reduced_formula)
                            for c in reaction.products
                            if str(c.reduced_formula) not in (a, b, *self.open_gases)
                        }
                    )
                )
                if products:
                    best = (products, float(energy))
        return best


def predict_pathway(
    thermo: Thermo,
    target: str,
    precursors: Sequence[str],
    observed: PairLookup,
    *,
    max_steps: int = 6,
) -> Pathway:
    """Predict how ``precursors`` react pairwise on the way to ``target`` (ARROWS3).

    At each step every pair of the phases present is looked up: an observed reaction is
    taken as it was seen (observed pairs react before any predicted one), an observed
    non-reaction is skipped, an unobserved pair reacts as the hull's most favourable pair
    reaction would. A phase observed to decompose on its own (``observed(a, a)``, a
    peroxide losing oxygen, say) does so like an observed pair reaction. The most
    favourable pair reacts; when its products include the target, or nothing reacts, the
    walk stops and the driving force left is that of the phases present to the target. A
    pair's reactants that the products cannot replace (one of the two was in excess) stay
    present.

    Args:
        thermo: The computed energies.
        target: Target reduced formula.
        precursors: The precursor set.
        observed: Lookup of observed pair reactions at the temperature in question.
        max_steps: Most pairwise reactions followed.

    Returns:
        The predicted pathway.
    """
    start = tuple(sorted(set(precursors)))
    phases = set(start)
    steps: list[PairStep] = []
    for _ in range(max_steps):
        best: tuple[tuple[int, float], PairStep] | None = None
        present = sorted(phases - {target})
        singles = [(p, p) for p in present]  # decompositions: only as observed
        for a, b in singles + list(itertools.combinations(present, 2)):
            seen = observed(a, b)
            if a == b and not seen:
                continue
            if seen is not None:
                if not seen:
                    continue
                energy = _products_energy(thermo, (a, b), seen)
                rank = (0, energy if energy is not None else 0.0)
                step = PairStep((a, b), seen, "observed", energy)
            else:
                products, energy_mix = thermo.pair_reaction(a, b)
                if not products:
                    continue
                rank = (1, energy_mix)
                step = PairStep((a, b), products, "hull", energy_mix)
            if best is None or rank < best[0]:
                best = (rank, step)
        if best is None:
            break
        step = best[1]
        if target in step.products:
            steps.append(step)
            break
        after = (phases - set(step.reactants)) | {p for p in step.products if p != target}
        if thermo.balance(target, sorted(after), use_all=False) is None:
            # one reactant was in excess: keep whichever lets the rest still make the target
            kept = [
                r
                for r in step.reactants
                if thermo.balance(target, sorted(after | {r}), use_all=False)
            ]
            if not kept:
                break
            after |= {kept[0]}
        if after == phases:
            break
        steps.append(step)
        phases = after
    intermediates = tuple(sorted({p for s in steps for p in s.products} - set(start) - {target}))
    remaining = thermo.reaction_energy(target, sorted(phases - {target}), use_all=False)
    return Pathway(tuple(steps), tuple(sorted(phases)), intermediates, remaining)


def _products_energy(
    thermo: Thermo, reactants: tuple[str, str], products: Sequence[str]
) -> float | None:
    """Energy of ``reactants -> products`` per atom of products formed (observed pairs).

    The reaction is balanced for the first product; ``None`` if it cannot be.
    """
    energies = [thermo.reaction_energy(p, sorted(set(reactants)), use_all=False) for p in products]
    known = [e for e in energies if e is not None]
    return min(known) if known else None
