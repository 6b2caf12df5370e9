"""The ``phase-pockets`` world: large phases with small, randomly placed pockets of rare ones.

A phase map is only useful if it shows the rare phases: a line compound or a metastable
phase that forms in a small window of composition and temperature is often the finding of
a mapping campaign. Random sampling finds such a window only by chance (a pocket of 1 % of
the area is missed by 100 random points with probability ``0.99^100 = 37 %``) and then
outlines it with the few points that happen to fall near it. This world makes that the
test: scored by macro-averaged accuracy (the mean over phases of the fraction of each
phase's area labelled correctly, :func:`macro_accuracy`), a map that misses a pocket loses
``1 / n_phases`` of its score however well it draws the large phases.

Inputs are those of :class:`sim.phasemap.PhaseMapWorld` (``x_b`` in ``[0, 1]``,
``temperature_c`` in ``[300, 1100]`` degC by default; ``u`` and ``t`` below are both scaled
to ``[0, 1]``). The layout is drawn from ``layout_seed`` (``numpy.random.default_rng``):

* three large phases: ``0`` where ``u < b(t)``, ``1`` where ``u >= b(t)``, and ``2`` above
  ``t > c(u)``, with the curved boundaries ``b(t) = 0.5 + a1 sin(2 pi (f1 t + p1))`` and
  ``c(u) = 0.72 + a2 sin(2 pi (f2 u + p2))`` (amplitudes ``a1`` in ``[0.08, 0.15]``, ``a2``
  in ``[0.05, 0.10]``, frequencies ``f`` in ``[0.5, 1.5]``, phases ``p`` in ``[0, 1)``);
* ``n_pockets`` rare phases ``3 .. 2 + n_pockets``, one pocket each: an ellipse with
  semi-axes drawn uniformly from ``[pocket_min, pocket_max]`` (unit-square units) and a
  uniform orientation, its centre drawn uniformly until the whole ellipse (checked on
  64 points of its rim) lies inside one large phase at least ``margin`` from that phase's
  boundaries, from the other pockets and from the edges of the square. A pocket of
  semi-axes ``0.05 x 0.08`` covers 1.3 % of the square.

The truth is noise-free and deterministic given the options (:meth:`evaluate_array`,
:meth:`evaluate_true`); measure it with ``noise_std = 0``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from models.errors import InvalidCampaignError
from sim.phasemap import PhaseMapWorld
from sim.worlds import register_world

logger = logging.getLogger(__name__)

__all__ = ["Pocket", "PocketWorld", "macro_accuracy"]

_RIM = 64
"""Points on an ellipse's rim checked when placing it."""

_TRIES = 10_000
"""Centre draws per pocket before the layout is declared impossible."""


