"""The discovery planner's screening surrogate: simple descriptors and a GP.

One small class, :class:`CompositionScreen`, turns material specs into descriptor rows and
fits a GP to measured values, so that a general surrogate (``surrogates.make_surrogate``
with a Magpie descriptor) can replace it in one place. The descriptors:

* the atomic fraction of each element of the system;
* fraction-weighted mean and standard deviation of the Pauling electronegativity and the
  atomic radius (the kind of statistics Magpie takes, Ward et al. 2016);
* of the prototype: its crystal family (one-hot from the Pearson symbol), space-group
  number / 230 and sites per cell / 24;
* the Ewald energy per atom of the structure with the elements' oxidation states (from
  the charge-balance check of :mod:`planners.proposers`) as point charges, a classical
  measure of how well the ionic arrangement suits the charges (Ewald 1921; matminer's
  ``EwaldEnergy`` featurizer, Ward et al. 2018);
* the log10 data-mined probability of the material's ions replacing the prototype's own
  ions (Hautier et al. 2011), /8;
* the *site ordering*: the Pearson correlation between the electronegativities of the
  prototype's original elements and those of the elements put on their sites (1 when
  cations replace cations and anions anions in the same order; the chemistry behind
  substitution rules, Hautier et al. 2011).

The GP is BoTorch's ``SingleTaskGP`` (:func:`surrogates.gp.fit_single_task_gp`), with
inputs normalised to the descriptor ranges of the measured and candidate materials.

References:
    Ward, L. et al. (2016). A general-purpose machine learning framework for predicting
    properties of inorganic materials. npj Comput. Mater. 2, 16028.
    Ewald, P. P. (1921). Die Berechnung optischer und elektrostatischer Gitterpotentiale.
    Annalen der Physik 369, 253-287.
    Ward, L. et al. (2018). Matminer: An open source toolkit for materials data mining.
    Computational Materials Science 152, 60-69.
    Hautier, G. et al. (2011). Data mined ionic substitutions for the discovery of new
    compounds. Inorganic Chemistry 50, 656-663.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from botorch.models import SingleTaskGP
from pymatgen.core import Element

from models.materials import build_structure, parse_material, prototype_library
from planners.proposers import charge_balanced, substitution_log_probability
from surrogates.gp import fit_single_task_gp

__all__ = ["CompositionScreen"]

_FAMILIES = "amothc"
"""Pearson-symbol crystal families: triclinic, monoclinic, orthorhombic, tetragonal,
hexagonal/trigonal, cubic."""


@functools.lru_cache(maxsize=256)
def _element(symbol: str) -> tuple[float, float]:
    el = Element(symbol)
    x = float(el.X) if not math.isnan(float(el.X)) else 2.0
    r = float(el.atomic_radius or el.atomic_radius_calculated or 1.5)
    return x, r


def _ewald_per_atom(material: str) -> float:
    """Ewald energy per atom (eV/atom, divided by 10) of the charge-decorated structure; 0
    when no charge-balanced assignment exists."""
    from pymatgen.analysis.ewald import EwaldSummation

    structure = build_structure(material)
    states = charge_balanced(structure.composition)
    if states is None or all(q == 0 for q in states.values()):
        return 0.0
    structure.add_oxidation_state_by_element({k: float(v) for k, v in states.items()})
    return float(EwaldSummation(structure).total_energy) / len(structure) / 10.0


class CompositionScreen:
    """Descriptors of material specs and a GP fitted on them.

    Args:
        elements: The chemical system (fixes the fraction columns).
    """

    def __init__(self, elements: Sequence[str]) -> None:
        self.elements = tuple(elements)
        self._bounds: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        """Number of descriptor columns."""
        return len(self.elements) + 4 + len(_FAMILIES) + 5

    @functools.lru_cache(maxsize=100_000)  # noqa: B019 - one screen per planner, bounded
    def _row(self, material: str) -> tuple[float, ...]:
        spec = parse_material(material)
        proto = prototype_library()[spec.prototype]
        comp = spec.composition
        fr = [comp.get_atomic_fraction(Element(e)) for e in self.elements]
        w = np.array([comp.get_atomic_fraction(el) for el in comp.elements])
        xs = np.array([_element(el.symbol)[0] for el in comp.elements])
        rs = np.array([_element(el.symbol)[1] for el in comp.elements])
        mx, mr = float(w @ xs), float(w @ rs)
        sx = math.sqrt(float(w @ (xs - mx) ** 2))
        sr = math.sqrt(float(w @ (rs - mr) ** 2))
        pearson = spec.prototype.split("_")[1]
        family = [1.0 if pearson[0] == f else 0.0 for f in _FAMILIES]
        sg = float(spec.prototype.split("_")[2]) / 230.0
        old = np.array([_element(s)[0] for s in proto.species])
        new = np.array([_element(s)[0] for s in spec.elements])
        if len(old) > 1 and old.std() > 0 and new.std() > 0:
            order = float(np.corrcoef(old, new)[0, 1])
        else:
            order = 1.0
        ewald = _ewald_per_atom(material)
        logp = substitution_log_probability(material) / 8.0
        return (*fr, mx, sx, mr, sr, *family, sg, proto.n_sites / 24.0, order, ewald, logp)

    def features(self, materials: Sequence[str]) -> torch.Tensor:
        """Descriptor rows of materials.

        Args:
            materials: Material specs.

        Returns:
            ``n x dim`` double tensor.

        Raises:
            ValueError: If a material is not a valid spec.
        """
        rows = [self._row(m) for m in materials]
        return torch.tensor(rows, dtype=torch.double).reshape(len(rows), self.dim)

    def fit(
        self,
        materials: Sequence[str],
        values: Sequence[float],
        domain: Sequence[str] = (),
        variances: Sequence[float] | None = None,
    ) -> SingleTaskGP:
        """Fit a GP to measured values (larger is better; pass utilities).

        Args:
            materials: The measured materials.
            values: One value each.
            domain: Candidates the model will be asked about (they widen the input
                normalisation's bounds).
            variances: Known noise variance of each value (``None``: inferred).

        Returns:
            The fitted GP (``n x dim`` inputs, one output).
        """
        x = self.features(materials)
        allx = torch.cat([x, self.features(domain)]) if domain else x
        lo, hi = allx.min(dim=0).values, allx.max(dim=0).values
        hi = torch.where(hi - lo < 1e-6, lo + 1.0, hi)
        y = torch.tensor(values, dtype=torch.double).unsqueeze(-1)
        yvar = None if variances is None else torch.tensor(variances, dtype=torch.double)
        return fit_single_task_gp(
            x,
            y,
            bounds=torch.stack([lo, hi]),
            device="cpu",
            train_Yvar=None if yvar is None else yvar.unsqueeze(-1),
        )
