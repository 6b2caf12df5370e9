"""The ``formula-energy`` world: a cheap, deterministic formation-energy truth of a formula.

Screening campaigns over a lab's own list need a hidden truth that answers for any formula
on the list, for tens of thousands of candidates, on a laptop. CHGNet relaxations
(:mod:`sim.materials.world`) cost seconds each; this world instead computes a
formation-energy-like property from element data, in microseconds.

The truth (:class:`FormationModel`) is Pauling's bond-energy picture of a compound's heat
of formation (Pauling, *The Nature of the Chemical Bond*, 1960: the extra ionic energy of
an A-B bond grows with the square of the electronegativity difference), written per atom
for a composition with atomic fractions ``x_i``::

    E(x) = sum_i x_i mu_i
           + a sum_{i<j} x_i x_j (chi_i - chi_j)^2
           + b sum_{i<j} x_i x_j ((r_i - r_j) / (r_i + r_j))^2
           + c sum_{i<j} x_i x_j |chi_i - chi_j|

``chi``: Pauling electronegativity, ``r``: atomic radius (both from pymatgen's element
data); ``mu_i`` (one per element) and ``a, b, c`` are fitted once by ridge regression
(penalty ``1e-3``) to the 2,135 experimental formation enthalpies that pymatgen ships for its
compatibility corrections (``pymatgen/analysis/compatibility/exp_compounds.json.gz``,
Kubaschewski-type tables, eV per formula unit divided by the atoms per formula unit). The
result is a smooth, physically shaped, fully deterministic property (eV/atom, more negative
is more stable) that is *not* one of the descriptors' own columns, so a surrogate has to
learn it. Elements absent from the fitting data have ``mu = 0``; formulas with an element
lacking an electronegativity or radius (noble gases) are refused.

The world's inputs are two string parameters, ``candidate`` (the list's id, only echoed) and
``formula``; its one output is ``formation_energy_ev_per_atom``. :func:`enumerate_oxides`
builds the charge-balanced ternary and quaternary oxides used by the screening benchmark
and the example list.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
from numpy.typing import NDArray
from pymatgen.core import Composition, Element

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = [
    "FormationModel",
    "FormulaEnergyWorld",
    "energies",
    "enumerate_oxides",
    "formation_model",
]

OUTPUT = "formation_energy_ev_per_atom"
RIDGE = 1e-3


def _element_data(symbol: str) -> tuple[float, float]:
    el = Element(symbol)
    chi, radius = el.X, el.atomic_radius
    if chi is None or not math.isfinite(float(chi)) or radius is None:
        raise ValueError(f"{symbol} has no electronegativity or atomic radius")
    return float(chi), float(radius)


class FormationModel:
    """The fitted truth ``E(x)`` of the module docstring (eV/atom).

    Args:
        mu: Fitted elemental term of each element symbol (eV/atom).
        coef: The pair coefficients ``(a, b, c)``.
    """

    def __init__(self, mu: Mapping[str, float], coef: Sequence[float]) -> None:
        self.mu = dict(mu)
        self.coef = tuple(float(v) for v in coef)

    @staticmethod
    def pair_terms(comp: Composition) -> tuple[float, float, float]:
        """The three pair sums of a composition (see the module docstring).

        Raises:
            ValueError: If an element lacks electronegativity or radius data.
        """
        fr = {el.symbol: comp.get_atomic_fraction(el) for el in comp.elements}
        data = {s: _element_data(s) for s in fr}
        p = [0.0, 0.0, 0.0]
        for a, b in itertools.combinations(sorted(fr), 2):
            w = fr[a] * fr[b]
            (ca, ra), (cb, rb) = data[a], data[b]
            p[0] += w * (ca - cb) ** 2
            p[1] += w * ((ra - rb) / (ra + rb)) ** 2
            p[2] += w * abs(ca - cb)
        return p[0], p[1], p[2]

    def energy(self, formula: str | Composition) -> float:
        """Formation energy per atom of a formula (eV/atom).

        Raises:
            ValueError: If the formula does not parse, is empty, or holds an element
                without data.
        """
        try:
            comp = Composition(formula) if isinstance(formula, str) else formula
        except Exception as exc:  # pymatgen raises several kinds for bad formulas
            raise ValueError(f"cannot parse formula {formula!r}: {exc}") from exc
        if comp.num_atoms <= 0:
            raise ValueError(f"empty formula {formula!r}")
        pairs = self.pair_terms(comp)
        base = sum(comp.get_atomic_fraction(el) * self.mu.get(el.symbol, 0.0) for el in comp)
        return float(base + sum(c * p for c, p in zip(self.coef, pairs, strict=True)))


@functools.cache
def formation_model() -> FormationModel:
    """The truth, fitted once per process to pymatgen's experimental enthalpies."""
    path = resources.files("pymatgen.analysis.compatibility") / "exp_compounds.json.gz"
    with path.open("rb") as fh:
        rows = json.loads(gzip.decompress(fh.read()))
    comps, ys = [], []
    for r in rows:
        comp = Composition(r["formula"])
        try:
            FormationModel.pair_terms(comp)
        except ValueError:
            continue
        comps.append(comp)
        ys.append(float(r["exp energy"]) / comp.num_atoms)
    symbols = sorted({el.symbol for c in comps for el in c.elements})
    col = {s: i for i, s in enumerate(symbols)}
    x = np.zeros((len(comps), len(symbols) + 3))
    for i, comp in enumerate(comps):
        for el in comp.elements:
            x[i, col[el.symbol]] = comp.get_atomic_fraction(el)
        x[i, len(symbols) :] = FormationModel.pair_terms(comp)
    y = np.asarray(ys)
    theta = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)
    rmse = float(np.sqrt(np.mean((x @ theta - y) ** 2)))
    logger.debug("formation model fitted to %d enthalpies, rmse %.3f eV/atom", len(y), rmse)
    coef = [float(v) for v in theta[len(symbols) :]]
    return FormationModel({s: float(theta[col[s]]) for s in symbols}, coef)


