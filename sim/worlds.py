"""Simulated worlds: hidden ground truths that simulated instruments measure.

A :class:`World` declares its inputs (with bounds) and outputs, and computes the noise-free
truth with :meth:`World.evaluate_true`. Noise is not part of a world: it is a separate
:class:`~sim.noise.NoiseModel`, as in BoTorch's ``test_functions/base.py``, so that tests
and benchmarks can score a campaign against the truth.

Worlds register by name with :func:`register_world` and are built with :func:`get_world`.
The built-in worlds wrap BoTorch's synthetic test functions with ``negate=True``, so larger
is always better:

* ``"hartmann6"``: the six-dimensional Hartmann function on ``[0, 1]^6``, maximum 3.32237.
* ``"branin"``: the Branin function on ``[-5, 10] x [0, 15]``, maximum -0.397887 at three
  points.
* ``"branin-currin"``: two objectives on ``[0, 1]^2``, BoTorch's ``BraninCurrin`` negated
  (outputs ``branin`` and ``currin``, both maximised); with BoTorch's reference point
  ``(-18, -6)`` the Pareto front's hypervolume is about 59.36.

Both are evaluated with NumPy from BoTorch's constants, copied here (a simulated instrument
evaluates its world on every measurement; one call into torch costs about a hundred times
more, and importing torch and BoTorch costs a simulated server seconds of CPU at start). The
BoTorch problem itself (:attr:`BoTorchWorld.problem`) is built only when it is asked for;
the tests check the constants against its buffers and the result against its ``forward``.

Further built-in worlds live in their own modules, each imported on the first lookup of its
name (:data:`WORLDS` declares them): ``"table"`` (:mod:`sim.table`, a lab's CSV data),
``"sara-anneal"`` (:mod:`sim.sara`, a lateral-gradient laser-anneal phase diagram with
reflectance spectra), ``"alab"`` (:mod:`sim.alab.world`, solid-state synthesis from
precursor powders) and the others named in :data:`_BUILTIN_WORLDS`.

References:
    Belakaria, S., Deshwal, A. and Doppa, J. R. (2019). Max-value Entropy Search for
    Multi-Objective Bayesian Optimization. NeurIPS 32 (Branin-Currin).
    Dixon, L. C. W. and Szegö, G. P. (1978). The global optimization problem: an
    introduction. In *Towards Global Optimisation 2*, pp. 1-15 (Hartmann and Branin).
    Balandat, M. et al. (2020). BoTorch: A Framework for Efficient Monte-Carlo Bayesian
    Optimization. NeurIPS 33.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from models.registry import Registry

if TYPE_CHECKING:
    import torch
    from botorch.test_functions.multi_objective import BraninCurrin
    from botorch.test_functions.synthetic import SyntheticTestFunction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Optimum:
    """The known global optimum of a world's output.

    Attributes:
        output: The output the optimum refers to.
        value: The best value of that output.
        direction: Whether ``value`` is a maximum or a minimum.
        optimizers: Every known input point that attains ``value``.
    """

    output: str
    value: float
    direction: Literal["maximize", "minimize"]
    optimizers: tuple[dict[str, float], ...] = ()


class World(ABC):
    """A hidden ground truth with named, bounded inputs and named outputs.

    Subclasses set ``name`` (through :func:`register_world`), declare :meth:`parameters`
    and :meth:`outputs`, and compute :meth:`evaluate_true`. Keyword options of a world's
    constructor are the ``options`` a simulation file gives it.
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def parameters(self) -> list[ParameterLimit]:
        """The inputs, in order, each with its bounds."""

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The outputs :meth:`evaluate_true` returns, in order."""

    @abstractmethod
    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free value of every output at one input point.

        Args:
            params: A value for every input named by :meth:`parameters`. Points outside
                the bounds are evaluated too; refusing them is the instrument server's job.

        Returns:
            One value per output, keyed by output name.

        Raises:
            ParameterLimitError: If an input is missing or not a number.
        """

    def uncertainty(self, output: str, params: Mapping[str, object]) -> float | None:
        """The standard uncertainty of ``output`` at ``params`` that the world itself knows
        (the spread of a table's replicate rows), or ``None``. Instruments add their own
        noise separately; this only says how uncertain the truth itself is."""
        return None

    @property
    def optimum(self) -> Optimum | None:
        """The known global optimum, or ``None`` when it is not known."""
        return None

    @property
    def optimal_value(self) -> float | None:
        """The best value of the (first) output, or ``None`` when it is not known."""
        opt = self.optimum
        return None if opt is None else opt.value

    @property
    def optimizers(self) -> list[dict[str, float]]:
        """Input points attaining :attr:`optimal_value` (empty when none are known)."""
        opt = self.optimum
        return [] if opt is None else [dict(p) for p in opt.optimizers]

    @property
    def parameter_names(self) -> list[str]:
        """Names of the inputs, in order."""
        return [p.name for p in self.parameters()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _buffer(module: torch.nn.Module, name: str) -> np.ndarray:
    """A tensor attribute of a BoTorch problem as a new float64 NumPy array."""
    import torch

    t = getattr(module, name)
    if not isinstance(t, torch.Tensor):  # pragma: no cover - BoTorch always sets these
        raise TypeError(f"{type(module).__name__}.{name} is not a tensor")
    return np.array(t.detach().cpu().double().numpy(), dtype=np.float64)


class BoTorchWorld(World):
    """A world backed by a BoTorch synthetic test function, negated so larger is better.

    Inputs are named ``x1 .. xd``; there is one output. Subclasses build the problem in
    :meth:`make_problem` and may override :meth:`evaluate_array` with a faster NumPy
    version; the default evaluates through torch. A subclass that also overrides
    :meth:`known_bounds` and :meth:`known_optimum` never imports torch unless
    :attr:`problem` is asked for.

    Args:
        output: Name of the output (default ``"y"``).
        limits: Per input, the limits a station measuring this world declares, when they
            differ from the world's bounds: ``{"x1": {"minimum": 0, "maximum": 0.8,
            "max_rate_per_s": 0.5}}``. ``minimum``/``maximum`` may only narrow the bounds;
            ``max_rate_per_s`` declares a rate limit (see
            :class:`~instruments.driver.ParameterLimit`). The truth is unchanged.

    Raises:
        InvalidCampaignError: If ``output`` is not a non-empty string (key ``options.output``)
            or ``limits`` is malformed (key ``options.limits.<input>[.<key>]``).
    """

    def __init__(self, *, output: str = "y", limits: Mapping[str, Any] | None = None) -> None:
        if not isinstance(output, str) or not output:
            raise InvalidCampaignError(
                None, [("options.output", f"expected a non-empty string, got {output!r}")]
            )
        self._output = output
        self._problem: SyntheticTestFunction | None = None
        self._bounds = self.known_bounds()  # 2 x d
        self._names = [f"x{i + 1}" for i in range(self._bounds.shape[1])]
        self._parameters = _declared_limits(
            [
                ParameterLimit(name=n, type="number", minimum=float(lo), maximum=float(hi))
                for n, lo, hi in zip(self._names, self._bounds[0], self._bounds[1], strict=True)
            ],
            limits,
        )
        self._optimum = self._make_optimum()

    @abstractmethod
    def make_problem(self) -> SyntheticTestFunction:
        """The BoTorch test function, built with ``negate=True``."""

    @property
    def problem(self) -> SyntheticTestFunction:
        """The BoTorch test function (built, importing BoTorch, on first use)."""
        if self._problem is None:
            self._problem = self.make_problem()
        return self._problem

    def known_bounds(self) -> np.ndarray:
        """The input bounds, shape ``2 x d``; by default read from :attr:`problem`."""
        return _buffer(self.problem, "bounds")

    def known_optimum(self) -> tuple[float, list[list[float]]] | None:
        """The optimal value and its optimizers (rows of ``d`` inputs), or ``None`` when
        unknown; by default read from :attr:`problem`."""
        import torch

        try:
            value = float(self.problem.optimal_value)
        except NotImplementedError:
            return None
        optimizers = getattr(self.problem, "optimizers", None)
        rows: list[list[float]] = []
        if isinstance(optimizers, torch.Tensor):
            rows = optimizers.detach().cpu().double().tolist()
        return value, rows

    @property
    def dim(self) -> int:
        """Number of inputs."""
        return len(self._names)

    @property
    def bounds(self) -> np.ndarray:
        """Input bounds, shape ``2 x d`` (row 0 lower, row 1 upper)."""
        return self._bounds.copy()

    def parameters(self) -> list[ParameterLimit]:
        """Inputs ``x1 .. xd`` with the BoTorch problem's bounds."""
        return list(self._parameters)

    def outputs(self) -> list[OutputSpec]:
        """The single scalar output."""
        return [OutputSpec(name=self._output, kind="scalar")]

    @property
    def parameter_names(self) -> list[str]:
        """``["x1", ..., "xd"]``."""
        return list(self._names)

    def to_array(self, params: Mapping[str, float]) -> np.ndarray:
        """The point as a length-``d`` float64 array in input order.

        Raises:
            ParameterLimitError: If an input is missing or not a number.
        """
        out = np.empty(len(self._names), dtype=np.float64)
        for i, n in enumerate(self._names):
            try:
                v = params[n]
            except KeyError:
                raise ParameterLimitError(n, None, f"world {self.name!r}: required") from None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterLimitError(n, v, f"world {self.name!r}: type number")
            out[i] = v
        return out

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """Noise-free values at many points.

        Args:
            x: Points, shape ``n x d``, inputs in :attr:`parameter_names` order.

        Returns:
            Values of the output, shape ``n``.
        """
        import torch

        with torch.no_grad():
            y = self.problem(torch.as_tensor(x, dtype=torch.float64), noise=False)
        return np.asarray(y.detach().cpu().numpy(), dtype=np.float64)

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free output at one point (see :meth:`World.evaluate_true`)."""
        x = self.to_array(params)
        return {self._output: float(self.evaluate_array(x[None, :])[0])}

    @property
    def optimum(self) -> Optimum | None:
        """BoTorch's known optimum, negated; ``None`` if BoTorch does not know it."""
        return self._optimum

    def _make_optimum(self) -> Optimum | None:
        known = self.known_optimum()
        if known is None:
            return None
        value, rows = known
        points = tuple({n: float(v) for n, v in zip(self._names, row, strict=True)} for row in rows)
        return Optimum(output=self._output, value=value, direction="maximize", optimizers=points)


_LIMIT_KEYS = ("minimum", "maximum", "max_rate_per_s")


def _declared_limits(
    bounds: list[ParameterLimit], limits: Mapping[str, Any] | None
) -> list[ParameterLimit]:
    """The world's bounds narrowed and rate-limited by a ``limits`` option."""
    if limits is None:
        return bounds
    if not isinstance(limits, Mapping):
        raise InvalidCampaignError(None, [("options.limits", "expected a table of inputs")])
    by_name = {b.name: b for b in bounds}
    problems: list[tuple[str, str]] = []
    for name, table in limits.items():
        path = f"options.limits.{name}"
        if name not in by_name:
            problems.append((path, f"no input {name!r} (inputs: {', '.join(by_name)})"))
            continue
        if not isinstance(table, Mapping):
            problems.append((path, "expected a table"))
            continue
        base = by_name[name]
        changes: dict[str, float] = {}
        for key, value in table.items():
            if key not in _LIMIT_KEYS:
                problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(_LIMIT_KEYS)})"))
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                problems.append((f"{path}.{key}", "expected a finite number"))
            else:
                changes[key] = float(value)
        bmin, bmax = float(base.minimum or 0.0), float(base.maximum or 0.0)
        if not bmin <= changes.get("minimum", bmin) <= changes.get("maximum", bmax) <= bmax:
            problems.append((path, f"limits must lie within the bounds [{bmin:g}, {bmax:g}]"))
        if changes.get("max_rate_per_s", 1.0) <= 0:
            problems.append((f"{path}.max_rate_per_s", "must be greater than 0"))
        if not problems:
            by_name[name] = base.model_copy(update=changes)
    if problems:
        raise InvalidCampaignError(None, problems)
    return [by_name[b.name] for b in bounds]


