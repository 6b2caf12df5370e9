"""scikit-learn baselines as ensembles: random forest, gradient boosting, bagged SVR.

The materials-informatics literature's classical regressors (e.g. Ward et al., npj Comput.
Mater. 2, 16028 (2016), random forests on Magpie attributes), each turned into an ensemble
so it predicts an uncertainty and backs BoTorch acquisition functions like any ensemble:

* ``rf`` — a random forest (Breiman, Machine Learning 45, 5 (2001)); the members are its
  trees, and their spread is the uncertainty (as in Ling et al., "High-dimensional materials
  and process optimization using data-driven experimental design with well-calibrated
  uncertainty estimates", Integr. Mater. Manuf. Innov. 6, 207 (2017)).
* ``gbr`` — gradient boosting (Friedman, Ann. Stat. 29, 1189 (2001)), scikit-learn's
  histogram-based implementation (LightGBM's binning, Ke et al., NeurIPS 2017) for speed:
  ``n_members`` boosted ensembles, each fitted to its own random ``subsample`` of the rows
  and trying random feature subsets at each split (stochastic gradient boosting, Friedman,
  Comput. Stat. Data Anal. 38, 367 (2002), at the level of the members).
* ``svr`` — epsilon-support-vector regression with an RBF kernel on standardised features
  and targets, bagged (Breiman, "Bagging predictors", 1996) over bootstrap resamples.

Their spreads are recalibrated on held-out data (see :mod:`surrogates.base`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.svm import SVR
from torch import Tensor

from models.errors import InvalidCampaignError
from surrogates.base import (
    EnsembleOptions,
    EnsembleSurrogate,
    feature_scaling,
    register_surrogate,
)

logger = logging.getLogger(__name__)

__all__ = ["BaggedSVRSurrogate", "GradientBoostingSurrogate", "RandomForestSurrogate"]


def _numpy(x: Tensor) -> NDArray[np.float64]:
    return x.detach().double().cpu().numpy()


@register_surrogate("rf")
class RandomForestSurrogate(EnsembleSurrogate):
    """Random forest; the trees are the ensemble members.

    Options:
        n_estimators: Number of trees.
        max_features: Share of features tried at each split.
        min_samples_leaf: Smallest leaf.
        n_jobs: Trees fitted and evaluated in parallel threads (scikit-learn's ``n_jobs``;
            -1, the default: one per core).
        out_of_bag: Calibrate the spread on the trees' out-of-bag predictions, in one fit
            (``False``: on a held-out share and a refit, as the other ensembles do).
    """

    class Options(EnsembleOptions):
        n_estimators: int = Field(100, ge=2)
        max_features: float = Field(0.33, gt=0.0, le=1.0)
        min_samples_leaf: int = Field(1, ge=1)
        n_jobs: int = Field(-1, ge=-1)
        out_of_bag: bool = True

    options: Options

    @property
    def out_of_bag(self) -> bool:
        return self.options.out_of_bag

    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        self._forest = RandomForestRegressor(
            n_estimators=o.n_estimators,
            max_features=o.max_features,
            min_samples_leaf=o.min_samples_leaf,
            random_state=o.seed,
            n_jobs=o.n_jobs or 1,
        ).fit(x, y)

    def _tree_values(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """``trees x n`` predictions at ``n x d`` rows.

        The trees' own (Cython) predict on float32 rows, as ``DecisionTreeRegressor.predict``
        does after checking its input once per tree (checked once here instead); with
        ``n_jobs`` other than 1, groups of trees in threads (the trees' traversal releases
        the GIL), as scikit-learn's forest predicts.
        """
        x32 = np.ascontiguousarray(rows, dtype=np.float32)
        trees = self._forest.estimators_
        out = np.empty((len(trees), len(x32)))

        def run(part: range) -> None:
            for t in part:
                out[t] = trees[t].tree_.predict(x32).reshape(len(x32), -1)[:, 0]

        jobs = self.options.n_jobs
        workers = min(len(trees), (os.cpu_count() or 1) if jobs == -1 else max(jobs, 1))
        if workers <= 1:
            run(range(len(trees)))
        else:
            parts = [range(k, len(trees), workers) for k in range(workers)]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run, parts))
        return out

    def _member_values(self, x: Tensor) -> Tensor:
        values = self._tree_values(_numpy(x))
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)

    def _out_of_bag_predictions(
        self, x: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        values = self._tree_values(x)
        out = np.ones(values.shape, dtype=bool)
        for t, drawn in enumerate(self._forest.estimators_samples_):
            out[t, drawn] = False
        k = out.sum(0)
        safe = np.maximum(k, 1)
        mean = np.where(out, values, 0.0).sum(0) / safe
        var = np.where(out, (values - mean) ** 2, 0.0).sum(0) / np.maximum(k - 1, 1)
        nan = np.full_like(mean, np.nan)
        return np.where(k >= 2, mean, nan), np.where(k >= 2, np.sqrt(var), nan)


@register_surrogate("gbr")
class GradientBoostingSurrogate(EnsembleSurrogate):
    """Ensemble of gradient-boosted tree ensembles on random row subsamples (scikit-learn).

    Options:
        n_members: Number of boosted ensembles.
        n_estimators: Boosting iterations of each.
        learning_rate: Shrinkage.
        max_leaf_nodes: Leaves of each tree.
        min_samples_leaf: Smallest leaf.
        subsample: Share of the rows each member is fitted to (drawn without replacement).
        max_features: Share of features each split tries.
    """

    class Options(EnsembleOptions):
        n_members: int = Field(5, ge=2)
        n_estimators: int = Field(500, ge=1)
        learning_rate: float = Field(0.05, gt=0.0, le=1.0)
        max_leaf_nodes: int = Field(31, ge=2)
        min_samples_leaf: int = Field(5, ge=1)
        subsample: float = Field(0.8, gt=0.0, le=1.0)
        max_features: float = Field(0.5, gt=0.0, le=1.0)

    options: Options

    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        rng = np.random.default_rng(o.seed)
        n_rows = max(2, round(o.subsample * x.shape[0]))
        self._members = []
        for k in range(o.n_members):
            rows = rng.choice(x.shape[0], n_rows, replace=False)
            member = HistGradientBoostingRegressor(
                max_iter=o.n_estimators,
                learning_rate=o.learning_rate,
                max_leaf_nodes=o.max_leaf_nodes,
                min_samples_leaf=min(o.min_samples_leaf, max(1, n_rows // 4)),
                max_features=o.max_features,
                early_stopping=False,
                random_state=o.seed * 1000 + k,
            )
            self._members.append(member.fit(x[rows], y[rows]))

    def _member_values(self, x: Tensor) -> Tensor:
        rows = _numpy(x)
        values = np.stack([m.predict(rows) for m in self._members])
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)


@register_surrogate("svr")
class BaggedSVRSurrogate(EnsembleSurrogate):
    """Bagged RBF support-vector regressors on standardised features and targets.

    Options:
        n_members: Number of bootstrap members.
        C: Regularisation (in standardised target units).
        epsilon: Width of the insensitive tube (standardised target units).
        gamma: RBF kernel coefficient, or ``"scale"`` (scikit-learn's default).
    """

    class Options(EnsembleOptions):
        n_members: int = Field(10, ge=2)
        C: float = Field(10.0, gt=0.0)
        epsilon: float = Field(0.05, ge=0.0)
        gamma: float | str = "scale"

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(self.options.gamma, str) and self.options.gamma not in ("scale", "auto"):
            raise InvalidCampaignError(
                None, [("surrogate.options.gamma", "expected a number, 'scale' or 'auto'")]
            )

    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        self._x_mean, self._x_std = feature_scaling(x)
        self._y_mean, self._y_scale = float(y.mean()), float(y.std()) or 1.0
        xs = (x - self._x_mean) / self._x_std
        ys = (y - self._y_mean) / self._y_scale
        rng = np.random.default_rng(o.seed)
        self._members = []
        for _ in range(o.n_members):
            idx = rng.integers(0, x.shape[0], x.shape[0])
            svr = SVR(kernel="rbf", C=o.C, epsilon=o.epsilon, gamma=o.gamma)
            self._members.append(svr.fit(xs[idx], ys[idx]))

    def _member_values(self, x: Tensor) -> Tensor:
        rows = (_numpy(x) - self._x_mean) / self._x_std
        values = np.stack([m.predict(rows) for m in self._members])
        values = values * self._y_scale + self._y_mean
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
