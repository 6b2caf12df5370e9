"""The ``table`` world: a lab's own data (a CSV file) as a simulated instrument.

Retrospective benchmarking replays a campaign on data already measured. The world reads a
CSV file whose header names the parameter columns and the measurement columns (both listed
in the simulation options), and answers in one of two modes:

* ``mode = "pool"``: only the table's rows exist. Measuring a row's parameters returns the
  row's values; any other point is refused. Rows with the same parameters are replicate
  measurements of one condition: its truth is their mean, and their spread (the pooled
  standard deviation over every replicated condition, one per output) is the standard
  uncertainty each measurement reports when the instrument adds no noise of its own
  (``noise_std = 0``). A planner given the same file as its ``pool``
  option proposes only rows it has not measured yet.
* ``mode = "emulator"``: an exact GP (BoTorch ``SingleTaskGP``, inputs normalised to the
  table's box, outcomes standardised, one independent output per measurement column) is
  fitted once to the table, and its posterior mean answers anywhere in the box. Noise is
  added separately by the instrument's noise model (``noise_std``), as for every world.

Example ``[instruments.simulated]`` table::

    world = "table"
    options = { path = "examples/data/ternary.csv", parameters = ["a", "b", "c"],
                outputs = ["band_gap_ev"], mode = "pool" }

Relative paths are resolved against the working directory of the instrument server.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood

from instruments.driver import OutputSpec, ParameterLimit
from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError, ParameterLimitError
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = ["TableWorld"]

MATCH_TOLERANCE = 1e-9
"""Relative tolerance (times a column's range) of matching a point to a pool row."""


def _problem(key: str, message: str) -> InvalidCampaignError:
    return InvalidCampaignError(None, [(f"options.{key}", message)])


@register_world("table")
class TableWorld(World):
    """A CSV table of measured experiments, served as a world (see the module docstring).

    Args:
        path: The CSV file (header row first).
        parameters: Names of the parameter columns (numbers; in pool mode text columns are
            allowed too and become string parameters).
        outputs: Names of the measurement columns (numbers).
        mode: ``"pool"`` or ``"emulator"``.
        seed: Seed of the emulator's GP fit.

    Raises:
        InvalidCampaignError: If the file cannot be read, a column is missing or holds a
            value of the wrong kind (key path ``options.<key>``).
    """

    def __init__(
        self,
        *,
        path: str,
        parameters: list[str],
        outputs: list[str],
        mode: Literal["pool", "emulator"] = "pool",
        seed: int = 0,
    ) -> None:
        if mode not in ("pool", "emulator"):
            raise _problem("mode", f"expected 'pool' or 'emulator', got {mode!r}")
        if not parameters or not outputs:
            raise _problem("parameters" if not parameters else "outputs", "name one column")
        table = read_csv_table(path, "options.path")
        rows, lines = table.rows, table.lines
        if not rows:
            raise _problem("path", f"{path} has no rows")
        for key, names in (("parameters", parameters), ("outputs", outputs)):
            missing = [n for n in names if n not in table.header]
            if missing:
                raise _problem(key, f"no column {missing} in {path}")
        units = table.units_cells([*parameters, *outputs])
        if units:
            raise _problem(
                "path",
                f"{path}: row {lines[0]} looks like a row of units ({', '.join(units)}), not a "
                "measurement: delete it and put units in the column names (e.g. temperature_c)",
            )
        self.mode = mode
        self.path = str(path)
        self._inputs = list(parameters)
        self._outputs = list(outputs)
        self._text: dict[str, list[str]] = {}
        x = np.empty((len(rows), len(parameters)), dtype=np.float64)
        for j, name in enumerate(parameters):
            col = [r[name].strip() for r in rows]
            numbers = [_float(v) for v in col]
            if all(v is not None for v in numbers):
                x[:, j] = [float(v) for v in numbers if v is not None]
            elif mode == "pool":
                self._text[name] = sorted(set(col))
                x[:, j] = [self._text[name].index(v) for v in col]
            else:
                raise _problem("parameters", f"column {name!r} must hold numbers in emulator mode")
        y = np.empty((len(rows), len(outputs)), dtype=np.float64)
        for j, name in enumerate(outputs):
            values = [_float(r[name]) for r in rows]
            bad = [i for i, v in enumerate(values) if v is None]
            if bad:
                raise _problem(
                    "outputs",
                    f"column {name!r} must hold numbers in every row; row {lines[bad[0]]} holds "
                    f"{rows[bad[0]][name]!r}"
                    + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""),
                )
            y[:, j] = [float(v) for v in values if v is not None]
        self.x, self.y, self.replicates, self._spread = _replicate_means(x, y)
        if self.x.shape[0] < x.shape[0]:
            logger.info(
                "table %s: %d rows are %d conditions; replicate spread %s",
                path,
                x.shape[0],
                self.x.shape[0],
                dict(zip(outputs, self._spread.tolist(), strict=True)),
            )
        self._lower, self._upper = x.min(axis=0), x.max(axis=0)
        self._scale = np.where(self._upper > self._lower, self._upper - self._lower, 1.0)
        self._model: SingleTaskGP | None = None
        if mode == "emulator":
            self._model = _fit_emulator(x, y, self._lower, self._upper, seed)

    def parameters(self) -> list[ParameterLimit]:
        """Each parameter column, with the table's range as its limits."""
        out: list[ParameterLimit] = []
        for j, name in enumerate(self._inputs):
            if name in self._text:
                out.append(ParameterLimit(name=name, type="string", choices=self._text[name]))
            else:
                lo, hi = float(self._lower[j]), float(self._upper[j])
                out.append(ParameterLimit(name=name, type="number", minimum=lo, maximum=hi))
        return out

    def outputs(self) -> list[OutputSpec]:
        """Each measurement column."""
        return [OutputSpec(name=n, kind="scalar") for n in self._outputs]

    def row_of(self, params: Mapping[str, object]) -> int | None:
        """Index of the table row at ``params`` (``None`` when no row matches)."""
        x = self._to_array(params)
        diff = np.abs(self.x - x) / self._scale
        hits = np.flatnonzero(np.all(diff <= MATCH_TOLERANCE, axis=1))
        return int(hits[0]) if hits.size else None

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The row's values (pool mode) or the emulator's mean (emulator mode).

        Raises:
            ParameterLimitError: If an input is missing or of the wrong type, or (pool mode)
                no row of the table lies at the point.
        """
        if self._model is None:
            row = self.row_of(params)
            if row is None:
                first = self._inputs[0]
                raise ParameterLimitError(
                    first, params.get(first), f"table {self.path}: no row at this point"
                )
            return {n: float(v) for n, v in zip(self._outputs, self.y[row], strict=True)}
        x = torch.as_tensor(self._to_array(params)[None, :], dtype=torch.double)
        with torch.no_grad():
            mean = self._model.posterior(x).mean[0]
        return {n: float(v) for n, v in zip(self._outputs, mean.tolist(), strict=True)}

    def uncertainty(self, output: str, params: Mapping[str, object]) -> float | None:
        """The replicates' pooled standard deviation of ``output`` (``None`` when no
        condition of the table was measured more than once)."""
        value = float(self._spread[self._outputs.index(output)])
        return value if math.isfinite(value) else None

    def best(self, output: str, direction: Literal["maximize", "minimize"]) -> float:
        """The best value of ``output`` in the table (the optimum of a pool benchmark)."""
        col = self.y[:, self._outputs.index(output)]
        return float(col.max() if direction == "maximize" else col.min())

    def _to_array(self, params: Mapping[str, object]) -> np.ndarray:
        out = np.empty(len(self._inputs), dtype=np.float64)
        for j, name in enumerate(self._inputs):
            v = params.get(name)
            if name in self._text:
                if not isinstance(v, str) or v not in self._text[name]:
                    raise ParameterLimitError(name, v, f"table {self.path}: choices")
                out[j] = self._text[name].index(v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterLimitError(name, v, f"world {self.name!r}: type number")
            else:
                out[j] = float(v)
        return out


def _replicate_means(
    x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Collapse rows with equal inputs into one condition each.

    Args:
        x: ``n x d`` inputs.
        y: ``n x m`` outputs.

    Returns:
        The ``k x d`` distinct inputs (in order of first appearance), the ``k x m`` mean
        outputs, the ``k`` replicate counts, and the ``m`` pooled standard deviations
        ``sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1))`` (NaN where nothing is replicated).
    """
    _, first, inverse, counts = np.unique(
        x, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    order = np.argsort(first)  # groups in file order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    group = rank[inverse]
    k = order.size
    sums = np.zeros((k, y.shape[1]))
    np.add.at(sums, group, y)
    n = counts[order].astype(np.float64)
    means = sums / n[:, None]
    resid = y - means[group]
    dof = float(np.sum(n - 1))
    spread = np.sqrt(np.sum(resid**2, axis=0) / dof) if dof > 0 else np.full(y.shape[1], np.nan)
    return x[np.sort(first)], means, counts[order], spread


def _float(text: str | None) -> float | None:
    try:
        v = float((text or "").strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _fit_emulator(
    x: np.ndarray, y: np.ndarray, lower: np.ndarray, upper: np.ndarray, seed: int
) -> SingleTaskGP:
    """Fit the emulator GP once (independent outputs, inputs normalised to the box)."""
    tx = torch.as_tensor(x, dtype=torch.double)
    ty = torch.as_tensor(y, dtype=torch.double)
    bounds = torch.as_tensor(np.stack([lower, np.where(upper > lower, upper, lower + 1)]))
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = SingleTaskGP(
            tx,
            ty,
            input_transform=Normalize(d=tx.shape[-1], bounds=bounds.to(torch.double)),
            outcome_transform=Standardize(m=ty.shape[-1]),
        )
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    logger.debug("table emulator fitted to %d rows", x.shape[0])
    return model
