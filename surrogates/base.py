"""The surrogate contract, the surrogate registry, and BoTorch ensemble models.

A surrogate learns a property from materials and predicts its mean **and** standard
deviation::

    model = make_surrogate("rf", descriptor="magpie").fit(["Fe2O3", "NaCl", ...], y)
    mean, std = model.predict(["Al2O3"])
    report = model.calibration(test_materials, test_y)  # MAE, R^2, NLL, miscalibration
    acqf = qLogNoisyExpectedImprovement(model.as_botorch_model(), X_baseline=rows)

``X`` is either an ``n x d`` float array of feature rows or a sequence of pymatgen
``Composition``/``Structure`` objects (or formulas), which a surrogate featurises with its
``descriptor`` option (:mod:`surrogates.descriptors`). The BoTorch model always takes
feature-row tensors (``batch x q x d``, the descriptor's output), so acquisition functions
run on every surrogate alike: a GP exposes its own posterior; every other surrogate is an
ensemble whose posterior is BoTorch's ``EnsemblePosterior`` over its members' predictions
(as BoTorch's ``EnsembleModel``). Use BoTorch's default sampler for those (``get_sampler``;
an ``EnsemblePosterior`` has no Gaussian base samples).

Ensembles underestimate or overestimate their error; with ``recalibrate`` (default) the
ensemble is first fitted without a held-out share of the data, and the predictive variance
``a^2 sigma^2 + b^2`` (``sigma``: the members' spread) whose ``a`` and ``b`` maximise the
Gaussian likelihood of the held-out errors is kept (variance scaling, Levi et al.,
"Evaluating and calibrating uncertainty prediction in regression tasks", Sensors 22, 5540
(2022), with an error floor ``b`` for what no member knows: measurement noise, shared bias);
then the members are refitted on all data. An ensemble of members fitted to bootstrap
resamples (the random forest) instead fits once and takes each row's error from the members
that did not draw it (its out-of-bag prediction, Breiman, "Out-of-bag estimation", 1996).
The BoTorch model carries the floor as two extra
members at ``mean +- b sqrt((s + 1) / 2)`` (and the real members' spread widened by
``sqrt((s + 1) / (s - 1))``), which gives exactly that variance.
"""

from __future__ import annotations

import importlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from botorch.models.ensemble import EnsembleModel
from botorch.models.model import Model
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Composition, Structure
from scipy.optimize import minimize
from torch import Tensor

from models.errors import RegistryError
from models.registry import Registry
from surrogates.descriptors import Descriptor, make_descriptor, validate_options
from surrogates.metrics import regression_report
from surrogates.seeding import seeded

logger = logging.getLogger(__name__)

__all__ = [
    "SURROGATES",
    "EnsembleSurrogate",
    "Surrogate",
    "SurrogateOptions",
    "feature_scaling",
    "make_surrogate",
    "register_surrogate",
    "surrogate_names",
]

_BUILTIN_MODULES = (
    "surrogates.classical",
    "surrogates.gp_surrogate",
    "surrogates.list_gp",
    "surrogates.mlp",
    "surrogates.cgcnn",
)
_MATERIALS = (Composition, Structure, str)