def _cations(model: FormationModel) -> dict[str, list[int]]:
    """Metals and metalloids with fitted data and their common positive oxidation states."""
    out: dict[str, list[int]] = {}
    for z in range(3, 84):
        el = Element.from_Z(z)
        if el.symbol not in model.mu or el.symbol == "O":
            continue
        if not (el.is_metal or el.is_metalloid):
            continue
        states = sorted(s for s in el.common_oxidation_states if s > 0)
        try:
            _element_data(el.symbol)
        except ValueError:
            continue
        if states:
            out[el.symbol] = states
    return out


def enumerate_oxides(n_max: int, seed: int = 0, max_count: int = 3) -> list[str]:
    """Charge-balanced ternary and quaternary oxides, as reduced formulas.

    Every pair of cations (metals and metalloids with fitted data, each in each of its
    common positive oxidation states) with counts ``1..max_count`` and the oxygen count
    that balances the charge gives the ternaries; triples with counts 1 or 2 give the
    quaternaries. Duplicates (the same reduced formula) are dropped; all ternaries are kept
    and quaternaries are drawn at random (``seed``) up to ``n_max`` formulas in all.

    Args:
        n_max: Most formulas returned.
        seed: Seed of the draw of quaternaries.
        max_count: Largest cation count of a ternary.

    Returns:
        Reduced formulas, ternaries first, in a fixed order.
    """
    cats = _cations(formation_model())
    options = [(s, q) for s, qs in sorted(cats.items()) for q in qs]

    def balanced(parts: Sequence[tuple[str, int, int]]) -> str | None:
        charge = sum(q * n for _, q, n in parts)
        if charge % 2:
            return None
        amounts: dict[str, float] = {}
        for s, _, n in parts:
            amounts[s] = amounts.get(s, 0) + n
        amounts["O"] = charge // 2
        return Composition(amounts).reduced_formula

    seen: dict[str, None] = {}
    for (a, qa), (b, qb) in itertools.combinations(options, 2):
        if a == b:
            continue
        for na, nb in itertools.product(range(1, max_count + 1), repeat=2):
            f = balanced([(a, qa, na), (b, qb, nb)])
            if f is not None:
                seen.setdefault(f)
    ternary = list(seen)
    if len(ternary) >= n_max:
        return ternary[:n_max]
    rng = np.random.default_rng(seed)
    quaternary: dict[str, None] = {}
    want = n_max - len(ternary)
    symbols = sorted(cats)
    while len(quaternary) < want:
        trio = rng.choice(len(symbols), 3, replace=False)
        parts = []
        for k in trio:
            s = symbols[int(k)]
            parts.append((s, int(rng.choice(cats[s])), int(rng.integers(1, 3))))
        f = balanced(parts)
        if f is not None and f not in seen:
            quaternary.setdefault(f)
    return ternary + list(quaternary)


def energies(formulas: Sequence[str]) -> NDArray[np.float64]:
    """The truth of each formula (eV/atom), NaN where it cannot be computed."""
    model = formation_model()
    out = np.full(len(formulas), np.nan)
    for i, f in enumerate(formulas):
        try:
            out[i] = model.energy(f)
        except ValueError:
            continue
    return out


@register_world("formula-energy")
class FormulaEnergyWorld(World):
    """Formation energy of a listed candidate's formula (see the module docstring).

    Args:
        id_parameter: Name of the input holding the candidate's id (only echoed).
        formula_parameter: Name of the input holding its formula.

    Raises:
        InvalidCampaignError: If the two names are equal or empty.
    """

    def __init__(
        self, *, id_parameter: str = "candidate", formula_parameter: str = "formula"
    ) -> None:
        if not id_parameter or not formula_parameter or id_parameter == formula_parameter:
            raise InvalidCampaignError(
                None, [("options.formula_parameter", "needs two distinct, non-empty names")]
            )
        self.id_parameter = id_parameter
        self.formula_parameter = formula_parameter
        self.model = formation_model()

    def parameters(self) -> list[ParameterLimit]:
        """The candidate id and its formula (any text)."""
        return [
            ParameterLimit(name=self.id_parameter, type="string"),
            ParameterLimit(name=self.formula_parameter, type="string"),
        ]

    def outputs(self) -> list[OutputSpec]:
        """``formation_energy_ev_per_atom``."""
        return [OutputSpec(name=OUTPUT, kind="scalar")]

    def evaluate_true(self, params: Mapping[str, object]) -> dict[str, float]:
        """The formation energy of ``params[formula_parameter]``.

        Raises:
            ParameterLimitError: If the formula is missing, not text, or cannot be computed.
        """
        name = self.formula_parameter
        formula = params.get(name)
        if not isinstance(formula, str):
            raise ParameterLimitError(name, formula, f"world {self.name!r}: a formula string")
        try:
            return {OUTPUT: self.model.energy(formula)}
        except ValueError as exc:
            raise ParameterLimitError(name, formula, f"world {self.name!r}: {exc}") from exc
