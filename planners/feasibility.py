"""Feasibility-weighted acquisition: the acquisition times the probability of success.

Failed experiments train a classifier (:mod:`surrogates.classifier`); instead of being
dropped, they make every later proposal weigh what it promises by how likely it is to work:
``alpha(X) * prod_i P(success | x_i)`` for a batch ``X`` of ``q`` points (the points' outcomes
treated as independent). For acquisition functions in log space (the LogEI family, whose
``_log`` flag is set) the log probability is added instead, which keeps the product
accurate where both factors are tiny. This is the feasibility-weighted acquisition of
Anubis (Hickman et al., Digital Discovery 2025) and of constrained EI with a classifier
(Gelbart, Snoek and Adams, UAI 2014).
"""

from __future__ import annotations

import logging

import torch
from botorch.acquisition import AcquisitionFunction
from torch import Tensor

from surrogates.classifier import FeasibilityClassifier

logger = logging.getLogger(__name__)

__all__ = ["FeasibilityWeighted"]

BARRIER_WIDTH = 0.05
"""Width of the probability barrier, in probit units of the classifier's latent."""


class FeasibilityWeighted(AcquisitionFunction):
    """Wrap an acquisition function so that it is weighted by ``P(success)``.

    Pending points are handed to the wrapped function, so sequential batch optimisation
    (``optimize_acqf(..., sequential=True)``, ``optimize_acqf_discrete``) works as before.

    With ``min_probability`` above zero, points less likely to succeed are also pushed
    away by a steep smooth barrier in the classifier's probit units (the feasibility-
    constrained acquisition of Anubis): ``logsigmoid((z - z_min) / 0.05)`` per point, where
    ``P = Phi(z)`` and ``z_min = Phi^-1(min_probability)``.

    Args:
        base: The acquisition function to weight.
        classifier: The fitted success classifier (inputs in the model encoding).
        min_probability: Success probability below which proposals are barred (0: none).
    """

    def __init__(
        self,
        base: AcquisitionFunction,
        classifier: FeasibilityClassifier,
        min_probability: float = 0.0,
    ) -> None:
        super().__init__(model=base.model)
        self.base = base
        self.classifier = classifier
        self._log = bool(getattr(base, "_log", False))
        self.min_probability = float(min_probability)
        self._z_min = float(torch.special.ndtri(torch.tensor(min_probability)))
        pending = getattr(base, "X_pending", None)
        super().set_X_pending(pending if isinstance(pending, Tensor) else None)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:  # noqa: N802, N803
        """Pass pending points (``p x d``) to the wrapped function (and keep a copy)."""
        self.base.set_X_pending(X_pending)
        super().set_X_pending(X_pending)

    def forward(self, X: Tensor) -> Tensor:  # noqa: N803
        """Weighted acquisition values of ``b x q x d`` batches (shape ``b``)."""
        value = self.base(X)
        z = self.classifier.probit(X)
        log_p = torch.special.log_ndtr(z)
        if self.min_probability > 0.0:
            log_p = log_p + torch.nn.functional.logsigmoid((z - self._z_min) / BARRIER_WIDTH)
        log_p = log_p.sum(dim=-1)
        return value + log_p if self._log else value * log_p.exp()
