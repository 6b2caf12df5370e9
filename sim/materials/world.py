"""The ``materials`` world: does a proposed material form, and what are its properties?

The hidden truth of a simulated materials lab (after the A-Lab's decision rule, Szymanski et
al. 2023, and GNoME's stability criterion, Merchant et al. 2023): a material forms when its
energy above the convex hull of the chemical system is below ``stable_threshold_ev``. Every
energy is a CHGNet energy (:mod:`sim.materials.energy`). The hull is pymatgen's
``PhaseDiagram`` over the *reference phases*:

* each element in its own AFLOW prototypes (the element's ground-state structures in the
  library, e.g. alpha-O2 for oxygen) and in fcc, bcc, hcp and diamond;
* every binary of two of the elements in a fixed list of common binary prototypes
  (rock salt, CsCl, zinc blende, wurtzite, NiAs, fluorite, rutile, anatase, corundum,
  Cu3Au, ReO3), both ways round.

A candidate (any material spec, :mod:`models.materials`, whose elements lie in the system)
is built, its CHGNet energy computed, and its energy above that hull is
``PhaseDiagram.get_decomp_and_e_above_hull(..., allow_negative=True)``: negative when it
lies below the hull of the references (a new stable phase). If it does not form, what forms
is its decomposition on the hull, with the phase fractions pymatgen gives.

References:
    Merchant, A. et al. (2023). Scaling deep learning for materials discovery. Nature 624,
    80-85.
    Szymanski, N. J. et al. (2023). An autonomous laboratory for the accelerated synthesis
    of novel materials. Nature 624, 86-91.
    Ong, S. P. et al. (2008). Li-Fe-P-O2 phase diagram from first principles calculations.
    Chem. Mater. 20, 1798-1807 (the convex-hull construction pymatgen implements).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Element, Structure

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from models.materials import (
    MaterialSpec,
    build_structure,
    parse_material,
    prototype_library,
)
from sim.materials.energy import DEFAULT_SCAN, StructureEnergy
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = ["Assessment", "MaterialsWorld"]

UNARY_REFERENCES = ("A_cF4_225_a", "A_cI2_229_a", "A_hP2_194_c", "A_cF8_227_a")
"""fcc, bcc, hcp and diamond: every element is tried in these."""

BINARY_REFERENCES = (
    "AB_cF8_225_a_b",  # rock salt
    "AB_cP2_221_b_a",  # CsCl
    "AB_cF8_216_c_a",  # zinc blende
    "AB_hP4_186_b_b",  # wurtzite
    "AB_hP4_194_c_a",  # NiAs
    "AB2_cF12_225_a_c",  # fluorite / anti-fluorite
    "A2B_tP6_136_f_a",  # rutile
    "A2B_tI12_141_e_a",  # anatase
    "A2B3_hR10_167_c_e",  # corundum
    "AB3_cP4_221_a_c",  # Cu3Au
    "A3B_cP4_221_d_a",  # ReO3
)
"""Binary prototypes every pair of the system's elements is put into, both ways round."""

OUTPUTS = ("e_above_hull_ev_per_atom", "formation_energy_ev_per_atom")
"""The world's scalar outputs (eV/atom)."""


@dataclass(frozen=True)
class Assessment:
    """The truth about one material.

    Attributes:
        material: The material spec's text.
        formula: Reduced formula.
        structure: The structure whose energy counts (scaled or relaxed).
        energy_per_atom: CHGNet energy, eV/atom.
        formation_energy: Formation energy from the elemental references, eV/atom.
        e_above_hull: Energy above the reference hull, eV/atom (negative: below it).
        forms: Whether ``e_above_hull < stable_threshold_ev`` (noise-free).
        decomposition: What forms instead, ``(formula, phase fraction)`` pairs (the material
            itself when it forms).
    """

    material: str
    formula: str
    structure: Structure
    energy_per_atom: float
    formation_energy: float
    e_above_hull: float
    forms: bool
    decomposition: tuple[tuple[str, float], ...]


def _problem(key: str, message: str) -> InvalidCampaignError:
    return InvalidCampaignError(None, [(f"options.{key}", message)])