def _name_world(name: str, cls: type[World]) -> None:
    cls.name = name


_BUILTIN_WORLDS = {
    "table": "sim.table",
    "phase-map": "sim.phasemap",
    "phase-pockets": "sim.pockets",
    "sara-anneal": "sim.sara",
    "materials": "sim.materials.world",
    "augmented-branin": "sim.multifidelity",
    "augmented-hartmann6": "sim.multifidelity",
    "alab": "sim.alab.world",
    "formula-energy": "sim.materials.formula_world",
}
"""The built-in worlds of other modules: name -> module, imported on the name's first lookup."""

WORLDS: Registry[World] = Registry(
    "world", _name_world, group="sdlab.worlds", builtins=_BUILTIN_WORLDS
)
"""Every registered world class, by name."""

_W = TypeVar("_W", bound=type[World])


def register_world(name: str) -> Callable[[_W], _W]:
    """Class decorator registering a world under ``name``.

    Raises:
        RegistryError: If ``name`` is already registered.
    """

    return WORLDS.register(name)


def world_names() -> list[str]:
    """Names of every registered world (importing every built-in world's module)."""
    return WORLDS.names()


def get_world(name: str, **options: Any) -> World:
    """Build the world registered as ``name``.

    Args:
        name: A registered world name.
        **options: Keyword options of the world's constructor.

    Returns:
        A new world instance.

    Raises:
        RegistryError: If no world has that name (the message lists the known ones).
        InvalidCampaignError: If an option is unknown or has a bad value; the key path is
            ``options.<key>``.
    """
    cls = WORLDS.get(name)
    accepted = {
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise InvalidCampaignError(
            None,
            [
                (f"options.{k}", f"unknown option for world {name!r} (known: {known})")
                for k in unknown
            ],
        )
    return cls(**options)


@register_world("hartmann6")
class Hartmann6(BoTorchWorld):
    """Six-dimensional Hartmann function, negated: ``sum_i alpha_i exp(-sum_j A_ij (x_j -
    P_ij)^2)`` on ``[0, 1]^6``, maximum 3.32237 at
    ``(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)``."""

    # BoTorch's buffers, float32 there (rounded alike here, so both agree to the bit).
    ALPHA: ClassVar[np.ndarray] = np.array([1.0, 1.2, 3.0, 3.2], dtype=np.float32).astype(
        np.float64
    )  # 4
    A: ClassVar[np.ndarray] = np.array(
        [
            [10, 3, 17, 3.5, 1.7, 8],
            [0.05, 10, 17, 0.1, 8, 14],
            [3, 3.5, 1.7, 10, 17, 8],
            [17, 8, 0.05, 10, 0.1, 14],
        ],
        dtype=np.float32,
    ).astype(np.float64)  # 4 x 6
    P: ClassVar[np.ndarray] = np.array(
        [
            [1312, 1696, 5569, 124, 8283, 5886],
            [2329, 4135, 8307, 3736, 1004, 9991],
            [2348, 1451, 3522, 2883, 3047, 6650],
            [4047, 8828, 8732, 5743, 1091, 381],
        ],
        dtype=np.float32,
    ).astype(np.float64)  # 4 x 6
    OPTIMIZER: ClassVar[tuple[float, ...]] = (
        0.20169,
        0.150011,
        0.476874,
        0.275332,
        0.311652,
        0.6573,
    )

    def __init__(self, *, output: str = "y", limits: Mapping[str, Any] | None = None) -> None:
        super().__init__(output=output, limits=limits)
        self._alpha = self.ALPHA
        self._a = self.A
        self._p = 0.0001 * self.P

    def make_problem(self) -> SyntheticTestFunction:
        """BoTorch ``Hartmann(dim=6, negate=True)``."""
        from botorch.test_functions import Hartmann

        return Hartmann(dim=6, negate=True)

    def known_bounds(self) -> np.ndarray:
        """``[0, 1]^6``."""
        return np.array([[0.0] * 6, [1.0] * 6])

    def known_optimum(self) -> tuple[float, list[list[float]]]:
        """3.32237 at :attr:`OPTIMIZER` (BoTorch's values)."""
        return 3.32237, [list(self.OPTIMIZER)]

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """NumPy Hartmann-6 at points ``x`` (``n x 6``); returns shape ``n``."""
        x = np.asarray(x, dtype=np.float64)
        inner = np.sum(self._a * (x[..., None, :] - self._p) ** 2, axis=-1)  # n x 4
        return np.exp(-inner) @ self._alpha


_B = 5.1 / (4 * math.pi**2)
_C = 5 / math.pi
_T = 10 * (1 - 1 / (8 * math.pi))


@register_world("branin")
class BraninWorld(BoTorchWorld):
    """Branin function, negated, on ``[-5, 10] x [0, 15]``: maximum -0.397887 at
    ``(-pi, 12.275)``, ``(pi, 2.275)`` and ``(9.42478, 2.475)``."""

    def make_problem(self) -> SyntheticTestFunction:
        """BoTorch ``Branin(negate=True)``."""
        from botorch.test_functions import Branin

        return Branin(negate=True)

    def known_bounds(self) -> np.ndarray:
        """``[-5, 10] x [0, 15]``."""
        return np.array([[-5.0, 0.0], [10.0, 15.0]])

    def known_optimum(self) -> tuple[float, list[list[float]]]:
        """-0.397887 at three points (BoTorch's values)."""
        return -0.397887, [[-math.pi, 12.275], [math.pi, 2.275], [9.42478, 2.475]]

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """NumPy Branin (negated) at points ``x`` (``n x 2``); returns shape ``n``."""
        x = np.asarray(x, dtype=np.float64)
        x1 = x[..., 0]
        t1 = x[..., 1] - _B * x1**2 + _C * x1 - 6
        return -(t1**2 + _T * np.cos(x1) + 10)


@register_world("branin-currin")
class BraninCurrinWorld(World):
    """Branin and Currin on ``[0, 1]^2``, both negated so larger is better.

    Inputs ``x1``, ``x2``; outputs ``branin`` (the rescaled Branin function, negated) and
    ``currin`` (the Currin exponential function, negated), as BoTorch's
    ``BraninCurrin(negate=True)``. :attr:`ref_point` and :attr:`max_hv` are BoTorch's
    constants (in these negated units).
    """

    REF_POINT: ClassVar[tuple[float, float]] = (-18.0, -6.0)
    """BoTorch's reference point, negated."""
    MAX_HV: ClassVar[float] = 59.36011874867746
    """BoTorch's hypervolume of the Pareto front from :attr:`REF_POINT`."""

    def __init__(self) -> None:
        self._problem: BraninCurrin | None = None
        self.ref_point = list(self.REF_POINT)
        self.max_hv = self.MAX_HV

    @property
    def problem(self) -> BraninCurrin:
        """BoTorch's ``BraninCurrin(negate=True)`` (built, importing BoTorch, on first use)."""
        if self._problem is None:
            from botorch.test_functions.multi_objective import BraninCurrin

            self._problem = BraninCurrin(negate=True)
        return self._problem

    def parameters(self) -> list[ParameterLimit]:
        """``x1`` and ``x2`` in ``[0, 1]``."""
        return [
            ParameterLimit(name=n, type="number", minimum=0.0, maximum=1.0) for n in ("x1", "x2")
        ]

    def outputs(self) -> list[OutputSpec]:
        """``branin`` and ``currin``."""
        return [OutputSpec(name="branin", kind="scalar"), OutputSpec(name="currin", kind="scalar")]

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """Both outputs at points ``x`` (``n x 2``); returns ``n x 2`` (negated values)."""
        x = np.asarray(x, dtype=np.float64)
        u, v = 15 * x[..., 0] - 5, 15 * x[..., 1]
        t1 = v - _B * u**2 + _C * u - 6
        branin = t1**2 + _T * np.cos(u) + 10
        x0, x1 = x[..., 0], x[..., 1]
        with np.errstate(divide="ignore"):
            factor = 1 - np.exp(-1 / (2 * x1))
        numer = 2300 * x0**3 + 1900 * x0**2 + 2092 * x0 + 60
        denom = 100 * x0**3 + 500 * x0**2 + 4 * x0 + 20
        return -np.stack([branin, factor * numer / denom], axis=-1)

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free outputs at one point (see :meth:`World.evaluate_true`)."""
        x = np.empty(2, dtype=np.float64)
        for i, n in enumerate(("x1", "x2")):
            v = params.get(n)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterLimitError(n, v, f"world {self.name!r}: type number")
            x[i] = v
        y = self.evaluate_array(x[None, :])[0]
        return {"branin": float(y[0]), "currin": float(y[1])}
