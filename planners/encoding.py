"""Encoding search-space points as tensors and back.

Two encodings of a :class:`~models.params.SearchSpace` are used:

* The **model encoding** (``d`` columns, each in ``[0, 1]``) is what surrogates and
  acquisition functions see. A continuous parameter is one column, scaled linearly (or
  logarithmically when ``log_scale``) from ``[lower, upper]`` to ``[0, 1]``. An integer
  parameter is one column covering ``[lower - 0.5, upper + 0.5]``, so every integer owns an
  equal slice of the unit interval; decoding rounds. A categorical parameter is one-hot
  (one column per choice); decoding takes the largest column.
* The **unit encoding** (one column per parameter, each in ``[0, 1]``) is what space-filling
  samplers draw: a categorical parameter takes the ``floor(u * k)``-th of its ``k`` choices,
  so a uniform or Sobol column gives every choice the same share.

Decoding clamps and rounds, so every decoded point passes
:meth:`~models.params.SearchSpace.validate_point`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.errors import PlannerError
from models.objectives import Objective
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ParamValue,
    SearchSpace,
    StringParameter,
)
from models.records import Observation

__all__ = ["SpaceEncoder", "TrainingData", "feasibility_data", "training_data"]


class SpaceEncoder:
    """Encode points of a search space as rows of a ``[0, 1]^d`` tensor, and decode them.

    Attributes:
        space: The search space.
        dim: Number of model-encoding columns ``d``.
        columns: One label per column (``"name"`` or ``"name=choice"`` for one-hot columns).
        slices: For each parameter (in order), the column slice it occupies.
    """

    def __init__(self, space: SearchSpace) -> None:
        """Build the encoder.

        Raises:
            PlannerError: If the space has a string parameter (it has no numeric encoding).
        """
        strings = [p.name for p in space.parameters if isinstance(p, StringParameter)]
        if strings:
            raise PlannerError(
                f"string parameter {strings[0]!r} has no numeric encoding: use a planner "
                'that generates its candidates (e.g. name = "discovery")'
            )
        self.space = space
        self.columns: list[str] = []
        self.slices: list[slice] = []
        for p in space.parameters:
            start = len(self.columns)
            if isinstance(p, CategoricalParameter):
                self.columns.extend(f"{p.name}={c}" for c in p.choices)
            else:
                self.columns.append(p.name)
            self.slices.append(slice(start, len(self.columns)))
        self.dim = len(self.columns)

    @property
    def n_params(self) -> int:
        """Number of parameters (columns of the unit encoding)."""
        return len(self.space.parameters)

    def bounds(self, dtype: torch.dtype = torch.double) -> Tensor:
        """Bounds of the model encoding, a ``2 x d`` tensor of zeros (row 0) and ones."""
        return torch.stack([torch.zeros(self.dim, dtype=dtype), torch.ones(self.dim, dtype=dtype)])

    def encode(
        self, points: Sequence[Mapping[str, ParamValue]], dtype: torch.dtype = torch.double
    ) -> Tensor:
        """Encode points as an ``n x d`` tensor.

        Args:
            points: ``n`` points, each mapping every parameter name to a value.
            dtype: Floating dtype of the result.

        Returns:
            The ``n x d`` model encoding (on the CPU).

        Raises:
            ParameterLimitError: If a point does not fit the search space.
        """
        rows = torch.zeros(len(points), self.dim, dtype=dtype)
        for i, raw in enumerate(points):
            point = self.space.validate_point(raw)
            for p, sl in zip(self.space.parameters, self.slices, strict=True):
                v = point[p.name]
                if isinstance(p, CategoricalParameter):
                    rows[i, sl.start + p.choices.index(p.check(v))] = 1.0
                elif isinstance(p, IntegerParameter):
                    rows[i, sl.start] = (float(v) - p.lower + 0.5) / (p.upper - p.lower + 1)
                elif isinstance(p, StringParameter):  # refused by __init__
                    raise PlannerError(f"string parameter {p.name!r} has no numeric encoding")
                elif p.log_scale:
                    lo, hi = math.log(p.lower), math.log(p.upper)
                    rows[i, sl.start] = (math.log(float(v)) - lo) / (hi - lo)
                else:
                    rows[i, sl.start] = (float(v) - p.lower) / (p.upper - p.lower)
        return rows

    def decode(self, x: Tensor) -> list[dict[str, ParamValue]]:
        """Decode an ``n x d`` model encoding into points of the space.

        Values are clamped to ``[0, 1]`` (NaN counts as 0.5), integers rounded and
        categoricals decided by their largest one-hot column, so every point is valid.

        Args:
            x: ``n x d`` tensor (any device, any floating dtype).

        Returns:
            ``n`` points, each validated by the search space.
        """
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"expected an n x {self.dim} tensor, got shape {tuple(x.shape)}")
        xc = torch.nan_to_num(x.detach().to("cpu", torch.double), nan=0.5).clamp(0.0, 1.0)
        out: list[dict[str, ParamValue]] = []
        for row in xc.tolist():
            point: dict[str, ParamValue] = {}
            for p, sl in zip(self.space.parameters, self.slices, strict=True):
                if isinstance(p, CategoricalParameter):
                    block = row[sl]
                    point[p.name] = p.choices[max(range(len(block)), key=block.__getitem__)]
                else:
                    assert not isinstance(p, StringParameter)  # refused by __init__
                    point[p.name] = _from_unit(p, row[sl.start])
            out.append(self.space.validate_point(point))
        return out

    def from_unit(self, u: Tensor) -> list[dict[str, ParamValue]]:
        """Decode an ``n x n_params`` unit encoding (one column per parameter) into points.

        Args:
            u: ``n x n_params`` tensor with values in ``[0, 1]`` (clamped; NaN counts as 0.5).

        Returns:
            ``n`` points, each validated by the search space.
        """
        if u.dim() != 2 or u.shape[-1] != self.n_params:
            raise ValueError(f"expected an n x {self.n_params} tensor, got shape {tuple(u.shape)}")
        uc = torch.nan_to_num(u.detach().to("cpu", torch.double), nan=0.5).clamp(0.0, 1.0)
        out: list[dict[str, ParamValue]] = []
        for row in uc.tolist():
            point: dict[str, ParamValue] = {}
            for p, ui in zip(self.space.parameters, row, strict=True):
                if isinstance(p, CategoricalParameter):
                    k = len(p.choices)
                    point[p.name] = p.choices[min(int(ui * k), k - 1)]
                else:
                    assert not isinstance(p, StringParameter)  # refused by __init__
                    point[p.name] = _from_unit(p, ui)
            out.append(self.space.validate_point(point))
        return out


def _from_unit(p: ContinuousParameter | IntegerParameter, u: float) -> ParamValue:
    """Map ``u`` in ``[0, 1]`` to a value of a continuous or integer parameter."""
    if isinstance(p, IntegerParameter):
        v = math.floor(p.lower - 0.5 + u * (p.upper - p.lower + 1) + 0.5)
        return int(min(max(v, p.lower), p.upper))
    if u <= 0.0:
        return float(p.lower)
    if u >= 1.0:
        return float(p.upper)
    if p.log_scale:
        lo, hi = math.log(p.lower), math.log(p.upper)
        x = math.exp(lo + u * (hi - lo))
    else:
        x = p.lower + u * (p.upper - p.lower)
    return float(min(max(x, p.lower), p.upper))


@dataclass(frozen=True)
class TrainingData:
    """Observations turned into model inputs.

    Attributes:
        X: ``n x d`` model encoding of the usable observations.
        Y: ``n x m`` objective values, multiplied by each objective's sign (larger is better).
        n_infeasible: Observations left out because the experiment failed.
        n_incomplete: Feasible observations left out for a missing or non-finite objective.
        Yvar: ``n x m`` noise variances (squared reported uncertainties, in objective units)
            when every usable observation reported an uncertainty for every objective, else
            ``None``.
    """

    X: Tensor
    Y: Tensor
    n_infeasible: int
    n_incomplete: int
    Yvar: Tensor | None = None

    @property
    def n(self) -> int:
        """Number of usable observations (rows of ``X`` and ``Y``)."""
        return int(self.X.shape[0])


def training_data(
    encoder: SpaceEncoder,
    observations: Sequence[Observation],
    objectives: Sequence[Objective],
    dtype: torch.dtype = torch.double,
) -> TrainingData:
    """Turn observations into ``train_X`` (``n x d``) and ``train_Y`` (``n x m``).

    Failed experiments (``feasible=False``) and feasible ones lacking a finite value for an
    objective are left out and counted. Reported uncertainties become ``Yvar`` only when
    every kept observation has a finite, positive one for every objective (a fixed-noise
    model cannot mix known and unknown noise; an uncertainty of zero usually means "not
    estimated", and would make the GP interpolate noisy values exactly).

    Args:
        encoder: Encoder of the search space.
        observations: Observations, in any order.
        objectives: The ``m`` objectives; their signs make every column larger-is-better.
        dtype: Floating dtype of the tensors.

    Returns:
        The training data (CPU tensors).
    """
    points: list[Mapping[str, ParamValue]] = []
    values: list[list[float]] = []
    variances: list[list[float]] | None = []
    n_infeasible = n_incomplete = 0
    for obs in observations:
        if not obs.feasible:
            n_infeasible += 1
            continue
        row = [obs.objectives.get(o.name, math.nan) for o in objectives]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in row):
            n_incomplete += 1
            continue
        points.append(obs.parameters)
        values.append([o.sign * float(v) for o, v in zip(objectives, row, strict=True)])
        if variances is not None:
            sd = [obs.uncertainties.get(o.name) for o in objectives]
            if all(isinstance(u, (int, float)) and math.isfinite(u) and u > 0 for u in sd):
                variances.append([float(u) ** 2 for u in sd if u is not None])
            else:
                variances = None
    x = encoder.encode(points, dtype=dtype)
    y = torch.tensor(values, dtype=dtype).reshape(len(values), len(objectives))
    yvar = None
    if variances:
        yvar = torch.tensor(variances, dtype=dtype).reshape(len(values), len(objectives))
    return TrainingData(X=x, Y=y, n_infeasible=n_infeasible, n_incomplete=n_incomplete, Yvar=yvar)


def feasibility_data(
    encoder: SpaceEncoder,
    observations: Sequence[Observation],
    dtype: torch.dtype = torch.double,
) -> tuple[Tensor, Tensor]:
    """Every observation's encoding and whether it succeeded.

    Args:
        encoder: Encoder of the search space.
        observations: Observations, failed ones included.
        dtype: Floating dtype of the tensors.

    Returns:
        ``(X, labels)``: ``n x d`` encodings and an ``n`` tensor of ``1.0`` (the experiment
        succeeded) and ``0.0`` (it failed).
    """
    x = encoder.encode([o.parameters for o in observations], dtype=dtype)
    labels = torch.tensor([1.0 if o.feasible else 0.0 for o in observations], dtype=dtype)
    return x, labels
