"""The ``phase-map`` world: a hidden binary phase diagram, for active-learning campaigns.

Mapping campaigns (SARA-style thin-film libraries, combinatorial synthesis) ask *which
phase forms where* rather than *where is the best value*. This world is a synthetic
eutectic-like phase diagram over a composition fraction ``x_b`` (in ``[0, 1]``) and an
anneal temperature ``temperature_c`` (``[300, 1100]`` degC by default); its one output,
``phase``, is the index of the stable phase:

* ``0``: the ``alpha`` solid solution, on the ``A``-rich side below the liquidus;
* ``1``: the ``beta`` solid solution, on the ``B``-rich side, separated from ``alpha`` by a
  curved, temperature-dependent solvus ``x_b = 0.52 + 0.12 sin(2.5 pi t) - 0.08 t``;
* ``2``: the liquid, above the liquidus ``t = 0.55 + 0.35 (2 x_b - 1)^2`` (a eutectic dip
  at ``x_b = 0.5``);
* ``3``: a small pocket of an intermediate compound inside ``alpha``: the ellipse
  ``((x_b - 0.24) / 0.09)^2 + ((t - 0.22) / 0.07)^2 < 1`` (about 2 % of the area),

where ``t`` is the temperature scaled to ``[0, 1]``. Optional extra inputs ``z1 .. zk``
(``extra_inputs = k``, each in ``[0, 1]``) shift the solvus by ``0.15 (mean(z) - 0.5)`` so
higher-dimensional mapping can be tested; the other boundaries do not depend on them.

The truth is noise-free and deterministic (:meth:`PhaseMapWorld.evaluate_true`, or the
vectorised :meth:`PhaseMapWorld.evaluate_array` for scoring a whole grid). Measure it with
``noise_std = 0``: the label is a class index, and Gaussian noise would make it a
non-integer (the ``boundary`` planner rounds labels to the nearest integer).

The layout follows the shape of textbook binary eutectic diagrams with a line compound
(Porter, Easterling and Sherif, *Phase Transformations in Metals and Alloys*, 3rd ed.,
2009, ch. 1); the numbers are made up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = ["PHASE_NAMES", "PhaseMapWorld"]

PHASE_NAMES = ("alpha", "beta", "liquid", "compound")
"""Name of each phase index the world reports."""


@register_world("phase-map")
class PhaseMapWorld(World):
    """A hidden binary phase diagram (see the module docstring for its boundaries).

    Args:
        temperature_min_c: Lowest anneal temperature, degC.
        temperature_max_c: Highest anneal temperature, degC (above the minimum).
        extra_inputs: Number of further inputs ``z1 .. zk`` in ``[0, 1]`` (0 to 8) that
            shift the alpha/beta solvus.
        output: Name of the output (default ``"phase"``).

    Raises:
        InvalidCampaignError: If an option is out of range (key ``options.<name>``).
    """

    n_phases = len(PHASE_NAMES)

    def __init__(
        self,
        *,
        temperature_min_c: float = 300.0,
        temperature_max_c: float = 1100.0,
        extra_inputs: int = 0,
        output: str = "phase",
    ) -> None:
        problems: list[tuple[str, str]] = []
        for key, value in (
            ("temperature_min_c", temperature_min_c),
            ("temperature_max_c", temperature_max_c),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                problems.append((f"options.{key}", f"expected a finite number, got {value!r}"))
        if not problems and not temperature_min_c < temperature_max_c:
            problems.append(("options.temperature_max_c", "must exceed temperature_min_c"))
        if (
            isinstance(extra_inputs, bool)
            or not isinstance(extra_inputs, int)
            or not 0 <= extra_inputs <= 8
        ):
            problems.append(("options.extra_inputs", f"expected 0 to 8, got {extra_inputs!r}"))
        if not isinstance(output, str) or not output:
            problems.append(("options.output", f"expected a non-empty string, got {output!r}"))
        if problems:
            raise InvalidCampaignError(None, problems)
        self.t_min = float(temperature_min_c)
        self.t_max = float(temperature_max_c)
        self.extra_inputs = int(extra_inputs)
        self._output = output
        self._names = ["x_b", "temperature_c"] + [f"z{i + 1}" for i in range(self.extra_inputs)]

    @property
    def dim(self) -> int:
        """Number of inputs."""
        return len(self._names)

    @property
    def bounds(self) -> np.ndarray:
        """Input bounds, shape ``2 x d`` (row 0 lower, row 1 upper)."""
        lo = [0.0, self.t_min] + [0.0] * self.extra_inputs
        hi = [1.0, self.t_max] + [1.0] * self.extra_inputs
        return np.array([lo, hi], dtype=np.float64)

    @property
    def parameter_names(self) -> list[str]:
        """``["x_b", "temperature_c", "z1", ...]``."""
        return list(self._names)

    def parameters(self) -> list[ParameterLimit]:
        """The composition fraction, the temperature (degC) and any extra inputs."""
        lo, hi = self.bounds
        return [
            ParameterLimit(name=n, type="number", minimum=float(a), maximum=float(b))
            for n, a, b in zip(self._names, lo, hi, strict=True)
        ]

    def outputs(self) -> list[OutputSpec]:
        """The phase index."""
        return [OutputSpec(name=self._output, kind="scalar")]

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """The phase index at many points.

        Args:
            x: ``n x d`` points, inputs in :attr:`parameter_names` order (temperature in
                degC); points outside the bounds are evaluated too.

        Returns:
            ``n`` integer phase indices (``int64``).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected an n x {self.dim} array, got shape {x.shape}")
        u = x[:, 0]
        t = (x[:, 1] - self.t_min) / (self.t_max - self.t_min)
        shift = 0.15 * (x[:, 2:].mean(axis=1) - 0.5) if self.extra_inputs else 0.0
        solvus = 0.52 + 0.12 * np.sin(2.5 * math.pi * t) - 0.08 * t + shift
        liquidus = 0.55 + 0.35 * (2.0 * u - 1.0) ** 2
        pocket = ((u - 0.24) / 0.09) ** 2 + ((t - 0.22) / 0.07) ** 2 < 1.0
        phase = np.where(u < solvus, 0, 1)
        phase = np.where(pocket, 3, phase)
        phase = np.where(t > liquidus, 2, phase)
        return phase.astype(np.int64)

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free phase index at one point (see :meth:`World.evaluate_true`)."""
        x = np.empty(self.dim, dtype=np.float64)
        for i, n in enumerate(self._names):
            v = params.get(n)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterLimitError(n, v, f"world {self.name!r}: type number")
            x[i] = v
        return {self._output: float(self.evaluate_array(x[None, :])[0])}

    def grid(self, per_axis: int = 100) -> np.ndarray:
        """A dense regular grid over the first two inputs (extra inputs at 0.5).

        Args:
            per_axis: Points per axis (at least 2).

        Returns:
            ``per_axis**2 x d`` points, cell centres of a regular grid.
        """
        if per_axis < 2:
            raise ValueError(f"per_axis must be at least 2, got {per_axis}")
        lo, hi = self.bounds
        centres = (np.arange(per_axis) + 0.5) / per_axis
        uu, vv = np.meshgrid(centres, centres, indexing="ij")
        unit = np.full((per_axis**2, self.dim), 0.5)
        unit[:, 0], unit[:, 1] = uu.ravel(), vv.ravel()
        return lo + unit * (hi - lo)
