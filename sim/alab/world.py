"""The ``alab`` world: an A-Lab-style solid-state synthesis lab's hidden chemistry.

After the A-Lab (Szymanski et al., Nature 2023) and ARROWS3 (Szymanski et al., Nat. Commun.
2023): targets are made by heating a mixture of precursor powders, and what forms depends on
which precursors were chosen and how hot the furnace was. The hidden truth here is

* **a chemical system** (:data:`PHASES`): the alkaline-earth titanates and zirconates
  Ca/Sr/Ba-Ti/Zr-O, every phase a real crystal structure built from pymatgen's AFLOW
  prototypes (:mod:`sim.alab.phases`): the elements, the rock-salt monoxides, the
  CaC2-type (MoSi2 prototype) peroxides, rutile/anatase TiO2, baddeleyite/fluorite/rutile
  ZrO2, cubic and orthorhombic perovskites ABO3 and K2NiF4-type A2BO4;
* **energies**: CHGNet (:mod:`sim.materials.energy`) in ``"static"`` mode (the lowest of a
  five-point isotropic volume scan; no relaxation of cell shape or positions), cached in an
  SQLite file (``examples/data/alab/chgnet-energies.sqlite`` is committed, so nothing runs
  CHGNet unless a phase is added); each formula's lowest-energy polymorph is *the* phase;
* **a hull**: pymatgen's ``PhaseDiagram`` of those phases;
* **reactions**: the pairwise, ordered, Tammann-onset model of :mod:`sim.alab.reactions`.

Targets (:data:`TARGETS`, :meth:`AlabWorld.targets`) are the ternary phases on the hull that
some recipe of the shelf makes with at least 50 % yield; precursors
(:meth:`AlabWorld.precursors`) are the binary oxides, the peroxides and a few ternary
phases (:data:`PRECURSORS`). A recipe is ``(target, precursors, temperature_c)``;
:meth:`AlabWorld.balance` gives the precursor amounts per mole of target (pymatgen's
``Reaction``, O2 free to enter or leave), :meth:`AlabWorld.react` the noise-free weight
fractions of what forms. Each phase also has a hidden lattice strain (+-0.5 %, drawn from
the seed) that its diffraction pattern shows.

References:
    Szymanski, N. J. et al. (2023). An autonomous laboratory for the accelerated synthesis
    of novel materials. Nature 624, 86-91.
    Szymanski, N. J. et al. (2023). Autonomous and dynamic precursor selection for
    solid-state materials synthesis. Nature Communications 14, 6956.
    Deng, B. et al. (2023). CHGNet as a pretrained universal neural network potential for
    charge-informed atomistic modelling. Nature Machine Intelligence 5, 1031-1041.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.analysis.reaction_calculator import Reaction, ReactionError
from pymatgen.core import Composition, Structure

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from sim.alab.phases import build_phase
from sim.alab.reactions import GAS, ReactionModel, ReactionStep
from sim.materials.energy import StructureEnergy
from sim.noise import seed_from_name
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "PHASES",
    "PRECURSORS",
    "PRECURSORS_PATTERN",
    "TARGETS",
    "AlabWorld",
]

DEFAULT_CACHE_DIR = "examples/data/alab"
"""Where the committed energy cache and thermo file live (relative to the repository)."""

_A = ("Ca", "Sr", "Ba")
_B = ("Ti", "Zr")

PHASES: tuple[str, ...] = (
    "A_cF4_225_a:Ca",
    "A_cF4_225_a:Sr",
    "A_cI2_229_a:Ba",
    "A_hP2_194_c:Ti",
    "A_hP2_194_c:Zr",
    "A_mC4_12_i:O",
    *(f"AB_cF8_225_a_b:O,{a}" for a in _A),
    *(f"AB2_tI6_139_a_e:{a},O" for a in _A),
    "A2B_tP6_136_f_a:O,Ti",
    "A2B_tI12_141_e_a:O,Ti",
    "A2B_mP12_14_2e_e:O,Zr",
    "AB2_cF12_225_a_c:Zr,O",
    "A2B_tP6_136_f_a:O,Zr",
    *(f"AB3C_cP5_221_a_c_b:{a},O,{b}" for a in _A for b in _B),
    *(f"AB3C_oP20_62_c_cd_a:{a},O,{b}" for a in _A for b in _B),
    *(f"K2NiF4:{a},{b}" for a in _A for b in _B),
)
"""Material specs of every structure of the system (the world's phase list)."""

PRECURSORS: tuple[str, ...] = (
    "BaO",
    "BaO2",
    "CaO",
    "CaO2",
    "SrO",
    "SrO2",
    "TiO2",
    "ZrO2",
    "BaTiO3",
    "BaZrO3",
    "CaZrO3",
    "SrTiO3",
)
"""The precursors on the lab's shelf (reduced formulas)."""

TARGETS: tuple[str, ...] = (
    "Ba2TiO4",
    "Ba2ZrO4",
    "BaTiO3",
    "BaZrO3",
    "CaTiO3",
    "Sr2TiO4",
    "SrTiO3",
    "SrZrO3",
)
"""The example's targets: ternary phases on the hull that some recipe of the shelf makes
with a yield of at least 50 % (CaZrO3 is on the hull too, but its driving force from the
shelf's precursors is so small that no recipe gets past about 21 %)."""

PRECURSORS_PATTERN = r"[A-Za-z0-9]+(\+[A-Za-z0-9]+)*"
"""Regular expression of a ``precursors`` value: formulas joined by ``+``."""

TEMPERATURE_RANGE_C = (300.0, 1400.0)
"""Furnace temperatures the world (and its instruments) accept, degC."""

STRAIN_MAX = 0.005
"""Largest hidden lattice strain of a phase (fraction)."""


def _problem(key: str, message: str) -> InvalidCampaignError:
    return InvalidCampaignError(None, [(f"options.{key}", message)])


def split_precursors(precursors: object) -> list[str]:
    """The reduced formulas of a ``precursors`` value (``"SrO+TiO2"``), sorted.

    Raises:
        ParameterLimitError: If the value is not formulas joined by ``+`` or repeats one.
    """
    if not isinstance(precursors, str) or re.fullmatch(PRECURSORS_PATTERN, precursors) is None:
        raise ParameterLimitError("precursors", precursors, "formulas joined by '+'")
    try:
        names = [Composition(p).reduced_formula for p in precursors.split("+")]
    except (ValueError, KeyError) as exc:
        raise ParameterLimitError("precursors", precursors, f"not formulas: {exc}") from exc
    if len(set(names)) != len(names):
        raise ParameterLimitError("precursors", precursors, "a precursor is given twice")
    return sorted(names)


@register_world("alab")
class AlabWorld(World):
    """Ca/Sr/Ba-Ti/Zr-O solid-state synthesis with a hidden reaction model.

    Args:
        cache_dir: Directory of the CHGNet energy cache (``None``: memory only, computes
            every energy). Relative paths are resolved against the working directory.
        seed: Seed of the hidden kinetics (melting points, Tammann fractions) and strains.
        energy: A ready energy model (for tests); overrides ``cache_dir``.

    Raises:
        InvalidCampaignError: If an option is invalid (key ``options.<key>``).
    """

    def __init__(self, *, cache_dir: str | None = None, seed: int = 0, energy: Any = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _problem("seed", f"expected an integer >= 0, got {seed!r}")
        if cache_dir is not None and not isinstance(cache_dir, str):
            raise _problem("cache_dir", f"expected a path, got {cache_dir!r}")
        self.seed = seed
        self.energy = (
            energy
            if energy is not None
            else StructureEnergy(
                mode="static", cache_dir=None if cache_dir is None else Path(cache_dir)
            )
        )
        self._lock = threading.Lock()
        self._ready = False
        self._entries: dict[str, PDEntry] = {}
        self._structures: dict[str, Structure] = {}
        self._hull: PhaseDiagram | None = None
        self._model: ReactionModel | None = None

    @classmethod
    def default(cls, cache_dir: str = DEFAULT_CACHE_DIR, seed: int = 0) -> AlabWorld:
        """The world of the example campaign, energies from the committed cache."""
        return cls(cache_dir=cache_dir, seed=seed)

    # -- thermodynamics ---------------------------------------------------------------

    def _load(self) -> None:
        with self._lock:
            if self._ready:
                return
            for spec in PHASES:
                structure = build_phase(spec)
                result = self.energy.energy(structure)
                formula = structure.composition.reduced_formula
                known = self._entries.get(formula)
                if known is not None and known.energy_per_atom <= result.energy_per_atom:
                    continue
                comp = result.structure.composition
                self._entries[formula] = PDEntry(
                    comp, result.energy_per_atom * comp.num_atoms, name=formula
                )
                self._structures[formula] = result.structure
            self._hull = PhaseDiagram(list(self._entries.values()))
            energies = {f: e.energy_per_atom for f, e in self._entries.items()}
            self._model = ReactionModel(self._hull, energies, seed=self.seed)
            self._ready = True
            logger.info("alab world: %d phases, hull built", len(self._entries))

    @property
    def hull(self) -> PhaseDiagram:
        """The phase diagram of the system's phases (lowest polymorph of each formula)."""
        self._load()
        assert self._hull is not None
        return self._hull

    @property
    def model(self) -> ReactionModel:
        """The hidden reaction model."""
        self._load()
        assert self._model is not None
        return self._model

    def phases(self) -> list[str]:
        """Every solid compound of the system (reduced formulas, sorted; no elements)."""
        self._load()
        return sorted(f for f, e in self._entries.items() if len(e.composition.elements) > 1)

    def structure(self, formula: str) -> Structure:
        """The structure of a phase (its lowest-energy polymorph, as scored)."""
        self._load()
        return self._structures[formula].copy()

    def e_above_hull(self, formula: str) -> float:
        """A phase's energy above the hull, eV/atom."""
        return float(self.hull.get_e_above_hull(self._entries[formula]) or 0.0)

    def strain(self, formula: str) -> float:
        """A phase's hidden isotropic lattice strain (fraction, within +-0.5 %)."""
        rng = np.random.default_rng(seed_from_name(f"alab/{self.seed}/strain/{formula}"))
        return float(rng.uniform(-STRAIN_MAX, STRAIN_MAX))

    def thermo_entries(self) -> list[dict[str, Any]]:
        """Every phase's energy (elements included), as the thermo file lists them.

        Returns:
            ``{"formula", "energy_per_atom" (eV/atom), "structure" (pymatgen dict)}`` per
            phase, sorted by formula.
        """
        self._load()
        return [
            {
                "formula": f,
                "energy_per_atom": float(self._entries[f].energy_per_atom),
                "structure": self._structures[f].as_dict(),
            }
            for f in sorted(self._entries)
        ]

    # -- recipes ----------------------------------------------------------------------

    def targets(self) -> list[str]:
        """The example's targets (:data:`TARGETS`): on the hull and reachable, sorted."""
        return sorted(TARGETS)

    def stable_compounds(self) -> list[str]:
        """Every ternary or quaternary phase on the hull (targets and CaZrO3), sorted."""
        return [
            f
            for f in self.phases()
            if len(Composition(f).elements) >= 3 and self.e_above_hull(f) < 1e-9
        ]

    def precursors(self) -> list[str]:
        """The precursors available (reduced formulas, in shelf order)."""
        return list(PRECURSORS)

    def recipes(self, target: str, sizes: Sequence[int] = (1, 2, 3)) -> list[str]:
        """Every balanced recipe of ``target`` from the shelf: precursor sets of ``sizes``
        precursors (``"A+B"``, sorted) that :meth:`balance` can balance."""
        out = []
        for k in sizes:
            for combo in itertools.combinations(self.precursors(), k):
                p = "+".join(sorted(combo))
                if self.balance(target, p) is not None:
                    out.append(p)
        return out

    def balance(self, target: str, precursors: str) -> dict[str, float] | None:
        """Precursor amounts that make one mole of ``target``, O2 free to come and go.

        Args:
            target: Reduced formula of a phase of the world.
            precursors: Available precursor formulas joined by ``+``.

        Returns:
            Moles of each precursor per mole of target, or ``None`` when the precursors
            cannot make the target: an element is missing or extra, a precursor would not be
            consumed, the amounts are not unique (more precursors than independent
            cations), or a precursor or the target is not one of the world's.

        Raises:
            ParameterLimitError: If ``precursors`` is malformed.
        """
        names = split_precursors(precursors)
        self._load()
        if (
            target not in self._entries
            or target in names
            or any(n not in PRECURSORS for n in names)
        ):
            return None
        comps = [Composition(n) for n in names]
        cations = sorted({el.symbol for c in comps for el in c.elements} - {"O"})
        matrix = np.array([[c[el] for c in comps] for el in cations])
        if matrix.size == 0 or np.linalg.matrix_rank(matrix) < len(comps):
            return None
        try:
            reaction = Reaction([*comps, Composition(GAS)], [Composition(target)])
        except ReactionError:
            return None
        amounts = {n: -float(reaction.get_coeff(c)) for n, c in zip(names, comps, strict=True)}
        product = float(reaction.get_coeff(Composition(target)))
        if product <= 1e-9 or any(v <= 1e-9 for v in amounts.values()):
            return None
        return {n: v / product for n, v in amounts.items()}

    def _start(self, target: object, precursors: object) -> tuple[str, dict[str, float]]:
        if not isinstance(target, str) or target not in self.phases():
            raise ParameterLimitError("target", target, "a phase of the alab world")
        amounts = self.balance(target, str(precursors))
        if amounts is None:
            raise ParameterLimitError(
                "precursors", precursors, f"cannot be balanced to {target} with O2"
            )
        atoms = {n: x * Composition(n).num_atoms for n, x in amounts.items()}
        return target, atoms

    def reaction_path(
        self, target: str, precursors: str, temperature_c: float
    ) -> tuple[dict[str, float], list[ReactionStep]]:
        """The products (atoms per formula unit of target) and the reactions, in order.

        Raises:
            ParameterLimitError: If the target, precursors or temperature are not valid.
        """
        if isinstance(temperature_c, bool) or not isinstance(temperature_c, (int, float)):
            raise ParameterLimitError("temperature_c", temperature_c, "type number")
        _, atoms = self._start(target, precursors)
        return self.model.heat(atoms, float(temperature_c))

    def react(self, target: str, precursors: str, temperature_c: float) -> dict[str, float]:
        """The noise-free weight fractions of what a recipe makes.

        Args:
            target: Reduced formula of the target.
            precursors: Precursor formulas joined by ``+``.
            temperature_c: Furnace temperature, degC.

        Returns:
            Weight fraction of each solid product (sums to 1).

        Raises:
            ParameterLimitError: If the target is not a phase of the world, the precursors
                cannot make it, or the temperature is not a number.
        """
        atoms, _ = self.reaction_path(target, precursors, temperature_c)
        mass = {f: n / Composition(f).num_atoms * Composition(f).weight for f, n in atoms.items()}
        total = float(sum(mass.values()))
        return {f: float(m) / total for f, m in sorted(mass.items())}

    # -- the World contract -----------------------------------------------------------

    def parameters(self) -> list[ParameterLimit]:
        """``target`` and ``precursors`` (strings) and ``temperature_c`` (degC)."""
        lo, hi = TEMPERATURE_RANGE_C
        return [
            ParameterLimit(name="target", type="string"),
            ParameterLimit(name="precursors", type="string"),
            ParameterLimit(name="temperature_c", minimum=lo, maximum=hi, unit="degC"),
        ]

    def outputs(self) -> list[OutputSpec]:
        """``target_yield`` and one ``wf_<formula>`` per phase (weight fractions)."""
        return [
            OutputSpec(name="target_yield", unit="fraction"),
            *(OutputSpec(name=f"wf_{f}", unit="fraction") for f in self.phases()),
        ]

    def evaluate_true(self, params: Mapping[str, Any]) -> dict[str, float]:
        """The true target weight fraction and every phase's weight fraction."""
        target, precursors, temperature_c = (
            params.get(k) for k in ("target", "precursors", "temperature_c")
        )
        fractions = self.react(target, precursors, temperature_c)  # type: ignore[arg-type]
        out = {"target_yield": fractions.get(str(target), 0.0)}
        out.update({f"wf_{f}": fractions.get(f, 0.0) for f in self.phases()})
        return out
