"""Bayesian optimisation with qLogNoisyExpectedImprovement on a single-task GP.

The ``qlognei`` planner starts with a scrambled Sobol initial design, then fits a GP
(:func:`surrogates.gp.fit_single_task_gp`) to the feasible observations and proposes the
batch maximising q-Log Noisy Expected Improvement (Ament et al., "Unexpected Improvements to
Expected Improvement for Bayesian Optimization", NeurIPS 2023; noisy EI after Letham et al.,
"Constrained Bayesian Optimization with Noisy Experiments", Bayesian Analysis 2019).
Experiments still running are passed as ``x_pending``, so the acquisition integrates over
their unknown outcomes and asynchronous proposals do not pile up on one spot (the "fantasy"
treatment of pending points, Snoek et al., NeurIPS 2012).

Limitations, by design for now:

* Exactly one objective. Campaigns with several objectives use ``random`` or ``sobol``.
* Integer and categorical parameters are optimised as a continuous relaxation of the model
  encoding (:mod:`planners.encoding`) and rounded afterwards (one-hot: largest column wins);
  the reported scores are those of the rounded points. BoTorch's mixed optimisers
  (``optimize_acqf_mixed_alternating``) are future work.
* Failed (infeasible) experiments are left out of the GP; feasibility modelling is future
  work. They still count towards the initial design and appear in ``details``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from pydantic import Field

from models.errors import PlannerError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from models.records import Decision, Proposal
from planners.base import Planner, PlannerOptions, register_planner
from planners.encoding import SpaceEncoder, training_data
from planners.random import sobol_unit
from surrogates.gp import default_device, fit_single_task_gp, hyperparameters_of

logger = logging.getLogger(__name__)

__all__ = ["QLogNEIPlanner"]

ACQUISITION = "qLogNoisyExpectedImprovement"
MIN_TRAIN_POINTS = 2
"""Feasible observations needed before the GP is fitted; fewer keep the Sobol design going."""


class QLogNEIOptions(PlannerOptions):
    """Options of the ``qlognei`` planner (``[planner.options]``).

    Attributes:
        initial_points: Size of the Sobol initial design (told plus pending experiments count
            towards it); default ``2 * n_parameters`` clipped to ``[4, 10]``.
        num_restarts: Starting points of the gradient-based acquisition optimisation.
        raw_samples: Random points screened to choose those starting points.
        mc_samples: Quasi-Monte-Carlo samples of the acquisition's expectation.
        maxiter: Iteration limit of each L-BFGS-B acquisition optimisation run.
    """

    initial_points: int | None = Field(default=None, ge=1, le=10_000)
    num_restarts: int = Field(default=8, ge=1, le=1024)
    raw_samples: int = Field(default=256, ge=1, le=1_000_000)
    mc_samples: int = Field(default=128, ge=8, le=16_384)
    maxiter: int = Field(default=200, ge=1, le=100_000)


@register_planner("qlognei")
class QLogNEIPlanner(Planner):
    """Batch, asynchronous Bayesian optimisation of one objective with qLogNEI.

    ``Decision.details`` holds ``phase`` (``"initial_design"`` or ``"bayesopt"``),
    ``initial_points``, ``n_feasible``, ``n_infeasible``, ``n_incomplete``,
    ``decision_seed``, ``repeat`` and, in the ``bayesopt`` phase, ``acquisition``,
    ``hyperparameters`` (see :func:`surrogates.gp.hyperparameters_of`), ``seconds_fit``,
    ``seconds_acq``, ``joint_acquisition_value``, ``best_observed`` (in the objective's
    units), ``relaxation``, ``device``, ``warnings`` (how many warnings fitting and
    optimising raised; they are logged at debug level, not re-emitted) and ``n_repeats``
    (proposals identical to an observed or pending point, which rounding makes possible).
    ``candidate_scores`` are the log-EI values of the proposed points, each given the
    pending points; proposals come best first.
    """

    version = "1"
    Options = QLogNEIOptions
    options: QLogNEIOptions

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create the planner; see :class:`QLogNEIOptions` for the options.

        Raises:
            PlannerError: If there is not exactly one objective.
            InvalidCampaignError: If an option is unknown or invalid.
        """
        super().__init__(space, objectives, seed=seed, **options)
        if len(self.objectives) != 1:
            names = ", ".join(o.name for o in self.objectives)
            raise PlannerError(
                f"qlognei optimises exactly one objective, got {len(self.objectives)} "
                f"({names}); use 'random' or 'sobol' for several objectives"
            )
        self.encoder = SpaceEncoder(space)
        n_init = self.options.initial_points
        self.initial_points = n_init if n_init is not None else min(max(2 * len(space), 4), 10)
        self.device = default_device()

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` experiments: Sobol points while in the initial design, else qLogNEI.

        Args:
            n: Number of proposals.
            pending: Points still being measured.

        Returns:
            The decision.

        Raises:
            PlannerError: If ``n`` is invalid or the GP cannot be fitted.
            ParameterLimitError: If a pending point lies outside the search space.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        objective = self.objectives[0]
        data = training_data(self.encoder, self._observations, self.objectives)
        n_train = len(self._observations)
        details: dict[str, Any] = {
            "initial_points": self.initial_points,
            "n_feasible": data.n,
            "n_infeasible": data.n_infeasible,
            "n_incomplete": data.n_incomplete,
            "decision_seed": seed,
            "repeat": repeat,
        }
        used = n_train + len(pending)
        if used < self.initial_points or data.n < MIN_TRAIN_POINTS:
            unit = sobol_unit(self.encoder.n_params, seed=self.seed, skip=used, n=n)
            proposals = [
                Proposal(parameters=p, origin="sobol") for p in self.encoder.from_unit(unit)
            ]
            details["phase"] = "initial_design"
            details["sequence_start"] = used
            return self.decision(proposals, len(pending), t0, details)

        dev, dtype = self.device, torch.double
        with (
            torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            torch.manual_seed(seed)
            t_fit = time.perf_counter()
            try:
                model = fit_single_task_gp(
                    data.X, data.Y, bounds=self.encoder.bounds(dtype), device=dev
                )
            except Exception as exc:  # GPyTorch/BoTorch raise a variety of errors
                raise PlannerError(f"qlognei: fitting the GP failed: {exc}") from exc
            seconds_fit = time.perf_counter() - t_fit

            t_acq = time.perf_counter()
            x_pending = self.encoder.encode(pending, dtype).to(dev) if pending else None
            acqf = qLogNoisyExpectedImprovement(
                model=model,
                X_baseline=data.X.to(dev, dtype),
                sampler=SobolQMCNormalSampler(
                    sample_shape=torch.Size([self.options.mc_samples]), seed=seed % (2**31)
                ),
                X_pending=x_pending,
                prune_baseline=True,
            )
            candidates, _ = optimize_acqf(
                acq_function=acqf,
                bounds=self.encoder.bounds(dtype).to(dev),
                q=n,
                num_restarts=self.options.num_restarts,
                raw_samples=self.options.raw_samples,
                options={"seed": seed % (2**31), "maxiter": self.options.maxiter},
                sequential=n > 1,
            )
            points = self.encoder.decode(candidates)
            x_chosen = self.encoder.encode(points, dtype).to(dev)
            with torch.no_grad():
                scores = acqf(x_chosen.unsqueeze(1)).reshape(-1).cpu().tolist()
                joint = float(acqf(x_chosen.unsqueeze(0)).reshape(-1)[0])
            seconds_acq = time.perf_counter() - t_acq

        for w in caught:
            logger.debug("qlognei: %s: %s", w.category.__name__, w.message)
        order = sorted(range(n), key=lambda i: -scores[i])
        proposals = [
            Proposal(parameters=points[i], score=float(scores[i]), origin="acquisition")
            for i in order
        ]
        best = objective.sign * float(data.Y[:, 0].max())
        seen = {_key(o.parameters) for o in self._observations} | {_key(q) for q in pending}
        n_repeats = sum(_key(p) in seen for p in points)
        details.update(
            phase="bayesopt",
            acquisition=ACQUISITION,
            hyperparameters=hyperparameters_of(model),
            seconds_fit=seconds_fit,
            seconds_acq=seconds_acq,
            joint_acquisition_value=joint,
            best_observed=best,
            relaxation="continuous relaxation, integers rounded, one-hot argmax",
            num_restarts=self.options.num_restarts,
            raw_samples=self.options.raw_samples,
            device=str(dev),
            warnings=len(caught),
            n_repeats=n_repeats,
        )
        logger.debug(
            "qlognei: %d proposals from %d feasible points (fit %.3f s, acq %.3f s)",
            n,
            data.n,
            seconds_fit,
            seconds_acq,
        )
        return self.decision(
            proposals, len(pending), t0, details, [float(scores[i]) for i in order]
        )


def _key(point: Mapping[str, ParamValue]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a point (values compared by their ``repr``)."""
    return tuple(sorted((k, repr(v)) for k, v in point.items()))