class SurrogateOptions(BaseModel):
    """Options every surrogate takes (frozen, unknown keys forbidden).

    Attributes:
        descriptor: Registered descriptor that featurises materials given to ``fit`` and
            ``predict`` (``None``: they take feature rows only).
        descriptor_options: Options of that descriptor.
        seed: Seed of every random choice the surrogate makes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    descriptor: str | None = None
    descriptor_options: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)


class Surrogate(ABC):
    """Base class of every surrogate.

    Subclasses set an ``Options`` model and implement :meth:`_fit`, :meth:`_predict` and
    :meth:`as_botorch_model`.

    Args:
        **options: Surrogate options (see the class's ``Options`` model).

    Raises:
        InvalidCampaignError: If an option is unknown or invalid
            (``surrogate.options.<key>``), or the descriptor's are
            (``descriptor.options.<key>``).
        RegistryError: If ``descriptor`` names no registered descriptor.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[SurrogateOptions]] = SurrogateOptions

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(type(self).Options, options, "surrogate.options")
        self.descriptor: Descriptor | None = None
        if self.options.descriptor is not None:
            self.descriptor = make_descriptor(
                self.options.descriptor, **self.options.descriptor_options
            )
        self.n_features: int | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.n_features is not None

    def featurize(self, X: ArrayLike | Sequence[Any]) -> NDArray[np.float64]:  # noqa: N803
        """Feature rows of ``X`` (rows pass through; materials go through the descriptor).

        Raises:
            ValueError: If materials are given without a ``descriptor`` option, or rows are
                not a finite ``n x d`` array.
        """
        if isinstance(X, Sequence) and len(X) > 0 and isinstance(X[0], _MATERIALS):
            if self.descriptor is None:
                raise ValueError(
                    f"surrogate {self.name!r} got materials but has no descriptor: set "
                    "surrogate.options.descriptor"
                )
            materials: list[Any] = list(X)
            return self.descriptor.featurize(materials)
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2:
            raise ValueError(f"expected an n x d array of feature rows, got shape {rows.shape}")
        if not np.all(np.isfinite(rows)):
            raise ValueError("feature rows contain NaN or infinite values")
        return rows

    def fit(self, X: ArrayLike | Sequence[Any], y: ArrayLike) -> Surrogate:  # noqa: N803
        """Fit to materials or feature rows and their targets; returns ``self``.

        Args:
            X: ``n x d`` feature rows, or ``n`` materials (with a ``descriptor`` option).
            y: ``n`` targets.

        Raises:
            ValueError: If shapes disagree, there are fewer than two points, or values are
                not finite.
        """
        x = self.featurize(X)
        t = np.asarray(y, dtype=np.float64).reshape(-1)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"X has {x.shape[0]} rows but y has {t.shape[0]} targets")
        if x.shape[0] < 2:
            raise ValueError("a surrogate needs at least two training points")
        if not np.all(np.isfinite(t)):
            raise ValueError("targets contain NaN or infinite values")
        with seeded(None):  # alone on the generator; seeding inside leaves the caller's
            self._fit(x, t)
        self.n_features = x.shape[1]
        logger.debug("fitted surrogate %s on %d x %d", self.name, *x.shape)
        return self

    def predict(
        self,
        X: ArrayLike | Sequence[Any],  # noqa: N803
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Predicted mean and standard deviation (both length ``n``, std > 0).

        Raises:
            RuntimeError: If the surrogate is not fitted.
            ValueError: If ``X`` has the wrong number of features.
        """
        if self.n_features is None:
            raise RuntimeError(f"surrogate {self.name!r} is not fitted")
        x = self.featurize(X)
        if x.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[1]}")
        mean, std = self._predict(x)
        return mean.reshape(-1), std.reshape(-1)

    def calibration(self, X: ArrayLike | Sequence[Any], y: ArrayLike) -> dict[str, float]:  # noqa: N803
        """MAE, R^2, Gaussian NLL and miscalibration area on held-out data."""
        mean, std = self.predict(X)
        return regression_report(y, mean, std)

    @abstractmethod
    def _fit(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        """Fit to ``n x d`` rows and ``n`` targets."""

    @abstractmethod
    def _predict(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and standard deviation at ``n x d`` rows."""

    @abstractmethod
    def as_botorch_model(self) -> Model:
        """A BoTorch model of one output over feature-row tensors (``batch x q x d``)."""


class EnsembleOptions(SurrogateOptions):
    """Options of ensemble surrogates.

    Attributes:
        recalibrate: Fit the spread scale and error floor to held-out errors.
        calibration_fraction: Share of the data held out to fit them.
    """

    recalibrate: bool = True
    calibration_fraction: float = Field(0.2, gt=0.0, lt=0.9)


class _MemberModel(EnsembleModel):
    """BoTorch ensemble over a surrogate's members, with a calibrated spread."""

    def __init__(self, members: Callable[[Tensor], Tensor], scale: float, floor: float) -> None:
        super().__init__()
        self._members = members
        self._scale = scale
        self._floor = floor
        self._num_outputs = 1

    def forward(self, X: Tensor) -> Tensor:  # noqa: N803 (BoTorch's name)
        """``batch x s x q x 1`` member predictions at ``batch x q x d`` rows."""
        batch, d = X.shape[:-1], X.shape[-1]
        values = self._members(X.reshape(-1, d))  # s x N
        mean = values.mean(dim=0, keepdim=True)
        s = values.shape[0]
        if self._floor > 0:
            widen = math.sqrt((s + 1) / (s - 1))
            c = self._floor * math.sqrt((s + 1) / 2)
            values = torch.cat([mean + self._scale * widen * (values - mean), mean + c, mean - c])
        else:
            values = mean + self._scale * (values - mean)
        s = values.shape[0]
        out = values.reshape(s, *batch).unsqueeze(-1)  # s x batch... x q x 1
        return out.movedim(0, -3).to(X)


class EnsembleSurrogate(Surrogate):
    """A surrogate whose prediction is an ensemble of members (BoTorch ``EnsembleModel``).

    Subclasses implement :meth:`_fit_members` and :meth:`_member_values`.
    """

    Options: ClassVar[type[SurrogateOptions]] = EnsembleOptions
    options: EnsembleOptions
    _min_std: float = 1e-9

    def _fit(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        self.scale, self.floor = 1.0, 0.0
        n = x.shape[0]
        n_cal = round(self.options.calibration_fraction * n)
        calibrate = self.options.recalibrate and n_cal >= 5 and n - n_cal >= 2
        self._y_std = float(np.std(y)) or 1.0
        if calibrate and self.out_of_bag:
            # one fit: each row is held out from the members that did not draw it
            self._fit_members(x, y)
            mean, std = self._out_of_bag_predictions(x)
            ok = np.isfinite(mean) & np.isfinite(std)
            if int(ok.sum()) >= 5:
                self.scale, self.floor = _fit_variance_map(
                    y[ok] - mean[ok], std[ok], float(np.std(y))
                )
            return
        if calibrate:
            rng = np.random.default_rng(self.options.seed)
            order = rng.permutation(n)
            cal, train = order[:n_cal], order[n_cal:]
            self._fit_held_out(x[train], y[train], x[cal], y[cal])
            with torch.no_grad():
                values = self._member_values(torch.as_tensor(x[cal])).double().cpu()
            mean, std = values.mean(0).numpy(), values.std(0).numpy()  # unbiased, as BoTorch
            self.scale, self.floor = _fit_variance_map(y[cal] - mean, std, float(np.std(y)))
            logger.debug(
                "surrogate %s: calibration scale %.3g, floor %.3g",
                self.name,
                self.scale,
                self.floor,
            )
        self._fit_members(x, y)

    def _predict(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        model = self.as_botorch_model()
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, x.shape[0], 4096):
                post: Any = model.posterior(torch.as_tensor(x[start : start + 4096]))
                means.append(post.mean.reshape(-1).double().cpu().numpy())
                stds.append(post.variance.reshape(-1).double().clamp_min(0).sqrt().cpu().numpy())
        std = np.maximum(np.concatenate(stds), self._min_std * self._y_std)
        return np.concatenate(means), std

    def as_botorch_model(self) -> Model:
        """BoTorch ``EnsembleModel`` whose members are this surrogate's (spread calibrated)."""
        if self.n_features is None:
            raise RuntimeError(f"surrogate {self.name!r} is not fitted")
        return _MemberModel(self._member_values, self.scale, self.floor)

    def member_predictions(
        self, x: ArrayLike, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Members, mean and standard deviation at feature rows, with the calibration.

        The members are spread about their mean by the calibrated scale ``a``; the standard
        deviation is ``sqrt(a^2 s^2 + b^2)`` (``s``: the members' unbiased spread, ``b``:
        the error floor), as :meth:`predict` gives.

        Args:
            x: ``n x d`` feature rows.
            device: Where the returned tensors live (default: the CPU).

        Returns:
            ``(members, mean, std)``: an ``m x n`` tensor and two of length ``n`` (double).

        Raises:
            RuntimeError: If the surrogate is not fitted.
        """
        if self.n_features is None:
            raise RuntimeError(f"surrogate {self.name!r} is not fitted")
        rows = torch.as_tensor(self.featurize(x), dtype=torch.double)
        with torch.no_grad():
            values = torch.cat(
                [self._member_values(chunk).double().cpu() for chunk in rows.split(16384)], dim=1
            ).to(device or torch.device("cpu"))
        mean = values.mean(dim=0)
        spread = values.std(dim=0) if values.shape[0] > 1 else torch.zeros_like(mean)
        members = mean + self.scale * (values - mean)
        var = (self.scale * spread) ** 2 + self.floor**2
        std = var.sqrt().clamp_min(self._min_std * self._y_std)
        return members, mean, std

    @property
    def out_of_bag(self) -> bool:
        """Whether the spread is calibrated on :meth:`_out_of_bag_predictions` (members
        fitted to resamples) instead of on a held-out split and a refit."""
        return False

    @abstractmethod
    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        """Fit every member to ``n x d`` rows and ``n`` targets."""

    def _out_of_bag_predictions(
        self, x: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and spread at the ``n`` training rows of the members that left each out.

        Only for ``out_of_bag`` ensembles; NaN where fewer than two members left a row out.
        """
        raise NotImplementedError(f"surrogate {self.name!r} has no out-of-bag members")

    def _fit_held_out(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        x_val: NDArray[np.float64],
        y_val: NDArray[np.float64],
    ) -> None:
        """The calibration fit: members fitted to ``x, y``, the rows ``x_val`` held out.

        By default :meth:`_fit_members`; a surrogate trained by gradient steps may use the
        held-out rows to stop early and so decide how long the refit on all rows trains.
        """
        self._fit_members(x, y)

    @abstractmethod
    def _member_values(self, x: Tensor) -> Tensor:
        """``s x n`` member predictions at ``n x d`` rows (a tensor like ``x``)."""


def feature_scaling(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and spread of each column of ``n x d`` training rows, for standardising.

    A column that does not vary in the training rows (spread below ``1e-9`` of its size,
    which a constant column's rounding error is) gets an infinite spread, so that it
    standardises to 0 everywhere: the training rows say nothing about it, and a candidate
    that differs there must not be read as lying ``1e12`` spreads away.

    Returns:
        ``(mean, std)``, each of length ``d``.
    """
    mean, std = x.mean(0), x.std(0)
    flat = std <= 1e-9 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(flat, np.inf, std)


def _fit_variance_map(
    residuals: NDArray[np.float64], spread: NDArray[np.float64], y_std: float
) -> tuple[float, float]:
    """``(a, b)`` maximising the Gaussian likelihood of residuals, variance ``a^2 s^2 + b^2``."""
    tiny = 1e-6 * (y_std or 1.0)
    r2, s2 = residuals**2, spread**2

    def nll(theta: NDArray[np.float64]) -> float:
        var = np.exp(2 * theta[0]) * s2 + np.exp(2 * theta[1]) + tiny**2
        return float(np.mean(0.5 * r2 / var + 0.5 * np.log(var)))

    a0 = math.sqrt(np.mean(r2 / np.maximum(s2, tiny**2)))  # pure variance scaling
    starts = [np.array([math.log(a0), math.log(tiny)])]
    starts.append(
        np.array([math.log(max(a0, 1e-3) / 2), math.log(math.sqrt(np.mean(r2)) / 2 + tiny)])
    )
    best = min((minimize(nll, s0, method="Nelder-Mead") for s0 in starts), key=lambda r: r.fun)
    a, b = (float(v) for v in np.exp(best.x))
    return a, (b if b > 10 * tiny else 0.0)


def _set_name(name: str, cls: type[Surrogate]) -> None:
    cls.name = name


SURROGATES: Registry[Surrogate] = Registry("surrogate", _set_name, group="sdlab.surrogates")


def register_surrogate(name: str) -> Callable[[type[Surrogate]], type[Surrogate]]:
    """Class decorator registering a surrogate under ``name``.

    Raises:
        RegistryError: If ``name`` is already registered.
    """
    return SURROGATES.register(name)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def surrogate_names() -> list[str]:
    """Names of every registered surrogate, sorted (the built-in ones included)."""
    _load_builtins()
    return SURROGATES.names()


def make_surrogate(name: str, **options: Any) -> Surrogate:
    """Build a registered surrogate (unfitted).

    Args:
        name: Registered surrogate name (see :func:`surrogate_names`).
        **options: Its options (a campaign's ``[planner.options.surrogate_options]``).

    Raises:
        RegistryError: If no surrogate has that name (the message lists the known ones).
        InvalidCampaignError: If an option is unknown or invalid
            (``surrogate.options.<key>``).
    """
    _load_builtins()
    if not isinstance(name, str):
        raise RegistryError(f"surrogate name must be a string, got {name!r}")
    return SURROGATES.get(name)(**options)