@register_world("materials")
class MaterialsWorld(World):
    """A small chemical system whose truth is CHGNet energies against a reference hull.

    Args:
        elements: The chemical system, 2 to 4 element symbols (e.g. ``["Sr", "Ti", "O"]``).
        stable_threshold_ev: A material forms when its energy above hull is below this
            (eV/atom).
        mode: Energies ``"static"`` (volume scan) or ``"relax"`` (brief FIRE relaxation).
        relax_steps: FIRE steps in ``"relax"`` mode.
        volume_scan: Volume factors of the static scan.
        cache_dir: Directory of the on-disk energy cache (``None``: memory only). Relative
            paths are resolved against the working directory.
        energy: A ready energy model (for tests); overrides ``mode``, ``volume_scan``,
            ``relax_steps`` and ``cache_dir``.

    Raises:
        InvalidCampaignError: If an option is invalid (key ``options.<key>``).
    """

    def __init__(
        self,
        *,
        elements: Sequence[str],
        stable_threshold_ev: float = 0.0,
        mode: Literal["static", "relax"] = "static",
        relax_steps: int = 20,
        volume_scan: Sequence[float] = DEFAULT_SCAN,
        cache_dir: str | None = None,
        energy: Any = None,
    ) -> None:
        if (
            isinstance(elements, str)
            or not 2 <= len(elements) <= 4
            or not all(isinstance(e, str) and Element.is_valid_symbol(e) for e in elements)
            or len(set(elements)) != len(elements)
        ):
            raise _problem("elements", f"expected 2 to 4 distinct element symbols: {elements!r}")
        if not isinstance(stable_threshold_ev, (int, float)) or not -1 <= stable_threshold_ev <= 1:
            raise _problem("stable_threshold_ev", "expected a number in [-1, 1] eV/atom")
        self.elements = tuple(elements)
        self.stable_threshold_ev = float(stable_threshold_ev)
        if energy is None:
            try:
                energy = StructureEnergy(
                    mode=mode,
                    volume_scan=volume_scan,
                    relax_steps=relax_steps,
                    cache_dir=None if cache_dir is None else Path(cache_dir),
                )
            except ValueError as exc:
                key = str(exc).partition(":")[0]
                raise _problem(key, str(exc)) from exc
        self.energy = energy
        self._hull: PhaseDiagram | None = None
        self._elemental: dict[str, float] = {}
        self._lock = threading.Lock()

    def parameters(self) -> list[ParameterLimit]:
        """One string input, ``material`` (a material spec)."""
        return [ParameterLimit(name="material", type="string")]

    def outputs(self) -> list[OutputSpec]:
        """Energy above hull and formation energy, eV/atom."""
        return [OutputSpec(name=n, kind="scalar", unit="eV/atom") for n in OUTPUTS]

    def reference_specs(self) -> list[MaterialSpec]:
        """The reference phases (see the module docstring), in a fixed order."""
        library = prototype_library()
        specs: list[MaterialSpec] = []
        for el in self.elements:
            own = [p.label for p in library.values() if p.species == (el,)]
            for label in dict.fromkeys([*UNARY_REFERENCES, *own]):
                if label in library:
                    specs.append(MaterialSpec(label, (el,)))
        for a, b in itertools.permutations(self.elements, 2):
            specs.extend(MaterialSpec(label, (a, b)) for label in BINARY_REFERENCES)
        return specs

    @property
    def hull(self) -> PhaseDiagram:
        """The phase diagram of the reference phases (computed on first use)."""
        with self._lock:
            if self._hull is None:
                entries = []
                for spec in self.reference_specs():
                    s = build_structure(spec)
                    e = self.energy.energy(s).energy_per_atom
                    entries.append(PDEntry(s.composition, e * len(s), name=str(spec)))
                self._hull = PhaseDiagram(entries)
                self._elemental = {
                    el.symbol: float(self._hull.el_refs[el].energy_per_atom)
                    for el in self._hull.elements
                }
                logger.info("materials world %s: hull of %d phases", self.elements, len(entries))
            return self._hull

    def spec(self, material: object) -> MaterialSpec:
        """Parse and check a material against the chemical system.

        Raises:
            ParameterLimitError: If it is not a valid spec or has an element outside the
                system.
        """
        try:
            spec = parse_material(material)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ParameterLimitError("material", material, str(exc)) from exc
        outside = sorted(set(spec.elements) - set(self.elements))
        if outside:
            raise ParameterLimitError(
                "material", material, f"elements {outside} are outside {'-'.join(self.elements)}"
            )
        return spec

    def assess(self, material: object) -> Assessment:
        """The noise-free truth about one material.

        Args:
            material: A material spec (text) within the chemical system.

        Raises:
            ParameterLimitError: If the material is not a valid spec of the system.
        """
        spec = self.spec(material)
        result = self.energy.energy(build_structure(spec))
        comp = result.structure.composition
        hull = self.hull
        entry = PDEntry(comp, result.energy_per_atom * comp.num_atoms, name=str(spec))
        decomp, e_raw = hull.get_decomp_and_e_above_hull(entry, allow_negative=True)
        if decomp is None or e_raw is None:  # pragma: no cover - the system's own elements
            raise ParameterLimitError("material", material, "no decomposition on the hull")
        e_hull = float(e_raw)
        ref = sum(self._elemental[el.symbol] * comp.get_atomic_fraction(el) for el in comp)
        forms = float(e_hull) < self.stable_threshold_ev
        phases = (
            ((comp.reduced_formula, 1.0),)
            if forms
            else tuple(
                sorted(
                    ((d.composition.reduced_formula, float(f)) for d, f in decomp.items()),
                    key=lambda t: -t[1],
                )
            )
        )
        return Assessment(
            material=str(spec),
            formula=comp.reduced_formula,
            structure=result.structure,
            energy_per_atom=result.energy_per_atom,
            formation_energy=result.energy_per_atom - ref,
            e_above_hull=float(e_hull),
            forms=forms,
            decomposition=phases,
        )

    def phase_structure(self, formula: str) -> Structure:
        """The structure of a hull phase of the given reduced formula."""
        best = min(
            (e for e in self.hull.stable_entries if e.composition.reduced_formula == formula),
            key=lambda e: e.energy_per_atom,
        )
        result = self.energy.energy(build_structure(str(getattr(best, "name", ""))))
        return result.structure

    def evaluate_true(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Energy above hull and formation energy of ``params["material"]`` (eV/atom)."""
        a = self.assess(params.get("material"))
        return {OUTPUTS[0]: a.e_above_hull, OUTPUTS[1]: a.formation_energy}
