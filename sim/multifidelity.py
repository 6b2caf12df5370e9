"""Multi-fidelity worlds: a cheap screening measurement and an expensive accurate one.

A multi-fidelity world has one extra input, ``fidelity`` in ``[0, 1]``: at fidelity 1 (the
target) it answers the truth of the underlying problem, at lower fidelities a biased version
of it, as a quick screening measurement would. :meth:`MultiFidelityWorld.evaluate_true`
answers at the fidelity asked for (what the instrument measures, before noise);
:meth:`MultiFidelityWorld.evaluate_target` answers at the target fidelity whatever
fidelity the point carries, which is what a campaign is scored by. How much a measurement
costs is the instrument's declaration (``cost`` and ``cost_per`` of the simulated
instrument), not the world's.

Built-in worlds wrap BoTorch's augmented test functions, negated so larger is better:

* ``"augmented-branin"``: inputs ``x1`` in ``[-5, 10]``, ``x2`` in ``[0, 15]`` and
  ``fidelity``; at fidelity ``s`` the quadratic coefficient of Branin is
  ``b - 0.1 (1 - s)``, which moves the optima. At ``s = 1`` it is Branin (maximum
  -0.397887).
* ``"augmented-hartmann6"``: inputs ``x1 .. x6`` in ``[0, 1]`` and ``fidelity``; the weight
  of the first Gaussian bump is ``1 - 0.1 (1 - s)``. At ``s = 1`` it is Hartmann-6
  (maximum 3.32237).

References:
    Wu, J., Toscano-Palmerin, S., Frazier, P. I. and Wilson, A. G. (2019). Practical
    Multi-fidelity Bayesian Optimization for Hyperparameter Tuning. UAI 35 (the augmented
    test functions).
    Balandat, M. et al. (2020). BoTorch: A Framework for Efficient Monte-Carlo Bayesian
    Optimization. NeurIPS 33.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from botorch.test_functions import AugmentedBranin, AugmentedHartmann
from botorch.test_functions.synthetic import SyntheticTestFunction

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError
from sim.worlds import Optimum, World, _buffer, _declared_limits, register_world

FIDELITY = "fidelity"
"""Name of the fidelity input of every multi-fidelity world."""

TARGET_FIDELITY = 1.0
"""The fidelity at which a multi-fidelity world answers the truth."""


class MultiFidelityWorld(World):
    """A BoTorch augmented test function, negated, with a ``fidelity`` input.

    Args:
        output: Name of the single output.
        limits: Narrower declared limits or rate limits of inputs, as for the other
            BoTorch worlds (``{"fidelity": {"minimum": 0.25}}``).

    Raises:
        InvalidCampaignError: If ``output`` is not a non-empty string or ``limits`` is
            malformed (key ``options.<key>``).
    """

    def __init__(self, *, output: str = "y", limits: Mapping[str, Any] | None = None) -> None:
        if not isinstance(output, str) or not output:
            raise InvalidCampaignError(
                None, [("options.output", f"expected a non-empty string, got {output!r}")]
            )
        self._output = output
        self.problem = self.make_problem()
        bounds = _buffer(self.problem, "bounds")
        d = self.problem.dim
        self._names = [f"x{i + 1}" for i in range(d - 1)] + [FIDELITY]
        self._parameters = _declared_limits(
            [
                ParameterLimit(name=n, type="number", minimum=float(lo), maximum=float(hi))
                for n, lo, hi in zip(self._names, bounds[0], bounds[1], strict=True)
            ],
            limits,
        )

    def make_problem(self) -> SyntheticTestFunction:
        """The BoTorch augmented test function (its last input is the fidelity)."""
        raise NotImplementedError

    def parameters(self) -> list[ParameterLimit]:
        """The design inputs, then ``fidelity`` in ``[0, 1]``."""
        return list(self._parameters)

    def outputs(self) -> list[OutputSpec]:
        """The single scalar output."""
        return [OutputSpec(name=self._output, kind="scalar")]

    def evaluate_array(self, x: np.ndarray) -> np.ndarray:
        """Noise-free values at points ``x`` (``n x d``, fidelity last); shape ``n``."""
        with torch.no_grad():
            y = self.problem(torch.as_tensor(x, dtype=torch.float64), noise=False)
        return np.asarray(-y.detach().cpu().numpy(), dtype=np.float64)

    def _array(self, params: Mapping[str, float]) -> np.ndarray:
        out = np.empty(len(self._names), dtype=np.float64)
        for i, n in enumerate(self._names):
            v = params.get(n)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParameterLimitError(n, v, f"world {self.name!r}: a finite number")
            out[i] = v
        return out

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free output at the point and fidelity given (see
        :meth:`World.evaluate_true`)."""
        return {self._output: float(self.evaluate_array(self._array(params)[None, :])[0])}

    def evaluate_target(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free output at the target fidelity; ``params["fidelity"]`` may be
        left out and is ignored."""
        return self.evaluate_true({**params, FIDELITY: TARGET_FIDELITY})

    @property
    def optimum(self) -> Optimum | None:
        """The optimum at the target fidelity."""
        value = -float(self.problem.optimal_value)
        points = tuple({**p, FIDELITY: TARGET_FIDELITY} for p in self._target_optimizers())
        return Optimum(output=self._output, value=value, direction="maximize", optimizers=points)

    def _target_optimizers(self) -> list[dict[str, float]]:
        return []


@register_world("augmented-branin")
class AugmentedBraninWorld(MultiFidelityWorld):
    """BoTorch's ``AugmentedBranin``, negated (see the module docstring)."""

    def make_problem(self) -> SyntheticTestFunction:
        """``AugmentedBranin(negate=False)`` (this class negates)."""
        return AugmentedBranin()

    def _target_optimizers(self) -> list[dict[str, float]]:
        return [
            {"x1": -math.pi, "x2": 12.275},
            {"x1": math.pi, "x2": 2.275},
            {"x1": 9.42478, "x2": 2.475},
        ]


@register_world("augmented-hartmann6")
class AugmentedHartmann6World(MultiFidelityWorld):
    """BoTorch's ``AugmentedHartmann``, negated (see the module docstring)."""

    def make_problem(self) -> SyntheticTestFunction:
        """``AugmentedHartmann()`` (this class negates)."""
        return AugmentedHartmann()

    def _target_optimizers(self) -> list[dict[str, float]]:
        x = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
        return [{f"x{i + 1}": v for i, v in enumerate(x)}]
