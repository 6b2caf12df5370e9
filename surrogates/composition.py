"""Composition descriptors: element fractions, Magpie statistics, oxidation-state features.

* ``fractions`` — the "bag of atoms": the atomic fraction of each element H..Pu.
* ``magpie`` — Ward et al., "A general-purpose machine learning framework for predicting
  properties of inorganic materials", npj Comput. Mater. 2, 16028 (2016): minimum,
  maximum, range, mean, mean absolute deviation and mode of 22 elemental properties
  (electronegativity, covalent radius, group, row, valence electrons by orbital, melting
  point, ...), computed by matminer's ``ElementProperty.from_preset("magpie")`` from the
  Magpie element tables that ship in matminer's wheel; with ``full = true`` (default) also
  the paper's stoichiometric p-norms, valence-orbital fractions and ionic-character
  attributes (matminer ``Stoichiometry``, ``ValenceOrbital``, ``IonProperty``).
* ``oxidation`` — oxidation states guessed by pymatgen's ``Composition.oxi_state_guesses``
  (charge balance weighted by ICSD occurrence), summarised by matminer's
  ``OxidationStates`` (min, max, range, spread), plus whether a charge-balanced assignment
  exists and matminer's ionic-character attributes.

matminer is used rather than re-deriving these because it is the reference implementation
of the Magpie attribute set, with its element data; pymatgen supplies the element objects.
All composition descriptors depend on the composition only, normalised to fractions, so they
are invariant to the order of sites, translations and supercells of a structure, and to
scaling a formula (Fe2O3 and Fe4O6 give the same row).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from pymatgen.core import Element

from surrogates.descriptors import (
    Descriptor,
    DescriptorOptions,
    Material,
    as_composition,
    register_descriptor,
)

logger = logging.getLogger(__name__)

__all__ = ["ElementFractions", "MagpieDescriptor", "OxidationStateDescriptor"]

_INVARIANCES = ("site_permutation", "translation", "supercell", "formula_scaling")


@register_descriptor("fractions")
class ElementFractions(Descriptor):
    """Atomic fraction of each element with atomic number 1..``max_z`` ("bag of atoms").

    Invariant to site permutation, translation, supercells and formula scaling (the row
    depends on the normalised composition only); rows sum to one.

    Options:
        max_z: Highest atomic number given a column (default 94, Pu).
    """

    invariances: ClassVar[tuple[str, ...]] = _INVARIANCES

    class Options(DescriptorOptions):
        max_z: int = Field(94, ge=1, le=118)

    options: Options

    def feature_labels(self) -> list[str]:
        """Element symbols ``H``, ``He``, ... in atomic-number order."""
        return [Element.from_Z(z).symbol for z in range(1, self.options.max_z + 1)]

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """Element fractions of one material.

        Raises:
            ValueError: If it contains an element beyond ``max_z`` (or is empty).
        """
        comp = as_composition(material)
        if comp.num_atoms <= 0:
            raise ValueError("empty composition")
        row = np.zeros(self.options.max_z, dtype=np.float64)
        for el, amount in comp.element_composition.items():
            z = int(el.Z)
            if z > self.options.max_z:
                raise ValueError(
                    f"{el} (Z={z}) lies beyond descriptor.options.max_z={self.options.max_z}"
                )
            row[z - 1] += amount
        return row / row.sum()


@register_descriptor("magpie")
class MagpieDescriptor(Descriptor):
    """Magpie composition attributes (Ward et al. 2016) via matminer.

    Invariant to site permutation, translation, supercells and formula scaling.

    Options:
        full: Add stoichiometric, valence-orbital and ionic-character attributes to the
            132 elemental-property statistics (Ward et al.'s full set, 149 features).
    """

    invariances: ClassVar[tuple[str, ...]] = _INVARIANCES

    class Options(DescriptorOptions):
        full: bool = True

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from matminer.featurizers.composition import (
            ElementProperty,
            IonProperty,
            Stoichiometry,
            ValenceOrbital,
        )

        self._featurizers: list[Any] = [ElementProperty.from_preset("magpie")]
        if self.options.full:
            self._featurizers += [Stoichiometry(), ValenceOrbital(), IonProperty(fast=True)]
        self._labels = [label for f in self._featurizers for label in f.feature_labels()]

    def feature_labels(self) -> list[str]:
        """matminer's labels, e.g. ``"MagpieData mean Electronegativity"``."""
        return list(self._labels)

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """Magpie attributes of one material.

        Raises:
            ValueError: If an element lacks Magpie data (a NaN feature).
        """
        comp = as_composition(material).element_composition
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matminer warns about pymatgen's oxidation guesses
            values = [v for f in self._featurizers for v in f.featurize(comp)]
        row = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(row)):
            bad = [self._labels[i] for i in np.flatnonzero(~np.isfinite(row))[:3]]
            raise ValueError(f"{comp.reduced_formula}: no Magpie data for {bad}")
        return row


@register_descriptor("oxidation")
class OxidationStateDescriptor(Descriptor):
    """Features of the most probable charge-balanced oxidation states (pymatgen, matminer).

    Columns: ``charge balanced`` (1 if pymatgen finds an assignment; else 0, and the
    oxidation-state columns are 0, as for formulas with non-integer amounts), the minimum,
    maximum, range and standard deviation of the oxidation states (matminer
    ``OxidationStates``), and the maximum and mean ionic character (matminer
    ``IonProperty``). Invariant to site permutation, translation, supercells and formula
    scaling.

    Options:
        max_sites: Largest formula (in atoms) the oxidation-state search expands; larger
            ones are reduced first (pymatgen's ``max_sites``, negative = reduce).
    """

    invariances: ClassVar[tuple[str, ...]] = _INVARIANCES

    class Options(DescriptorOptions):
        max_sites: int = -50

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from matminer.featurizers.composition import IonProperty, OxidationStates

        self._oxi = OxidationStates()
        self._ion = IonProperty(fast=True)
        self._ion_cols = [1, 2]  # max and avg ionic character ("compound possible" is ours)

    def feature_labels(self) -> list[str]:
        """``charge balanced``, the oxidation-state statistics, the ionic characters."""
        ion = self._ion.feature_labels()
        return ["charge balanced", *self._oxi.feature_labels(), *[ion[i] for i in self._ion_cols]]

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """Oxidation-state features of one material."""
        comp = as_composition(material).element_composition
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                guesses = comp.oxi_state_guesses(max_sites=self.options.max_sites)
            except ValueError:  # pymatgen balances integer formulas only
                guesses = ()
            ion = self._ion.featurize(comp)
        if guesses:
            decorated = comp.add_charges_from_oxi_state_guesses(
                oxi_states_override=None, max_sites=self.options.max_sites
            )
            oxi = [float(v) for v in self._oxi.featurize(decorated)]
            balanced = 1.0
        else:
            oxi, balanced = [0.0] * 4, 0.0
        return np.asarray([balanced, *oxi, *[ion[i] for i in self._ion_cols]], dtype=np.float64)