class Pocket:
    """One elliptical pocket in the unit square.

    Args:
        centre: ``(u, t)`` of the centre.
        axes: The two semi-axes.
        angle: Rotation of the first axis from the ``u`` axis, radians.
    """

    def __init__(self, centre: tuple[float, float], axes: tuple[float, float], angle: float):
        self.centre = centre
        self.axes = axes
        self.angle = angle

    def contains(self, u: np.ndarray, t: np.ndarray, grow: float = 0.0) -> np.ndarray:
        """Whether each ``(u, t)`` lies inside the ellipse, its semi-axes grown by
        ``grow`` (boolean array)."""
        du, dt = u - self.centre[0], t - self.centre[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        a = (c * du + s * dt) / (self.axes[0] + grow)
        b = (-s * du + c * dt) / (self.axes[1] + grow)
        return np.asarray(a**2 + b**2 < 1.0)

    def rim(self, grow: float) -> np.ndarray:
        """``64 x 2`` points on the ellipse with both semi-axes grown by ``grow``."""
        theta = np.linspace(0.0, 2 * math.pi, _RIM, endpoint=False)
        a, b = self.axes[0] + grow, self.axes[1] + grow
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = a * np.cos(theta), b * np.sin(theta)
        return np.stack([self.centre[0] + c * x - s * y, self.centre[1] + s * x + c * y], 1)

    @property
    def area(self) -> float:
        """Area, as a fraction of the unit square."""
        return math.pi * self.axes[0] * self.axes[1]


@register_world("phase-pockets")
class PocketWorld(PhaseMapWorld):
    """Three large phases and ``n_pockets`` small pockets of rare phases (module docstring).

    Args:
        layout_seed: Seed of the random layout (boundaries and pockets).
        n_pockets: Number of rare phases, one pocket each (1 to 8).
        pocket_min: Smallest semi-axis of a pocket (unit-square units).
        pocket_max: Largest semi-axis of a pocket.
        margin: Least distance of a pocket from the large phases' boundaries, the other
            pockets and the edges.
        temperature_min_c: Lowest anneal temperature, degC.
        temperature_max_c: Highest anneal temperature, degC.
        output: Name of the output (default ``"phase"``).

    Raises:
        InvalidCampaignError: If an option is out of range (key ``options.<name>``) or the
            pockets do not fit.
    """

    def __init__(
        self,
        *,
        layout_seed: int = 0,
        n_pockets: int = 3,
        pocket_min: float = 0.05,
        pocket_max: float = 0.08,
        margin: float = 0.03,
        temperature_min_c: float = 300.0,
        temperature_max_c: float = 1100.0,
        output: str = "phase",
    ) -> None:
        super().__init__(
            temperature_min_c=temperature_min_c, temperature_max_c=temperature_max_c, output=output
        )
        problems: list[tuple[str, str]] = []
        if isinstance(layout_seed, bool) or not isinstance(layout_seed, int) or layout_seed < 0:
            problems.append(
                ("options.layout_seed", f"expected an integer >= 0, got {layout_seed!r}")
            )
        if isinstance(n_pockets, bool) or not isinstance(n_pockets, int) or not 1 <= n_pockets <= 8:
            problems.append(("options.n_pockets", f"expected 1 to 8, got {n_pockets!r}"))
        for key, value in (("pocket_min", pocket_min), ("pocket_max", pocket_max)):
            if not isinstance(value, (int, float)) or not 0.0 < value <= 0.2:
                problems.append((f"options.{key}", f"expected a number in (0, 0.2], got {value!r}"))
        if not problems and pocket_min > pocket_max:
            problems.append(("options.pocket_max", "must not be below pocket_min"))
        if not isinstance(margin, (int, float)) or not 0.0 <= margin <= 0.2:
            problems.append(("options.margin", f"expected a number in [0, 0.2], got {margin!r}"))
        if problems:
            raise InvalidCampaignError(None, problems)
        rng = np.random.default_rng(layout_seed)
        self.solvus = (rng.uniform(0.08, 0.15), rng.uniform(0.5, 1.5), rng.uniform())
        self.liquidus = (rng.uniform(0.05, 0.10), rng.uniform(0.5, 1.5), rng.uniform())
        self.pockets: list[Pocket] = []
        for k in range(n_pockets):
            self.pockets.append(self._place(rng, float(pocket_min), float(pocket_max), margin, k))
        self.n_phases = 3 + n_pockets

    def _large(self, u: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The large phase (0, 1 or 2) at each ``(u, t)``."""
        a1, f1, p1 = self.solvus
        a2, f2, p2 = self.liquidus
        b = 0.5 + a1 * np.sin(2 * math.pi * (f1 * t + p1))
        c = 0.72 + a2 * np.sin(2 * math.pi * (f2 * u + p2))
        return np.where(t > c, 2, np.where(u < b, 0, 1))

    def _place(
        self, rng: np.random.Generator, lo: float, hi: float, margin: float, k: int
    ) -> Pocket:
        """Draw pocket ``k`` until it fits (see the module docstring)."""
        axes = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        angle = float(rng.uniform(0.0, math.pi))
        for _ in range(_TRIES):
            centre = (float(rng.uniform()), float(rng.uniform()))
            pocket = Pocket(centre, axes, angle)
            ring = pocket.rim(margin)
            if ring.min() < 0.0 or ring.max() > 1.0:
                continue
            inner = np.vstack([ring, pocket.rim(0.0), np.array([centre])])
            large = self._large(inner[:, 0], inner[:, 1])
            if np.any(large != large[0]):
                continue
            if any(_overlap(pocket, o, margin) for o in self.pockets):
                continue
            return pocket
        raise InvalidCampaignError(
            None, [("options.n_pockets", f"pocket {k + 1} does not fit; use fewer or smaller")]
        )

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """The phase index at ``n x 2`` points (``x_b``, ``temperature_c`` in degC)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected an n x {self.dim} array, got shape {x.shape}")
        u = x[:, 0]
        t = (x[:, 1] - self.t_min) / (self.t_max - self.t_min)
        phase = self._large(u, t)
        for k, pocket in enumerate(self.pockets):
            phase = np.where(pocket.contains(u, t), 3 + k, phase)
        return phase.astype(np.int64)


def _overlap(a: Pocket, b: Pocket, margin: float) -> bool:
    """Whether two pockets come closer than ``margin``: a rim point or the centre of one
    inside the other grown by ``margin`` (two convex shapes that meet have a rim point of
    one inside the other, or one inside the other, centre included)."""
    for p, q in ((a, b), (b, a)):
        pts = np.vstack([p.rim(0.0), np.array([p.centre])])
        if q.contains(pts[:, 0], pts[:, 1], margin).any():
            return True
    return False


def macro_accuracy(
    predicted: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray
) -> float:
    """Macro-averaged accuracy (balanced accuracy): the mean over the phases present in
    ``truth`` of the fraction of that phase's points labelled correctly.

    Args:
        predicted: ``n`` predicted phase indices.
        truth: ``n`` true phase indices.

    Returns:
        A number in ``[0, 1]``; a phase never predicted contributes 0.
    """
    p, y = np.asarray(predicted), np.asarray(truth)
    if p.shape != y.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"expected two equal-length label vectors, got {p.shape} and {y.shape}")
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))
