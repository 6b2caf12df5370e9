"""Active-learning planners that map a space instead of optimising it: ``uncertainty``.

Mapping asks "what is the property everywhere?" rather than "where is it best?". The
``uncertainty`` planner fits GPs (:mod:`surrogates.gp`, one output per objective) and
proposes the batch that most reduces the posterior variance integrated over the space:
BoTorch's ``qNegIntegratedPosteriorVariance`` (integrated variance reduction, Seo,
Wallat, Graepel and Obermayer, "Gaussian Process Regression: Active Data Selection and
Test Point Rejection", IJCNN 2000; the batch form follows Chevalier and Ginsbourger,
LION 2013). It is chosen over plain "largest posterior standard deviation" because

* it scores a *batch* jointly: a GP's posterior variance does not depend on the values
  observed, so fantasising the batch (and the pending experiments, as ``X_pending``)
  gives the exact variance after they are measured: no duplicate proposals, no
  heuristic penalty;
* it integrates over the whole space, so it does not waste experiments on the corners
  and edges where the maximum-variance rule piles up (MacKay, "Information-Based
  Objective Functions for Active Data Selection", Neural Computation 1992).

Several objectives are mapped together: the variances are summed in standardised units
(a ``ScalarizedPosteriorTransform`` with weights ``1 / std``). The direction of an
objective is ignored. The integral is a Monte-Carlo average over ``mc_points`` fixed Sobol
points, and proposals are chosen greedily among ``n_candidates`` Sobol candidates drawn per
decision, which handles integer, categorical and linearly constrained spaces alike. The
greedy scores are computed in closed form (:func:`greedy_integrated_variance`), equal to
``qNegIntegratedPosteriorVariance``'s values but without fantasising one model per
candidate. Before the GP there is a scrambled Sobol initial design,
as in :mod:`planners.bo`.

:class:`ActiveLearningPlanner` holds what ``uncertainty`` and ``boundary``
(:mod:`planners.boundary`) share: the initial design and the candidate sets.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.posteriors import GPyTorchPosterior
from pydantic import Field
from torch import Tensor

from models.errors import PlannerError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from models.records import Decision, Proposal
from planners.base import Planner, PlannerOptions, register_planner
from planners.candidates import point_key
from planners.constraints import polytope_unit_samples
from planners.encoding import SpaceEncoder, training_data
from planners.random import sobol_unit
from surrogates.gp import fit_single_task_gp, hyperparameters_of
from surrogates.seeding import seeded

logger = logging.getLogger(__name__)

__all__ = ["ActiveLearningOptions", "ActiveLearningPlanner", "UncertaintyPlanner"]

MIN_TRAIN_POINTS = 2
"""Usable observations needed before a model is fitted; fewer keep the Sobol design going."""


class ActiveLearningOptions(PlannerOptions):
    """Options every active-learning planner has (``[planner.options]``).

    Attributes:
        initial_points: Size of the Sobol initial design (told plus pending experiments
            count towards it); default ``2 * n_parameters`` clipped to ``[4, 10]``.
        n_candidates: Sobol candidates drawn per decision, among which proposals are chosen.
    """

    initial_points: int | None = Field(default=None, ge=1, le=10_000)
    n_candidates: int = Field(default=1024, ge=16, le=1_000_000)


class ActiveLearningPlanner(Planner):
    """Base of the mapping planners: Sobol initial design, then :meth:`plan`.

    ``Decision.details`` always holds ``phase`` (``"initial_design"`` or the planner's
    model phase), ``initial_points``, ``decision_seed`` and ``repeat``; :meth:`plan` adds
    the rest.
    """

    options: ActiveLearningOptions
    model_phase = "active_learning"

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create the planner; see the class's ``Options`` for the options.

        Raises:
            InvalidCampaignError: If an option is unknown or invalid.
        """
        super().__init__(space, objectives, seed=seed, **options)
        self.encoder = SpaceEncoder(space)
        n_init = self.options.initial_points
        self.initial_points = n_init if n_init is not None else min(max(2 * len(space), 4), 10)

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` experiments: Sobol points during the initial design, else
        :meth:`plan`.

        Raises:
            PlannerError: If ``n`` is invalid (or above ``n_candidates``) or the model
                cannot be fitted.
            ParameterLimitError: If a pending point lies outside the search space.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        if n > self.options.n_candidates:
            raise PlannerError(
                f"{self.name}: {n} proposals wanted from {self.options.n_candidates} candidates;"
                " raise planner.options.n_candidates"
            )
        seed, repeat = self.decision_seed(len(pending))
        details: dict[str, Any] = {
            "initial_points": self.initial_points,
            "decision_seed": seed,
            "repeat": repeat,
        }
        used = len(self._observations) + len(pending)
        if used < self.initial_points or self.n_usable() < MIN_TRAIN_POINTS:
            unit = sobol_unit(self.encoder.n_params, seed=self.seed, skip=used, n=n)
            if self.space.constraints:
                unit = polytope_unit_samples(self.encoder, unit, seed=self.seed + used)
            details.update(phase="initial_design", sequence_start=used)
            proposals = [
                Proposal(parameters=p, origin="sobol") for p in self.encoder.from_unit(unit)
            ]
            return self.decision(proposals, len(pending), t0, details)
        with seeded(seed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            points, scores = self.plan(n, pending, seed, details)
        for w in caught:
            logger.debug("%s: %s: %s", self.name, w.category.__name__, w.message)
        seen = {point_key(o.parameters) for o in self._observations}
        seen |= {point_key(q) for q in pending}
        details.update(
            phase=self.model_phase,
            warnings=len(caught),
            n_repeats=sum(point_key(p) in seen for p in points),
        )
        proposals = [
            Proposal(parameters=p, score=float(s), origin="acquisition")
            for p, s in zip(points, scores, strict=True)
        ]
        return self.decision(proposals, len(pending), t0, details, scores)

    def n_usable(self) -> int:
        """Observations the model can learn from (subclasses say which)."""
        return len(self._observations)

    @abstractmethod
    def plan(
        self,
        n: int,
        pending: Sequence[Mapping[str, ParamValue]],
        seed: int,
        details: dict[str, Any],
    ) -> tuple[list[dict[str, ParamValue]], list[float]]:
        """Choose ``n`` points once the model can be fitted; fill ``details``.

        Returns:
            The points, in the order chosen, and their scores.
        """

    def unit_candidates(self, count: int, seed: int) -> tuple[list[dict[str, ParamValue]], Tensor]:
        """``count`` scrambled Sobol points of the space (polytope samples where
        constrained), as points and as their ``count x d`` model encoding."""
        unit = sobol_unit(self.encoder.n_params, seed=seed, skip=0, n=count)
        if self.space.constraints:
            unit = polytope_unit_samples(self.encoder, unit, seed=seed)
        points = self.encoder.from_unit(unit)
        return points, self.encoder.encode(points)


class UncertaintyOptions(ActiveLearningOptions):
    """Options of the ``uncertainty`` planner.

    Attributes:
        mc_points: Fixed Sobol points over which the posterior variance is integrated.
    """

    mc_points: int = Field(default=256, ge=16, le=100_000)


@register_planner("uncertainty")
class UncertaintyPlanner(ActiveLearningPlanner):
    """Map every objective by integrated-variance reduction (see the module docstring).

    ``Decision.details`` adds, after the initial design: ``acquisition``,
    ``hyperparameters`` (:func:`surrogates.gp.hyperparameters_of`), ``noise``,
    ``n_model``, ``n_candidates``, ``mc_points``, ``posterior_std`` (each proposal's
    standard deviation per objective before the batch is measured, objective units),
    ``integrated_variance`` (the variance averaged over the Monte-Carlo points before the
    batch, in standardised units, and ``integrated_variance_after``: after it), ``seconds_fit``
    and ``seconds_acq``. ``candidate_scores`` are ``-integrated variance`` after each
    proposal, given the pending experiments and the proposals chosen before it.
    """

    version = "2"
    Options = UncertaintyOptions
    options: UncertaintyOptions
    model_phase = "uncertainty"

    def n_usable(self) -> int:
        """Feasible observations with every objective measured."""
        return training_data(self.encoder, self._observations, self.objectives).n

    def plan(
        self,
        n: int,
        pending: Sequence[Mapping[str, ParamValue]],
        seed: int,
        details: dict[str, Any],
    ) -> tuple[list[dict[str, ParamValue]], list[float]]:
        """Fit the GP and choose the batch greedily by ``qNegIntegratedPosteriorVariance``."""
        data = training_data(self.encoder, self._observations, self.objectives)
        t_fit = time.perf_counter()
        try:
            model = fit_single_task_gp(
                data.X, data.Y, bounds=self.encoder.bounds(), device="cpu", train_Yvar=data.Yvar
            )
        except Exception as exc:  # GPyTorch/BoTorch raise a variety of errors
            raise PlannerError(f"{self.name}: fitting the GP failed: {exc}") from exc
        hyper = hyperparameters_of(model)
        details.update(
            acquisition="qNegIntegratedPosteriorVariance",
            hyperparameters=hyper,
            noise="fixed" if data.Yvar is not None else "inferred",
            n_model=data.n,
            seconds_fit=time.perf_counter() - t_fit,
        )
        t_acq = time.perf_counter()
        _, mc = self.unit_candidates(self.options.mc_points, self.seed)
        points, choices = self.unit_candidates(self.options.n_candidates, seed)
        x_pending = self.encoder.encode(pending) if pending else choices[:0]
        with torch.no_grad():
            picked, scores, var_before = greedy_integrated_variance(
                model, choices, mc, x_pending, n, noise=hyper["noise"]
            )
            post = model.posterior(choices[picked])
        details.update(
            n_candidates=len(points),
            mc_points=int(mc.shape[0]),
            posterior_std=post.variance.sqrt().tolist(),
            integrated_variance=var_before,
            integrated_variance_after=-scores[-1],
            seconds_acq=time.perf_counter() - t_acq,
        )
        return [points[i] for i in picked], scores


def greedy_integrated_variance(
    model: SingleTaskGP,
    choices: Tensor,
    mc_points: Tensor,
    x_pending: Tensor,
    n: int,
    *,
    noise: Sequence[float],
) -> tuple[list[int], list[float], float]:
    """Pick ``n`` of ``choices`` greedily, each minimising the integrated posterior variance.

    This is the sequential-greedy optimisation of BoTorch's
    ``qNegIntegratedPosteriorVariance`` over a discrete set, computed in closed form: a
    GP's posterior covariance after observing a point ``c`` (with noise ``s2``) is
    ``K - K[:, c] K[c, :] / (K[c, c] + s2)``, whatever value is observed, so one joint
    posterior covariance over pending points, candidates and Monte-Carlo points, updated
    by rank-one steps, gives every candidate's score at once (BoTorch fantasises a model
    per candidate, which costs seconds per decision on a CPU). Variances are in
    standardised units and summed over the outputs; the tests check the scores against
    ``qNegIntegratedPosteriorVariance``.

    Args:
        model: A fitted GP from :func:`surrogates.gp.fit_single_task_gp` (``m`` outputs).
        choices: ``c x d`` candidate encodings.
        mc_points: ``M x d`` points the variance is averaged over.
        x_pending: ``p x d`` encodings of pending experiments (conditioned on first).
        n: Number of picks (at most ``c``).
        noise: Per output, the observation-noise variance in standardised units.

    Returns:
        ``(indices, scores, before)``: the picked rows of ``choices`` in order; each pick's
        score (minus the integrated variance after it, given the pending points and the
        picks before it); and the integrated variance given only the pending points.
    """
    p, c = x_pending.shape[0], choices.shape[0]
    if not 1 <= n <= c:
        raise ValueError(f"cannot pick {n} of {c} candidates")
    x_all = torch.cat([x_pending, choices, mc_points]).to(torch.double)
    tf = getattr(model, "outcome_transform", None)
    stdvs = tf.stdvs.reshape(-1) if isinstance(tf, Standardize) else None
    covs: list[Tensor] = []
    for j in range(model.num_outputs):
        sub = model.subset_output([j]) if model.num_outputs > 1 else model
        posterior = sub.posterior(x_all)
        if not isinstance(posterior, GPyTorchPosterior):  # pragma: no cover - SingleTaskGP's
            raise TypeError(f"expected a GPyTorchPosterior, got {type(posterior).__name__}")
        cov = posterior.distribution.covariance_matrix
        scale = float(stdvs[j]) ** 2 if stdvs is not None else 1.0
        covs.append(cov.reshape(x_all.shape[0], x_all.shape[0]) / scale)
    mc = slice(p + c, None)

    def condition(i: int) -> None:
        for j, cov in enumerate(covs):
            col = cov[:, i].clone()
            cov -= torch.outer(col, col) / (col[i] + noise[j])

    for i in range(p):
        condition(i)
    ivar = float(sum(cov[mc, mc].diagonal().mean() for cov in covs))
    before = ivar
    picked: list[int] = []
    scores: list[float] = []
    for _ in range(n):
        gain = torch.zeros(c, dtype=torch.double)
        for j, cov in enumerate(covs):
            cross = cov[mc, p : p + c]  # M x c
            gain += (cross**2).mean(dim=0) / (cov.diagonal()[p : p + c] + noise[j])
        if picked:
            gain[picked] = -math.inf
        i = int(gain.argmax())
        picked.append(i)
        condition(p + i)
        ivar = float(sum(cov[mc, mc].diagonal().mean() for cov in covs))
        scores.append(-ivar)
    return picked, scores, before
