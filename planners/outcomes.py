"""From modelled outcomes to what the acquisition optimises: objectives, targets, constraints.

The surrogate models every ``[[objectives]]`` entry in campaign order, each multiplied by
its :attr:`~models.objectives.Objective.sign` (so maximised and minimised objectives are
both larger-is-better; targets and constraints keep their raw values). This module turns
posterior samples of those columns into

* the objective values the acquisition maximises (``-|y - target|`` for a target, as in
  composite Bayesian optimisation: the model sees the raw measurement, the distance is
  computed on its samples; Astudillo and Frazier, ICML 2019), and
* BoTorch outcome-constraint callables (feasible where ``<= 0``) for ``lower``/``upper``
  constraints. Constrained acquisition functions weight each sample by a smoothed
  feasibility indicator, in log space for the LogEI family, so the acquisition is
  multiplied by the probability of meeting the constraints (Gardner et al., ICML 2014;
  Ament et al., NeurIPS 2023).

It also infers the hypervolume reference point of a multi-objective campaign with BoTorch's
``infer_reference_point`` (nadir of the observed Pareto front minus 10 % of its range).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.multi_objective.pareto import is_non_dominated
from torch import Tensor

from models.objectives import Objective

logger = logging.getLogger(__name__)

__all__ = ["OutcomeLayout"]

Constraint = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class OutcomeLayout:
    """Which model output is which, and how outputs become objectives and constraints.

    Attributes:
        objectives: Every ``[[objectives]]`` entry, in campaign order (one model column each).
    """

    objectives: tuple[Objective, ...]

    @property
    def objective_columns(self) -> list[int]:
        """Model columns of the entries optimised (``kind = "objective"``)."""
        return [i for i, o in enumerate(self.objectives) if not o.is_constraint]

    @property
    def n_objectives(self) -> int:
        """Number of optimised objectives."""
        return len(self.objective_columns)

    def utilities(self, y: Tensor) -> Tensor:
        """Objective values, larger is better, from signed model outputs.

        Args:
            y: ``... x m`` tensor of signed model outputs.

        Returns:
            ``... x k`` tensor, one column per optimised objective: the signed value, or
            ``-|y - target|`` for a target.
        """
        cols = []
        for i in self.objective_columns:
            o = self.objectives[i]
            v = y[..., i]
            cols.append(-(v - o.target).abs() if o.target is not None else v)
        return torch.stack(cols, dim=-1)

    def single_objective(self) -> GenericMCObjective:
        """MC objective of a single-objective campaign (``samples -> batch_shape x q``)."""

        def first(samples: Tensor, X: Tensor | None = None) -> Tensor:  # noqa: N803
            return self.utilities(samples)[..., 0]

        return GenericMCObjective(first)

    def multi_objective(self) -> GenericMCMultiOutputObjective:
        """MC multi-output objective of a multi-objective campaign (``... x q x k``)."""

        def every(samples: Tensor, X: Tensor | None = None) -> Tensor:  # noqa: N803
            return self.utilities(samples)

        return GenericMCMultiOutputObjective(every)

    def constraints(self) -> list[Constraint]:
        """BoTorch outcome constraints: each callable is feasible where it is ``<= 0``."""
        out: list[Constraint] = []
        for i, o in enumerate(self.objectives):
            if not o.is_constraint:
                continue
            if o.upper is not None:
                out.append(_upper(i, o.upper))
            if o.lower is not None:
                out.append(_lower(i, o.lower))
        return out

    def satisfied(self, y: Tensor) -> Tensor:
        """Which rows of observed signed outputs ``n x m`` meet every outcome constraint."""
        ok = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        for i, o in enumerate(self.objectives):
            if o.lower is not None:
                ok &= y[:, i] >= o.lower
            if o.upper is not None:
                ok &= y[:, i] <= o.upper
        return ok

    def reference_point(self, y: Tensor) -> tuple[Tensor, bool]:
        """The hypervolume reference point, in utility units (``k``).

        Given ``reference`` values are used as they are (converted to utilities); the
        others come from BoTorch's ``infer_reference_point`` on the Pareto front of the
        observations that meet the outcome constraints (all observations when none does).

        Args:
            y: ``n x m`` observed signed outputs.

        Returns:
            ``(ref_point, inferred)``; ``inferred`` is whether any coordinate was inferred.
        """
        util = self.utilities(y)
        ok = self.satisfied(y)
        front_src = util[ok] if bool(ok.any()) else util
        front = front_src[is_non_dominated(front_src)]
        inferred_ref = infer_reference_point(front)
        ref = inferred_ref.clone()
        given = 0
        for j, i in enumerate(self.objective_columns):
            o = self.objectives[i]
            if o.reference is not None:
                ref[j] = o.utility(o.reference)
                given += 1
        return ref, given < self.n_objectives

    def pessimistic(self, y: Tensor) -> Tensor:
        """A worst-case outcome row (``m``) from observed signed outputs ``n x m``.

        Each objective column takes its observed value of lowest utility; each constraint
        column the observed value farthest on the violating side. Failed experiments get
        this row in the outcome model, so the model itself learns that failing regions are
        bad (the "replace by the worst" strategy of Hickman et al. 2025).
        """
        row = torch.empty(y.shape[-1], dtype=y.dtype, device=y.device)
        util = self.utilities(y)
        for j, i in enumerate(self.objective_columns):
            row[i] = y[int(util[:, j].argmin()), i]
        for i, o in enumerate(self.objectives):
            if o.is_constraint:
                row[i] = y[:, i].max() if o.upper is not None else y[:, i].min()
        return row

    def best_observed(self, y: Tensor) -> float | None:
        """The measured value (objective units) of the best observation of one objective.

        Only observations meeting the outcome constraints count. Returns ``None`` for
        several objectives or when no observation is feasible.
        """
        if self.n_objectives != 1:
            return None
        ok = self.satisfied(y)
        if not bool(ok.any()):
            return None
        col = self.objective_columns[0]
        util = self.utilities(y)[:, 0]
        best = int(torch.where(ok, util, torch.full_like(util, -torch.inf)).argmax())
        return self.objectives[col].sign * float(y[best, col])


def _upper(column: int, bound: float) -> Constraint:
    return lambda samples: samples[..., column] - bound


def _lower(column: int, bound: float) -> Constraint:
    return lambda samples: bound - samples[..., column]


def pareto_utilities(layout: OutcomeLayout, y: Tensor) -> Sequence[list[float]]:
    """Utilities of the feasible observed Pareto front (for decision details)."""
    util = layout.utilities(y)[layout.satisfied(y)]
    if util.shape[0] == 0:
        return []
    return [[float(v) for v in row] for row in util[is_non_dominated(util)].tolist()]
