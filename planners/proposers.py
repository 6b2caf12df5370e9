"""Generative proposers: candidate materials of a chemical system, before any screening.

A GNoME-style discovery loop generates many candidates, screens them with a surrogate and
sends the most promising to the lab (Merchant et al. 2023). The proposers here generate:

* :func:`charge_balanced_compositions`: every small-integer composition of the system that
  some assignment of the elements' ICSD oxidation states makes neutral, and whose cations
  are less electronegative than its anions (the charge-neutrality and Pauling
  electronegativity tests of SMACT, Davies et al. 2016 and 2019), then
  :func:`decorate`\\ d into every AFLOW prototype of matching stoichiometry;
* :func:`substitutions`: the elements of the system put into the sites of known prototype
  compounds, ranked by pymatgen's data-mined ionic substitution probabilities (Hautier et
  al. 2011), keeping the charge-neutral ones above a probability threshold; the parent
  compound and its prototype are recorded;
* a conditional composition VAE (:mod:`planners.vae`), sampled toward a target property.

:func:`deduplicate` removes candidates whose structures pymatgen's ``StructureMatcher``
finds equivalent (a supercell, a translated or a relabelled copy) to an earlier candidate or
to a known structure (novelty).

References:
    Merchant, A. et al. (2023). Scaling deep learning for materials discovery. Nature 624.
    Davies, D. W. et al. (2016). Computational screening of all stoichiometric inorganic
    materials. Chem 1, 617-627. Davies, D. W. et al. (2019). SMACT: Semiconducting
    Materials by Analogy and Chemical Theory. JOSS 4, 1361.
    Hautier, G. et al. (2011). Data mined ionic substitutions for the discovery of new
    compounds. Inorganic Chemistry 50, 656-663.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Element, Species, Structure

from models.materials import MaterialSpec, build_structure, parse_material, prototype_library

logger = logging.getLogger(__name__)

__all__ = [
    "Candidate",
    "charge_balanced",
    "charge_balanced_compositions",
    "decorate",
    "deduplicate",
    "oxidation_states",
    "substitution_log_probability",
    "substitutions",
]


@dataclass(frozen=True)
class Candidate:
    """A generated material and where it came from.

    Attributes:
        material: The material spec's text (:mod:`models.materials`).
        formula: Reduced formula.
        proposer: Which proposer made it (``"charge_balanced"``, ``"substitution"``,
            ``"vae"``).
        parent: What it was derived from (the prototype compound, with its label).
        score: The proposer's own score (a substitution probability), if any.
    """

    material: str
    formula: str
    proposer: str
    parent: str
    score: float | None = None


def oxidation_states(symbol: str) -> tuple[int, ...]:
    """The oxidation states an element takes in the ICSD (common ones if none), sorted."""
    el = Element(symbol)
    states = set(el.icsd_oxidation_states or ()) | set(el.common_oxidation_states or ())
    return tuple(sorted(states))


def charge_balanced(composition: Composition) -> dict[str, int] | None:
    """An oxidation-state assignment that makes a composition neutral and passes the
    electronegativity test, or ``None``.

    Each element takes one oxidation state (from :func:`oxidation_states`); a single-element
    composition is balanced (all zero). The Pauling test: every cation is less
    electronegative than every anion.

    Args:
        composition: The composition (amounts are rounded to integers after reduction).

    Returns:
        ``{symbol: oxidation state}`` for the first assignment found (states tried in
        ascending order of their magnitudes), or ``None``.
    """
    reduced = composition.reduced_composition
    symbols = [el.symbol for el in reduced.elements]
    if len(symbols) == 1:
        return {symbols[0]: 0}
    amounts = [round(reduced[s]) for s in symbols]
    options = [sorted(oxidation_states(s), key=abs) for s in symbols]
    for states in itertools.product(*options):
        if sum(a * q for a, q in zip(amounts, states, strict=True)) != 0:
            continue
        cations = [Element(s).X for s, q in zip(symbols, states, strict=True) if q > 0]
        anions = [Element(s).X for s, q in zip(symbols, states, strict=True) if q < 0]
        if not cations or not anions or any(math.isnan(x) for x in cations + anions):
            continue
        if max(cations) < min(anions):
            return dict(zip(symbols, states, strict=True))
    return None


def charge_balanced_compositions(
    elements: Sequence[str], *, max_atoms: int = 8, min_elements: int = 2
) -> list[Composition]:
    """Every charge-balanced reduced composition of the system with at most ``max_atoms``.

    Args:
        elements: The chemical system's element symbols.
        max_atoms: Largest number of atoms in the reduced formula.
        min_elements: Fewest distinct elements a composition has.

    Returns:
        Reduced compositions passing :func:`charge_balanced`, in a fixed order (by size,
        then by amounts).
    """
    out: list[Composition] = []
    k = len(elements)
    for counts in itertools.product(range(max_atoms + 1), repeat=k):
        present = [c for c in counts if c > 0]
        if len(present) < min_elements or sum(counts) > max_atoms or math.gcd(*present) != 1:
            continue
        comp = Composition({el: c for el, c in zip(elements, counts, strict=True) if c})
        if charge_balanced(comp) is not None:
            out.append(comp)
    out.sort(key=lambda c: (c.num_atoms, [c[el] for el in elements]))
    return out


def _reduced_counts(counts: Sequence[int]) -> tuple[int, ...]:
    g = math.gcd(*counts)
    return tuple(c // g for c in counts)


def decorate(
    compositions: Iterable[Composition], proposer: str, max_sites: int = 24
) -> list[Candidate]:
    """Put compositions into every AFLOW prototype of the same stoichiometry.

    Each composition's elements are assigned to the prototype's species in every way that
    matches the amounts (e.g. ``SrTiO3`` into the perovskite ``AB3C``: ``O`` on ``B``, and
    ``Sr``/``Ti`` both ways round on ``A``/``C``).

    Args:
        compositions: Compositions to decorate.
        proposer: The proposer name recorded on each candidate.
        max_sites: Largest prototype cell used.

    Returns:
        Candidates whose parent names the prototype (``"CaTiO3 AB3C_cP5_221_a_c_b"``).
    """
    library = [p for p in prototype_library().values() if p.n_sites <= max_sites]
    out: list[Candidate] = []
    for comp in compositions:
        reduced = comp.reduced_composition
        symbols = [el.symbol for el in reduced.elements]
        amounts = [round(reduced[s]) for s in symbols]
        for proto in library:
            if len(proto.species) != len(symbols):
                continue
            ratio = _reduced_counts(proto.counts)
            if sorted(ratio) != sorted(amounts):
                continue
            for perm in itertools.permutations(range(len(symbols))):
                if all(ratio[i] == amounts[perm[i]] for i in range(len(ratio))):
                    spec = MaterialSpec(
                        proto.label, tuple(symbols[perm[i]] for i in range(len(ratio)))
                    )
                    out.append(
                        Candidate(
                            str(spec),
                            reduced.reduced_formula,
                            proposer,
                            f"{proto.formula} {proto.label}",
                        )
                    )
    return out


@functools.lru_cache(maxsize=512)
def _oxi_guesses(formula: str) -> tuple[dict[str, float], ...]:
    return tuple(Composition(formula).oxi_state_guesses(max_sites=-1))


@functools.lru_cache(maxsize=1)
def _substitution_probability() -> object:
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionProbability,
    )

    return SubstitutionProbability()


def substitutions(
    elements: Sequence[str], *, threshold: float = 1e-3, max_sites: int = 24
) -> list[Candidate]:
    """Substitute the system's elements into known prototype compounds.

    For every prototype with at most ``len(elements)`` species whose original compound has
    an oxidation-state guess, every injective assignment of the system's ions (each
    element in each of its :func:`oxidation_states`) to the original ions is scored with
    the data-mined conditional probability ``P(new ions | original ions)``
    (``SubstitutionProbability.cond_prob_list``). Charge-neutral assignments scoring at
    least ``threshold`` are kept, best first.

    Args:
        elements: The chemical system.
        threshold: Smallest substitution probability kept.
        max_sites: Largest prototype cell used.

    Returns:
        Candidates with the parent compound and prototype recorded and the probability as
        their score.
    """
    prob = _substitution_probability()
    found: dict[str, Candidate] = {}
    for proto in prototype_library().values():
        k = len(proto.species)
        if k < 2 or k > len(elements) or proto.n_sites > max_sites:
            continue
        guesses = _oxi_guesses(proto.formula)
        if not guesses:
            continue
        old = [Species(s, guesses[0][s]) for s in proto.species]
        for chosen in itertools.permutations(elements, k):
            for states in itertools.product(*(oxidation_states(e) for e in chosen)):
                if sum(q * n for q, n in zip(states, proto.counts, strict=True)) != 0:
                    continue
                if any(q * (o.oxi_state or 0) <= 0 for q, o in zip(states, old, strict=True) if q):
                    continue  # a cation must replace a cation, an anion an anion
                new = [Species(e, q) for e, q in zip(chosen, states, strict=True)]
                try:
                    p = float(prob.cond_prob_list(new, old))  # type: ignore[attr-defined]
                except ZeroDivisionError:  # an original ion the data never saw
                    continue
                spec = str(MaterialSpec(proto.label, tuple(chosen)))
                if p >= threshold and (spec not in found or (found[spec].score or 0) < p):
                    found[spec] = Candidate(
                        spec,
                        MaterialSpec(proto.label, tuple(chosen)).formula,
                        "substitution",
                        f"{proto.formula} {proto.label}",
                        p,
                    )
    return sorted(found.values(), key=lambda c: -(c.score or 0.0))


LOG_PROBABILITY_FLOOR = -8.0
"""log10 substitution probability given to assignments the data never saw."""


def substitution_log_probability(material: str) -> float:
    """log10 of the data-mined probability of a material's ions replacing its prototype's.

    The material's oxidation states are those :func:`charge_balanced` finds; the
    prototype's are pymatgen's first guess for its original compound. Unknown ions, or a
    material or prototype without oxidation states, get :data:`LOG_PROBABILITY_FLOOR`.

    Args:
        material: A material spec.

    Returns:
        ``log10 P(new ions | original ions)``, at least the floor.
    """
    spec = parse_material(material)
    proto = prototype_library()[spec.prototype]
    guesses = _oxi_guesses(proto.formula)
    states = charge_balanced(spec.composition)
    if not guesses or states is None:
        return LOG_PROBABILITY_FLOOR
    old = [Species(s, guesses[0][s]) for s in proto.species]
    new = [Species(e, states[e]) for e in spec.elements]
    try:
        p = float(_substitution_probability().cond_prob_list(new, old))  # type: ignore[attr-defined]
    except ZeroDivisionError:
        return LOG_PROBABILITY_FLOOR
    return max(math.log10(p), LOG_PROBABILITY_FLOOR) if p > 0 else LOG_PROBABILITY_FLOOR


def deduplicate(
    candidates: Sequence[Candidate],
    known: Sequence[Structure] = (),
    matcher: StructureMatcher | None = None,
) -> list[Candidate]:
    """Drop candidates whose structure matches an earlier candidate's or a known one.

    Structures are compared with ``StructureMatcher`` (default tolerances, supercells
    allowed), only within one reduced formula. The first of equivalent candidates is kept,
    with the proposers of the ones dropped appended to its ``proposer`` (``"a+b"``).

    Args:
        candidates: Candidates in order of preference.
        known: Structures already known (measured, or in prior data): candidates matching
            one are not novel and are dropped.
        matcher: The matcher to use.

    Returns:
        The novel, distinct candidates, in input order.
    """
    sm = matcher or StructureMatcher()
    kept: dict[str, list[tuple[int, Structure]]] = {}
    known_by: dict[str, list[Structure]] = {}
    for s in known:
        known_by.setdefault(s.composition.reduced_formula, []).append(s)
    out: list[Candidate] = []
    for cand in candidates:
        structure = build_structure(cand.material)
        formula = structure.composition.reduced_formula
        if any(sm.fit(structure, s) for s in known_by.get(formula, [])):
            continue
        twin = next((i for i, s in kept.get(formula, []) if sm.fit(structure, s)), None)
        if twin is not None:
            first = out[twin]
            if cand.proposer not in first.proposer.split("+"):
                out[twin] = replace(first, proposer=f"{first.proposer}+{cand.proposer}")
            continue
        kept.setdefault(formula, []).append((len(out), structure))
        out.append(cand)
    return out
