"""Phase maps from lateral-gradient anneal measurements, and how to score them.

The SARA planner (:mod:`planners.sara`) and its benchmark infer a phase map over (local
temperature, dwell) from reflectance descriptors measured across annealed stripes, as in
Ament et al., "Autonomous materials synthesis via hierarchical active learning of
nonequilibrium phase diagrams", Sci. Adv. 7, eabg4930 (2021):

1. every measurement is placed at its local temperature through the calibrated lateral
   temperature profile of its stripe (:class:`GaussianProfile`);
2. the descriptor vectors are clustered into phases (scikit-learn's average-linkage
   ``AgglomerativeClustering`` with a distance threshold, so the number of phases is not
   assumed);
3. every point of a (temperature, log dwell) grid takes the phase of the nearest
   measurement (scikit-learn ``KNeighborsClassifier``, one neighbour, both axes scaled to
   their range).

:func:`map_accuracy` scores a map against the true one: the fraction of grid points whose
phase is right after the best one-to-one matching of inferred clusters to true phases
(Hungarian algorithm, SciPy ``linear_sum_assignment``); an extra inferred cluster matches
nothing and its points count as wrong.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering
from sklearn.neighbors import KNeighborsClassifier

logger = logging.getLogger(__name__)

__all__ = [
    "GaussianProfile",
    "cluster_phases",
    "evaluation_grid",
    "infer_phase_map",
    "map_accuracy",
]


@dataclass(frozen=True)
class GaussianProfile:
    """The calibrated lateral temperature profile of a stripe.

    ``T(x) = ambient_c + (tpeak_c - ambient_c) * exp(-(x - center_mm)^2 / (2 w^2))`` with
    ``w = width_mm * (1 + width_log_dwell_slope * (log10(dwell_us) - 3))``.

    Attributes:
        ambient_c: Temperature far from the stripe (degC).
        width_mm: Width ``w`` at a dwell of 1 ms (1000 us).
        width_log_dwell_slope: Relative growth of ``w`` per decade of dwell.
        center_mm: Position of the stripe's centre line.
    """

    ambient_c: float = 25.0
    width_mm: float = 0.55
    width_log_dwell_slope: float = 0.12
    center_mm: float = 0.0

    def width(self, dwell_us: np.ndarray | float) -> np.ndarray:
        """Profile width (mm) at a dwell (us); broadcasts."""
        ld = np.log10(np.asarray(dwell_us, dtype=np.float64))
        return self.width_mm * (1.0 + self.width_log_dwell_slope * (ld - 3.0))

    def temperature(
        self,
        tpeak_c: np.ndarray | float,
        dwell_us: np.ndarray | float,
        position_mm: np.ndarray | float,
    ) -> np.ndarray:
        """Local temperature (degC) at a position across a stripe; broadcasts."""
        x = np.asarray(position_mm, dtype=np.float64) - self.center_mm
        profile = np.exp(-0.5 * (x / self.width(dwell_us)) ** 2)
        return self.ambient_c + (np.asarray(tpeak_c, dtype=np.float64) - self.ambient_c) * profile

    def position(
        self, tpeak_c: float, dwell_us: float, t_local_c: np.ndarray | float
    ) -> np.ndarray:
        """Distance (mm, >= 0) from the centre line at which the stripe reaches a temperature.

        Temperatures at or above ``tpeak_c`` map to 0; at or below ambient to infinity.
        """
        t = np.asarray(t_local_c, dtype=np.float64)
        frac = (t - self.ambient_c) / max(tpeak_c - self.ambient_c, 1e-9)
        frac = np.clip(frac, 1e-300, 1.0)
        return np.asarray(self.width(dwell_us) * np.sqrt(-2.0 * np.log(frac)))


def cluster_phases(descriptors: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster descriptor vectors into phases.

    Args:
        descriptors: ``n x m`` descriptor vectors (e.g. band-averaged reflectances).
        threshold: Average-linkage distance (in descriptor units) above which two clusters
            stay apart; a few times the noise of one descriptor vector.

    Returns:
        ``n`` integer labels, ``0 .. k-1``.
    """
    y = np.asarray(descriptors, dtype=np.float64)
    if y.shape[0] < 2:
        return np.zeros(y.shape[0], dtype=np.int64)
    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, linkage="average"
    )
    return np.asarray(model.fit_predict(y), dtype=np.int64)


def infer_phase_map(
    t_local_c: np.ndarray,
    log_dwell: np.ndarray,
    descriptors: np.ndarray,
    grid_t_c: np.ndarray,
    grid_log_dwell: np.ndarray,
    *,
    threshold: float = 0.05,
    t_range_c: tuple[float, float] = (0.0, 1400.0),
    log_dwell_range: tuple[float, float] = (2.0, 4.0),
) -> np.ndarray:
    """The phase map a set of measurements implies on a grid.

    Args:
        t_local_c: ``n`` local temperatures of the measurements (degC).
        log_dwell: ``n`` values of ``log10(dwell_us)``.
        descriptors: ``n x m`` descriptor vectors.
        grid_t_c: ``g`` grid temperatures.
        grid_log_dwell: ``g`` grid ``log10(dwell_us)`` values (paired with ``grid_t_c``).
        threshold: Clustering threshold (see :func:`cluster_phases`).
        t_range_c: Range that scales the temperature axis for the nearest-neighbour rule.
        log_dwell_range: Range that scales the log-dwell axis.

    Returns:
        ``g`` inferred phase labels (cluster numbers, not true phase indices).

    Raises:
        ValueError: If there are no measurements.
    """
    if len(t_local_c) == 0:
        raise ValueError("a phase map needs at least one measurement")
    labels = cluster_phases(descriptors, threshold)
    scale = np.array(
        [t_range_c[1] - t_range_c[0], log_dwell_range[1] - log_dwell_range[0]], dtype=np.float64
    )
    x = np.column_stack([t_local_c, log_dwell]) / scale
    grid = np.column_stack([grid_t_c, grid_log_dwell]) / scale
    knn = KNeighborsClassifier(n_neighbors=1).fit(x, labels)
    return np.asarray(knn.predict(grid), dtype=np.int64)


def map_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of grid points whose phase is right, after the best cluster-to-phase matching.

    Args:
        predicted: ``g`` inferred labels (any integers).
        truth: ``g`` true phase indices.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    p = np.asarray(predicted)
    t = np.asarray(truth)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"predicted {p.shape} and truth {t.shape} must be equal, non-empty")
    pv, pi = np.unique(p, return_inverse=True)
    tv, ti = np.unique(t, return_inverse=True)
    counts = np.zeros((len(pv), len(tv)), dtype=np.int64)
    np.add.at(counts, (pi, ti), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum()) / float(p.size)


def evaluation_grid(
    t_range_c: tuple[float, float], dwell_range_us: tuple[float, float], n_t: int, n_dwell: int
) -> tuple[np.ndarray, np.ndarray]:
    """A regular grid over (temperature, log10 dwell), flattened.

    Returns:
        ``(t_c, log_dwell)``, each of length ``n_t * n_dwell``.
    """
    t = np.linspace(t_range_c[0], t_range_c[1], n_t)
    ld = np.linspace(math.log10(dwell_range_us[0]), math.log10(dwell_range_us[1]), n_dwell)
    tt, dd = np.meshgrid(t, ld, indexing="ij")
    return tt.reshape(-1), dd.reshape(-1)
