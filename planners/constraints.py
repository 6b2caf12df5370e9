"""Linear and mixture constraints of a search space, in the form BoTorch takes them.

A :class:`~models.constraints.LinearConstraint` or
:class:`~models.constraints.MixtureConstraint` is linear in the values of continuous,
linear-scale parameters, so it stays linear in the model encoding of
:mod:`planners.encoding` (``x = lower + u * (upper - lower)``). This module rewrites each one
as BoTorch ``(indices, coefficients, rhs)`` triples (``sum coefficients * X[..., indices] >=
rhs`` for inequalities, ``==`` for equalities) that ``optimize_acqf`` and
``get_polytope_samples`` accept, and samples points of the constrained polytope with
BoTorch's hit-and-run sampler (Smith, "Efficient Monte Carlo Procedures for Generating
Points Uniformly Distributed over Bounded Regions", Operations Research 1984).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from botorch.utils.sampling import get_polytope_samples
from torch import Tensor

from models.params import ContinuousParameter
from planners.encoding import SpaceEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "LinearConstraints",
    "constrained_columns",
    "linear_constraints",
    "polytope_unit_samples",
]

Triple = tuple[Tensor, Tensor, float]


@dataclass(frozen=True)
class LinearConstraints:
    """A space's constraints as BoTorch triples.

    Attributes:
        inequality: ``sum c * X[..., idx] >= rhs`` triples.
        equality: ``sum c * X[..., idx] == rhs`` triples.
    """

    inequality: list[Triple]
    equality: list[Triple]

    def __bool__(self) -> bool:
        return bool(self.inequality or self.equality)


def linear_constraints(
    encoder: SpaceEncoder, *, unit: bool = False, dtype: torch.dtype = torch.double
) -> LinearConstraints:
    """The space's constraints on the model encoding (or on the unit encoding).

    Args:
        encoder: Encoder of a space whose constraints involve only continuous, linear-scale
            parameters (the search space validates this).
        unit: Index columns of the unit encoding (one per parameter) instead of the model
            encoding (one-hot categoricals widen it).
        dtype: Dtype of the coefficient tensors.

    Returns:
        The triples; empty lists when the space has no constraints.
    """
    space = encoder.space
    position = {p.name: i for i, p in enumerate(space.parameters)}
    ineq: list[Triple] = []
    eq: list[Triple] = []
    for c in space.constraints:
        idx: list[int] = []
        coef: list[float] = []
        offset = 0.0
        for name, a in c.terms().items():
            k = position[name]
            p = space.parameters[k]
            assert isinstance(p, ContinuousParameter)  # guaranteed by SearchSpace
            idx.append(k if unit else encoder.slices[k].start)
            coef.append(a * (p.upper - p.lower))
            offset += a * p.lower
        it = torch.tensor(idx, dtype=torch.long)
        ct = torch.tensor(coef, dtype=dtype)
        lo, hi = c.sum_bounds()
        if lo is not None and hi is not None and lo == hi:
            eq.append((it, ct, float(lo - offset)))
            continue
        if lo is not None:
            ineq.append((it, ct, float(lo - offset)))
        if hi is not None:
            ineq.append((it, -ct, float(offset - hi)))
    return LinearConstraints(inequality=ineq, equality=eq)


def constrained_columns(encoder: SpaceEncoder) -> list[int]:
    """Unit-encoding columns (parameter positions) that some constraint involves."""
    names = {n for c in encoder.space.constraints for n in c.terms()}
    return [i for i, p in enumerate(encoder.space.parameters) if p.name in names]


def polytope_unit_samples(
    encoder: SpaceEncoder, unit: Tensor, *, seed: int, thinning: int = 16
) -> Tensor:
    """Replace the constrained columns of a unit-encoded sample by polytope samples.

    Columns no constraint involves keep their values (a Sobol or uniform draw); the
    constrained ones are drawn by hit-and-run from the polytope their bounds and
    constraints cut out, so every row satisfies the constraints.

    Args:
        encoder: Encoder of the space.
        unit: ``n x n_params`` unit-encoded sample.
        seed: Seed of the hit-and-run chain.
        thinning: Chain steps between kept samples.

    Returns:
        A new ``n x n_params`` tensor.
    """
    cons = linear_constraints(encoder, unit=True)
    out = unit.clone().to(torch.double)
    if not cons:
        return out
    cols = constrained_columns(encoder)
    remap = {c: j for j, c in enumerate(cols)}

    def sub(triples: list[Triple]) -> list[Triple]:
        return [
            (torch.tensor([remap[int(i)] for i in idx], dtype=torch.long), c, rhs)
            for idx, c, rhs in triples
        ]

    d = len(cols)
    bounds = torch.stack([torch.zeros(d, dtype=torch.double), torch.ones(d, dtype=torch.double)])
    samples = get_polytope_samples(
        n=unit.shape[0],
        bounds=bounds,
        inequality_constraints=sub(cons.inequality) or None,
        equality_constraints=sub(cons.equality) or None,
        seed=seed % (2**31),
        n_burnin=max(200, 20 * d),
        n_thinning=thinning,
    )
    out[:, cols] = samples.clamp(0.0, 1.0)
    return out
