"""Bayesian optimisation planners: qLogNEI (one objective) and qLogNEHVI (several).

After a scrambled Sobol initial design, every ask fits GPs (:mod:`surrogates.gp`) and
proposes the batch maximising

* ``qlognei``: q-Log Noisy Expected Improvement (Ament et al., "Unexpected Improvements to
  Expected Improvement for Bayesian Optimization", NeurIPS 2023; noisy EI after Letham et
  al., Bayesian Analysis 2019), for exactly one objective;
* ``qlognehvi``: q-Log Noisy Expected Hypervolume Improvement (Daulton et al., "Parallel
  Bayesian Optimization of Multiple Noisy Objectives with Expected Hypervolume
  Improvement", NeurIPS 2021, in its log form), for two or more objectives, with the
  reference point given per objective (``reference``) or inferred;
* ``bo``: whichever of the two fits the campaign's number of objectives.

All of them handle, through :mod:`planners.outcomes`, targets (``-|y - target|``) and
outcome constraints (``kind = "constraint"``). Failed experiments are not dropped: they
train a GP classifier of success (:mod:`surrogates.classifier`) whose ``P(success)``
weights the acquisition, with a barrier below ``min_feasibility``
(:mod:`planners.feasibility`), and they enter the outcome GP with the worst observed values
(``impute_failures``), so the model itself learns that failing regions are bad.
Experiments still running are passed as ``X_pending`` (fantasised, Snoek et al., NeurIPS
2012). The GP has a Matern-5/2 kernel with Gamma priors on its lengthscales and noise
(``gp_priors``, see :mod:`surrogates.gp`). Reported uncertainties make the noise known
(fixed-noise GP; with ``extra_noise`` a floor under an inferred noise). Linear and mixture
constraints of the space go to ``optimize_acqf``; a ``pool`` of candidate rows, or a small
fully discrete space, is scored directly with ``optimize_acqf_discrete``; on a pool the GP
normalises each column to the range its rows span, and one objective without outcome
constraints gets qLogEI with the best posterior mean as incumbent (``acquisition``). Above
``max_exact`` observations the GP is local: fitted to the ``max_exact`` observations
nearest the incumbent and optimised within their bounding box (a trust region, after
Eriksson et al., "Scalable Global Optimization via Local Bayesian Optimization", NeurIPS
2019).

Integer parameters of a space with a continuous parameter are optimised as a continuous
relaxation of the model encoding (:mod:`planners.encoding`) and rounded. Categorical ones
are enumerated (``optimize_acqf_mixed``, one optimisation per combination of choices) up to
``max_categorical_combinations`` combinations, and relaxed (one-hot argmax) beyond.

With ``surrogate`` set, any registered surrogate (an MLP or tree ensemble, ...) models the
objective instead of the GP (:mod:`planners.bo_surrogate`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogExpectedImprovement, qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_mixed
from botorch.sampling import MCSampler
from pydantic import Field
from torch import Tensor

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import CategoricalParameter, ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from planners import bo_surrogate
from planners.base import Planner, register_planner
from planners.bo_speed import (
    anchor_seed,
    anchor_size,
    baseline_subset,
    local_subset,
    optimiser_settings,
)
from planners.candidates import CandidateSet, enumerate_space, point_key, read_pool
from planners.constraints import linear_constraints, polytope_unit_samples
from planners.encoding import SpaceEncoder, TrainingData, feasibility_data, training_data
from planners.feasibility import FeasibilityWeighted
from planners.outcomes import OutcomeLayout, pareto_utilities
from planners.random import sobol_unit
from surrogates.classifier import FeasibilityClassifier, fit_feasibility_classifier
from surrogates.gp import (
    GPPriors,
    default_device,
    fit_single_task_gp,
    hyperparameters_of,
    priors_of,
)
from surrogates.multitask import fit_multitask_gp, task_correlations
from surrogates.seeding import seeded

logger = logging.getLogger(__name__)

__all__ = ["BayesOptPlanner", "QLogNEHVIPlanner", "QLogNEIPlanner"]

MIN_TRAIN_POINTS = 2
"""Feasible observations needed before the GP is fitted; fewer keep the Sobol design going."""


class _Fitted(NamedTuple):
    """What :meth:`BayesOptPlanner._fit` returns for one decision."""

    model: Model  # the outcome model (GP, multi-task GP or surrogate)
    second: SingleTaskGP | None  # BoTorch's-priors GP for gp_priors = "mixture", else None
    classifier: FeasibilityClassifier | None  # the success classifier, if one was fitted
    x: Tensor  # the inputs the outcome model was fitted to, n x d
    box: Tensor | None  # the trust-region box (2 x d), None unless the model is local


class BayesOptOptions(bo_surrogate.SurrogateBOOptions):
    """Options of the Bayesian optimisation planners (``[planner.options]``).

    ``surrogate``, ``surrogate_options`` and ``surrogate_candidates`` replace the GP by another
    surrogate (:class:`planners.bo_surrogate.SurrogateBOOptions`).

    Attributes:
        initial_points: Size of the Sobol initial design (told plus pending experiments count
            towards it); default ``2 * n_parameters`` clipped to ``[4, 10]``.
        num_restarts: Starting points of the gradient-based acquisition optimisation
            (``None``: 8 below 200 model points, else 4; see
            :func:`planners.bo_speed.optimiser_settings`).
        raw_samples: Random points screened to choose those starting points (``None``:
            256 below 200 model points, else 128).
        mc_samples: Quasi-Monte-Carlo samples of the acquisition's expectation.
        maxiter: Iteration limit of each L-BFGS-B acquisition optimisation run (``None``:
            200 below 200 model points, else 100).
        sequential: Optimise a batch point by point (sequential greedy) or all ``q``
            points jointly; ``None``: sequential below 200 model points, else joint.
        feasibility: Weight the acquisition by a success classifier once an experiment
            has failed.
        impute_failures: Give failed experiments the worst observed outcomes in the GP.
        min_feasibility: Success probability below which proposals are barred (0: none).
        pool: CSV file of candidate rows (path relative to the working directory); only
            rows not yet measured or pending are proposed.
        discrete_limit: A space of integer and categorical parameters with at most this
            many points is enumerated and scored directly.
        warm_start: From ``warm_start_min_n`` observations on, take the GP's
            hyperparameters from the anchor (a cold fit to the first observations, refitted
            every ``refit_every``; see :mod:`planners.bo_speed`), so decisions stay
            replayable.
        warm_start_maxiter: L-BFGS-B iterations from the anchor's hyperparameters on all
            the data (0: none, the GP uses the anchor's hyperparameters as they are).
        warm_start_min_n: Usable observations from which fits are warm-started (below,
            a cold fit is cheap and the hyperparameters still move fast).
        refit_every: Observations between cold refits of the warm-start anchor (``None``:
            16, or about an eighth of the observations once there are more than 128).
        max_baseline: Most observations (best posterior means) qLogNEI considers as the
            incumbent (``X_baseline``); ``None``: all.
        max_exact: Observations above which the GP becomes local (trust region).
        max_categorical_combinations: Up to this many combinations of categorical choices,
            the continuous parameters are optimised for each combination separately
            (``optimize_acqf_mixed``); with more, one-hot columns are relaxed and rounded.
        related_campaigns: Earlier campaigns in the same store on the same parameters and
            objective (a related problem: another batch of precursor, a neighbouring
            composition range). Their finished experiments are modelled jointly with this
            campaign's in a multi-task GP (:mod:`surrogates.multitask`); one objective, no
            ``surrogate``. The controller tells them to the planner at start.
        related_initial_points: Size of the Sobol initial design when related campaigns
            gave data and ``initial_points`` is not set: the related data stand in for
            most of the design.
        gp_priors: The outcome GP's kernel and hyperparameter priors
            (:func:`surrogates.gp.fit_single_task_gp`): ``"gamma"`` (default), a
            Matern-5/2 kernel with Gamma priors on the lengthscales and the noise (BayBE's
            defaults), or ``"botorch"``, BoTorch's RBF kernel with LogNormal priors (the
            default before; ``docs/benchmarks.md`` compares the two); ``"gamma-2"`` /
            ``"gamma-1.5"`` (wider Gamma lengthscale priors); ``"loo"``, ``"evidence"``,
            ``"laplace"`` (both GPs fitted, one kept by a score of the fit); or
            ``"mixture"``: both GPs fitted and qLogNEI averaged over them
            (:class:`MeanOfLogAcquisitions`; the Gamma GP's hyperparameters are
            recorded). ``Decision.details["gp_priors_used"]`` says which GP was kept.
        extra_noise: When experiments report their uncertainty, take it as a floor of the
            noise and infer one more noise variance on top of it (for what the reported
            uncertainty leaves out), rather than trusting it exactly.
        acquisition: The acquisition of one objective: ``"qlognei"`` (q-Log Noisy EI, the
            incumbent integrated over the posterior at the observations), ``"qlogei"``
            (q-Log EI with the largest posterior mean at the observations as incumbent,
            BayBE's default), or ``"auto"`` (default): ``"qlogei"`` when the campaign picks
            from a ``pool`` and has no outcome constraints (measured better there,
            ``docs/benchmarks.md``), else ``"qlognei"`` (what the continuous benchmarks were
            measured with; qLogEI was not measured there). Several objectives always use
            qLogNEHVI.
    """

    initial_points: int | None = Field(default=None, ge=1, le=10_000)
    num_restarts: int | None = Field(default=None, ge=1, le=1024)
    raw_samples: int | None = Field(default=None, ge=1, le=1_000_000)
    mc_samples: int = Field(default=128, ge=8, le=16_384)
    maxiter: int | None = Field(default=None, ge=1, le=100_000)
    sequential: bool | None = None
    feasibility: bool = True
    impute_failures: bool = True
    min_feasibility: float = Field(default=0.5, ge=0.0, lt=1.0)
    pool: str | None = None
    discrete_limit: int = Field(default=20_000, ge=0, le=10_000_000)
    warm_start: bool = False
    warm_start_maxiter: int = Field(default=0, ge=0, le=100_000)
    warm_start_min_n: int = Field(default=200, ge=0, le=1_000_000)
    refit_every: int | None = Field(default=None, ge=1, le=1_000_000)
    max_baseline: int | None = Field(default=128, ge=1, le=1_000_000)
    max_exact: int = Field(default=500, ge=10, le=1_000_000)
    max_categorical_combinations: int = Field(default=8, ge=0, le=10_000)
    related_campaigns: list[str] = Field(default_factory=list, max_length=16)
    related_initial_points: int = Field(default=2, ge=1, le=10_000)
    gp_priors: GPPriors | Literal["mixture"] = "gamma"
    acquisition: Literal["auto", "qlognei", "qlogei"] = "auto"
    extra_noise: bool = False


class BayesOptPlanner(Planner):
    """Batch, asynchronous Bayesian optimisation; subclasses fix the objective count.

    ``Decision.details`` holds ``phase`` (``"initial_design"`` or ``"bayesopt"``),
    ``initial_points``, ``n_feasible``, ``n_infeasible``, ``n_incomplete``,
    ``decision_seed``, ``repeat`` and, in the ``bayesopt`` phase, ``acquisition``,
    ``hyperparameters`` (see :func:`surrogates.gp.hyperparameters_of`),
    ``feasibility_model`` (the classifier's hyperparameters, or ``None``),
    ``success_probability`` (of each proposal, best first, when the classifier is used),
    ``noise`` (``"inferred"``, ``"fixed"`` or ``"fixed+inferred"``: see ``extra_noise``),
    ``gp_priors`` (``None`` with a ``surrogate``), ``gp_priors_used``, ``seconds_fit``,
    ``seconds_acq``,
    ``joint_acquisition_value``, ``best_observed`` (objective units, one objective),
    ``pareto_front`` and ``reference_point`` (several objectives), ``search``
    (``"continuous"``, ``"pool"`` or ``"enumerated"``), ``n_candidates``, ``local_model``
    (whether the trust-region path was taken), ``n_model`` (points the GP was fitted to),
    ``categorical_search`` (``"enumerated (k combinations)"``, ``"relaxed"`` or ``"none"``),
    ``warm_started``, ``warm_start_anchor`` (observations the anchor was fitted to, or
    ``None``), ``seconds_anchor_fit`` (when the anchor was refitted in this ask),
    ``n_baseline`` (qLogNEI's baseline points), ``seconds_acq_build``, ``num_restarts``,
    ``raw_samples``, ``maxiter``, ``sequential`` (continuous search), ``mc_samples``,
    ``device``, ``warnings`` and ``n_repeats``. ``candidate_scores`` are
    the acquisition values of the proposed points, each given the pending points.
    """

    version = "6"
    Options = BayesOptOptions
    options: BayesOptOptions
    min_objectives: ClassVar[int] = 1
    max_objectives: ClassVar[int | None] = None

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create the planner; see :class:`BayesOptOptions` for the options.

        Raises:
            PlannerError: If the number of objectives does not suit the planner.
            InvalidCampaignError: If an option is unknown or invalid, or the pool unreadable.
        """
        super().__init__(space, objectives, seed=seed, **options)
        self.layout = OutcomeLayout(self.objectives)
        k = self.layout.n_objectives
        hi = self.max_objectives
        if k < self.min_objectives or (hi is not None and k > hi):
            names = ", ".join(o.name for o in self.objectives if not o.is_constraint)
            want = "exactly one objective" if hi == 1 else f"{self.min_objectives} or more"
            raise PlannerError(
                f"{self.name} optimises {want}, got {k} ({names}); use 'bo' (any number), "
                "'qlognei' (one), 'qlognehvi' (several), 'random' or 'sobol'"
            )
        bo_surrogate.check_surrogate_layout(self.name, self.options, self.layout)
        if self.options.related_campaigns and (k != 1 or self.options.surrogate is not None):
            raise InvalidCampaignError(
                None,
                [
                    (
                        "planner.options.related_campaigns",
                        "related campaigns are modelled by a multi-task GP of one objective: "
                        "use a single objective and no surrogate",
                    )
                ],
            )
        self.encoder = SpaceEncoder(space)
        n_init = self.options.initial_points
        self.initial_points = n_init if n_init is not None else min(max(2 * len(space), 4), 10)
        self.device = default_device()
        self.constraints = linear_constraints(self.encoder)
        self.candidates: CandidateSet | None = None
        if self.options.pool is not None:
            pool = read_pool(self.options.pool, space)
            self.candidates = CandidateSet(self.encoder, pool, "pool")
        elif not space.constraints:
            points = enumerate_space(space, self.options.discrete_limit)
            if points is not None:
                self.candidates = CandidateSet(self.encoder, points, "enumerated")
        self._anchor: tuple[int, dict[str, Tensor]] | None = None

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` experiments: Sobol points while in the initial design, else BO.

        Raises:
            PlannerError: If ``n`` is invalid, the pool has too few rows left, or fitting
                fails.
            ParameterLimitError: If a pending point lies outside the search space.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        data = training_data(self.encoder, self._observations, self.objectives)
        details: dict[str, Any] = {
            "initial_points": self.initial_points,
            "n_feasible": data.n,
            "n_infeasible": data.n_infeasible,
            "n_incomplete": data.n_incomplete,
            "decision_seed": seed,
            "repeat": repeat,
        }
        available: list[int] | None = None
        if self.candidates is not None:
            used = [o.parameters for o in self._observations] + list(pending)
            available = self.candidates.available(used)
            if len(available) < n and self.candidates.origin == "enumerated":
                # every point of a small discrete space was tried: repeats are allowed
                available = list(range(len(self.candidates)))
            if len(available) < n:
                raise PlannerError(
                    f"{self.name}: {n} proposals wanted but only {len(available)} of the "
                    f"{len(self.candidates)} candidates are neither measured nor pending"
                )
            details["n_candidates"] = len(available)
        used_n = len(self._observations) + len(pending)
        initial = self.initial_points
        if self._related_data() and self.options.initial_points is None:
            initial = min(initial, self.options.related_initial_points)
            details["initial_points"] = initial
        if used_n < initial or data.n < MIN_TRAIN_POINTS:
            proposals = self._initial(n, used_n, seed, available)
            details["phase"] = "initial_design"
            details["sequence_start"] = used_n
            return self.decision(proposals, len(pending), t0, details)

        dev = self.device
        with seeded(seed, dev), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            points, scores, joint = self._bayesopt(n, pending, data, seed, available, details)
        for w in caught:
            logger.debug("%s: %s: %s", self.name, w.category.__name__, w.message)
        order = sorted(range(n), key=lambda i: -scores[i])
        if "success_probability" in details:
            details["success_probability"] = [details["success_probability"][i] for i in order]
        proposals = [
            Proposal(parameters=points[i], score=float(scores[i]), origin="acquisition")
            for i in order
        ]
        seen = {point_key(o.parameters) for o in self._observations}
        seen |= {point_key(q) for q in pending}
        details.update(
            phase="bayesopt",
            joint_acquisition_value=joint,
            mc_samples=self.options.mc_samples,
            device=str(dev),
            warnings=len(caught),
            n_repeats=sum(point_key(p) in seen for p in points),
        )
        return self.decision(
            proposals, len(pending), t0, details, [float(scores[i]) for i in order]
        )

    def _initial(self, n: int, used: int, seed: int, available: list[int] | None) -> list[Proposal]:
        """Initial-design proposals: Sobol points (polytope samples where constrained)."""
        if self.candidates is not None and available is not None:
            rng = np.random.default_rng(seed)
            picks = rng.choice(len(available), size=n, replace=False)
            return [
                Proposal(parameters=dict(self.candidates.points[available[int(i)]]), origin="sobol")
                for i in picks
            ]
        unit = sobol_unit(self.encoder.n_params, seed=self.seed, skip=used, n=n)
        if self.space.constraints:
            unit = polytope_unit_samples(self.encoder, unit, seed=self.seed + used)
        return [Proposal(parameters=p, origin="sobol") for p in self.encoder.from_unit(unit)]

    def _fit(self, data: TrainingData, details: dict[str, Any]) -> _Fitted:
        """Fit the outcome GP (and, for ``gp_priors = "mixture"``, the second one) and the
        success classifier; returns them with the GP's inputs and the trust-region box.

        With ``warm_start`` the GP takes the warm-start anchor's hyperparameters
        (:meth:`_anchor_state`), refined by at most ``warm_start_maxiter`` iterations.
        """
        dev = self.device
        x, y, yvar, box = self._model_inputs(data, self._observations)
        t_fit = time.perf_counter()
        warm: dict[str, Tensor] | None = None
        outcome: Model
        second: SingleTaskGP | None = None
        try:
            if self.options.surrogate is not None:
                seed = int(details["decision_seed"])
                outcome, surrogate = bo_surrogate.fit_surrogate(self.options, x, y, seed, dev)
                details.update(bo_surrogate.surrogate_summary(surrogate), hyperparameters={})
            else:
                related = self._related_data() if box is None else {}
                if related:
                    outcome = self._fit_transfer(x, y, related, details)
                else:
                    if self.options.warm_start and data.n >= self.options.warm_start_min_n:
                        warm = self._anchor_state(details)
                    try:
                        gp = self._fit_outcome(x, y, yvar, warm)
                    except Exception as exc:
                        if warm is None:
                            raise
                        logger.info(
                            "%s: warm-started GP fit failed (%s); fitting cold", self.name, exc
                        )
                        warm = None
                        gp = self._fit_outcome(x, y, yvar, None)
                    outcome = gp
                    if self.options.gp_priors == "mixture":
                        second = self._fit_outcome(x, y, yvar, warm, "botorch")
                    details["hyperparameters"] = hyperparameters_of(gp)
                    details["gp_priors_used"] = priors_of(gp)
            feas = None
            if self.options.feasibility and data.n_infeasible > 0:
                fx, labels = feasibility_data(self.encoder, self._observations)
                if fx.shape[0] > self.options.max_exact:
                    fx, labels = fx[-self.options.max_exact :], labels[-self.options.max_exact :]
                feas = fit_feasibility_classifier(fx.to(dev), labels.to(dev))
        except Exception as exc:  # GPyTorch/BoTorch raise a variety of errors
            what = self.options.surrogate or "GP"
            raise PlannerError(f"{self.name}: fitting the {what} failed: {exc}") from exc
        details.update(
            feasibility_model=None if feas is None else classifier_summary(feas),
            noise=(
                "inferred"
                if yvar is None or self.options.surrogate
                else "fixed+inferred"
                if self.options.extra_noise
                else "fixed"
            ),
            gp_priors=None if self.options.surrogate else self.options.gp_priors,
            seconds_fit=time.perf_counter() - t_fit,
            local_model=box is not None,
            n_model=int(x.shape[0]),
            warm_started=warm is not None,
        )
        return _Fitted(outcome, second, feas, x, box)

    def _related_data(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each related task's usable training data (``n_i x d``, ``n_i x 1``), by name."""
        out = {}
        for name, observations in self._related.items():
            rel = training_data(self.encoder, observations, self.objectives)
            if rel.n > 0:
                out[name] = (rel.X, rel.Y)
        return out

    def _fit_transfer(
        self,
        x: Tensor,
        y: Tensor,
        related: dict[str, tuple[Tensor, Tensor]],
        details: dict[str, Any],
    ) -> Model:
        """Fit the multi-task GP of this campaign and its related ones; say so in
        ``details["transfer"]`` (points per related campaign, fitted correlations)."""
        model = fit_multitask_gp(
            x,
            y,
            list(related.values()),
            bounds=self._input_bounds(),
            device=self.device,
        )
        details["transfer"] = {
            "model": "MultiTaskGP",
            "related": {name: int(rx.shape[0]) for name, (rx, _) in related.items()},
            "task_correlation": dict(zip(related, task_correlations(model), strict=True)),
        }
        details["hyperparameters"] = {}
        return model

    def _input_bounds(self) -> Tensor:
        """The ``2 x d`` bounds the GPs normalise the model encoding by: the unit box, or on
        a ``pool`` the range its rows span in each column (as BayBE normalises a discrete
        space), so that the lengthscale priors are set on the space actually searched; a
        column in which every row has the same value keeps ``[0, 1]``."""
        bounds = self.encoder.bounds(torch.double)
        if self.options.pool is not None and self.candidates is not None:
            rows = self.candidates.X.to(torch.double)
            lo, hi = rows.min(dim=0).values, rows.max(dim=0).values
            spread = hi > lo
            bounds[0, spread], bounds[1, spread] = lo[spread], hi[spread]
        return bounds

    def _fit_outcome(
        self,
        x: Tensor,
        y: Tensor,
        yvar: Tensor | None,
        warm: dict[str, Tensor] | None,
        priors: GPPriors | None = None,
    ) -> SingleTaskGP:
        """Fit the outcome GP, cold or from ``warm`` (a ``state_dict``), with ``priors``
        (default: the option's; the Gamma priors for ``"mixture"``)."""
        if priors is None:
            option = self.options.gp_priors
            priors = "gamma" if option == "mixture" else option
        return fit_single_task_gp(
            x,
            y,
            bounds=self._input_bounds(),
            device=self.device,
            train_Yvar=yvar,
            warm_start_state=warm,
            maxiter=self.options.warm_start_maxiter if warm is not None else None,
            priors=priors,
            extra_noise=self.options.extra_noise,
        )

    def _model_inputs(
        self, data: TrainingData, observations: Sequence[Observation]
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """The outcome GP's inputs ``n x d``, outputs ``n x m``, noise variances (or
        ``None``) and the trust-region box (``2 x d``, ``None`` unless the model is local).

        Failed ``observations`` get the worst observed outcomes (``impute_failures``); above
        ``max_exact`` points only those nearest the incumbent are kept.
        """
        x, y, yvar = data.X, data.Y, data.Yvar
        if self.options.impute_failures and data.n_infeasible > 0:
            failed = [o.parameters for o in observations if not o.feasible]
            x = torch.cat([x, self.encoder.encode(failed, x.dtype)])
            worst = self.layout.pessimistic(y).expand(len(failed), -1)
            y = torch.cat([y, worst])
            yvar = (
                None
                if yvar is None
                else torch.cat([yvar, yvar.max(dim=0).values.expand(len(failed), -1)])
            )
        box: Tensor | None = None
        if data.n > self.options.max_exact:
            keep = local_subset(self.layout, x, y, self.options.max_exact)
            x, y = x[keep], y[keep]
            yvar = None if yvar is None else yvar[keep]
            box = torch.stack([x.min(dim=0).values, x.max(dim=0).values])
        return x, y, yvar, box

    def _anchor_state(self, details: dict[str, Any]) -> dict[str, Tensor] | None:
        """Hyperparameters of the warm-start anchor: a cold fit to the first ``m``
        observations told, ``m`` from :func:`planners.bo_speed.anchor_size` (cached).

        Returns ``None`` (fit cold) while the anchor has too few usable observations.
        """
        n = len(self._observations)
        m = anchor_size(n, self.options.refit_every)
        details["warm_start_anchor"] = m
        if self._anchor is not None and self._anchor[0] == m:
            return self._anchor[1]
        first = self._observations[:m]
        data = training_data(self.encoder, first, self.objectives)
        if data.n < max(MIN_TRAIN_POINTS, self.initial_points // 2):
            details["warm_start_anchor"] = None
            return None
        x, y, yvar, _ = self._model_inputs(data, first)
        t0 = time.perf_counter()
        dev = self.device
        with seeded(anchor_seed(self.seed, m), dev):
            model = self._fit_outcome(x, y, yvar, None)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._anchor = (m, state)
        details["seconds_anchor_fit"] = time.perf_counter() - t0
        return state

    def _categorical_fixings(self) -> list[dict[int, float]] | None:
        """One ``{column: value}`` fixing of the one-hot columns per combination of choices,
        or ``None`` without categoricals or with more than ``max_categorical_combinations``."""
        blocks = [
            (sl, len(p.choices))
            for p, sl in zip(self.space.parameters, self.encoder.slices, strict=True)
            if isinstance(p, CategoricalParameter)
        ]
        if (
            not blocks
            or math.prod(k for _, k in blocks) > self.options.max_categorical_combinations
        ):
            return None
        out: list[dict[int, float]] = []
        for combo in itertools.product(*(range(k) for _, k in blocks)):
            fixing: dict[int, float] = {}
            for (sl, k), chosen in zip(blocks, combo, strict=True):
                fixing.update({sl.start + j: float(j == chosen) for j in range(k)})
            out.append(fixing)
        return out

    def _bayesopt(
        self,
        n: int,
        pending: Sequence[Mapping[str, ParamValue]],
        data: TrainingData,
        seed: int,
        available: list[int] | None,
        details: dict[str, Any],
    ) -> tuple[list[dict[str, ParamValue]], list[float], float]:
        dev, dtype = self.device, torch.double
        model, second, classifier, x_base, box = self._fit(data, details)
        t_acq = time.perf_counter()
        x_pending = self.encoder.encode(pending, dtype).to(dev) if pending else None
        sampler = bo_surrogate.mc_sampler(
            self.options, self.options.mc_samples, model, x_base.to(dev, dtype), seed
        )
        x_base = baseline_subset(
            model, self.layout, x_base.to(dev, dtype), self.options.max_baseline
        )
        acqf = self.acquisition(model, self.layout, x_base, data, sampler, x_pending, details)
        if second is not None:
            sampler2 = bo_surrogate.mc_sampler(
                self.options, self.options.mc_samples, second, x_base, seed
            )
            acqf2 = self.acquisition(second, self.layout, x_base, data, sampler2, x_pending)
            acqf = MeanOfLogAcquisitions([acqf, acqf2])
        if classifier is not None:
            acqf = FeasibilityWeighted(acqf, classifier, self.options.min_feasibility)
        details["n_baseline"] = int(x_base.shape[0])
        details["seconds_acq_build"] = time.perf_counter() - t_acq
        if self.candidates is not None and available is not None:
            choices = self.candidates.X[available].to(dev, dtype)
            candidates, _ = optimize_acqf_discrete(acqf, q=n, choices=choices, unique=True)
            idx = self.candidates.nearest(candidates, available)
            points = [dict(self.candidates.points[i]) for i in idx]
            details["search"] = self.candidates.origin
        elif (
            sobol := bo_surrogate.sobol_choices(self.options, model, self.encoder, seed, dev)
        ) is not None:
            candidates, _ = optimize_acqf_discrete(acqf, q=n, choices=sobol.to(dev), unique=True)
            points = self.encoder.decode(candidates)
            details["search"] = "sobol-candidates"
            details["n_candidates"] = int(sobol.shape[0])
        else:
            bounds = self.encoder.bounds(dtype)
            fixings = self._categorical_fixings()
            if box is not None:
                bounds = box.cpu().clone()
                for p, sl in zip(self.space.parameters, self.encoder.slices, strict=True):
                    if isinstance(p, CategoricalParameter):
                        bounds[0, sl], bounds[1, sl] = 0.0, 1.0
            opt = optimiser_settings(
                details["n_model"],
                n,
                num_restarts=self.options.num_restarts,
                raw_samples=self.options.raw_samples,
                maxiter=self.options.maxiter,
                sequential=self.options.sequential,
            )
            details.update(
                num_restarts=opt.num_restarts,
                raw_samples=opt.raw_samples,
                maxiter=opt.maxiter,
                sequential=opt.sequential,
            )
            common: dict[str, Any] = {
                "acq_function": acqf,
                "bounds": bounds.to(dev),
                "q": n,
                "num_restarts": opt.num_restarts,
                "raw_samples": opt.raw_samples,
                "options": {"seed": seed % (2**31), "maxiter": opt.maxiter},
                "inequality_constraints": self.constraints.inequality or None,
                "equality_constraints": self.constraints.equality or None,
            }
            if fixings:
                candidates, _ = optimize_acqf_mixed(fixed_features_list=fixings, **common)
                details["categorical_search"] = f"enumerated ({len(fixings)} combinations)"
            else:
                candidates, _ = optimize_acqf(sequential=opt.sequential, **common)
                details["categorical_search"] = (
                    "relaxed" if self.encoder.dim > len(self.space) else "none"
                )
            points = self.encoder.decode(candidates)
            details["search"] = "continuous"
            details["n_constraint_violations"] = sum(
                bool(self.space.constraint_violations(p)) for p in points
            )
        x_chosen = self.encoder.encode(points, dtype).to(dev)
        with torch.no_grad():
            scores = acqf(x_chosen.unsqueeze(1)).reshape(-1).cpu().tolist()
            joint = float(acqf(x_chosen.unsqueeze(0)).reshape(-1)[0])
            if classifier is not None:
                details["success_probability"] = classifier.probability(x_chosen).tolist()
        details["seconds_acq"] = time.perf_counter() - t_acq
        return points, [float(s) for s in scores], joint

    def acquisition(
        self,
        model: Model,
        layout: OutcomeLayout,
        x_baseline: Tensor,
        data: TrainingData,
        sampler: MCSampler,
        x_pending: Tensor | None,
        details: dict[str, Any] | None = None,
    ) -> AcquisitionFunction:
        """The acquisition function: qLogNEI for one objective, qLogNEHVI for several.

        Args:
            model: The fitted model (outcome columns, then the success latent if any).
            layout: Which column is which.
            x_baseline: ``n x d`` encodings of the observations the model was fitted to
                (for one objective, the ``max_baseline`` of best posterior mean).
            data: The training data (signed outcomes ``Y``).
            sampler: The QMC sampler.
            x_pending: ``p x d`` encodings of pending experiments, or ``None``.
            details: The decision record's details, if given updated with the acquisition's
                name, the best observed value or the reference point and Pareto front.
        """
        constraints = layout.constraints() or None
        y = data.Y
        record: dict[str, Any] = {} if details is None else details
        if layout.n_objectives == 1:
            record |= {
                "best_observed": layout.best_observed(y),
                "n_outcome_constraints": len(constraints or []),
            }
            if self._expected_improvement(constraints):
                objective = layout.single_objective()
                with torch.no_grad():
                    means = model.posterior(x_baseline).mean.unsqueeze(0)  # type: ignore[attr-defined]
                    best_f = float(objective(means).max())
                record |= {"acquisition": "qLogExpectedImprovement", "best_f": best_f}
                return qLogExpectedImprovement(
                    model=model,
                    best_f=best_f,
                    sampler=sampler,
                    objective=objective,
                    constraints=constraints,
                    X_pending=x_pending,
                )
            record["acquisition"] = "qLogNoisyExpectedImprovement"
            return qLogNoisyExpectedImprovement(
                model=model,
                X_baseline=x_baseline,
                sampler=sampler,
                objective=layout.single_objective(),
                constraints=constraints,
                X_pending=x_pending,
                prune_baseline=True,
            )
        ref, inferred = layout.reference_point(y)
        record |= {
            "acquisition": "qLogNoisyExpectedHypervolumeImprovement",
            "reference_point": [float(v) for v in ref.tolist()],
            "reference_point_inferred": inferred,
            "pareto_front": pareto_utilities(layout, y),
            "n_outcome_constraints": len(constraints or []),
        }
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref.to(x_baseline),
            X_baseline=x_baseline,
            sampler=sampler,
            objective=layout.multi_objective(),
            constraints=constraints,
            X_pending=x_pending,
            prune_baseline=True,
        )

    def _expected_improvement(self, constraints: object) -> bool:
        """Whether one objective gets qLogEI (see the ``acquisition`` option) or qLogNEI."""
        if self.options.acquisition == "auto":
            return self.options.pool is not None and not constraints
        return self.options.acquisition == "qlogei"


class MeanOfLogAcquisitions(AcquisitionFunction):
    """The log of the mean of several acquisition values given as logs.

    qLogNEI under a mixture of models with equal weights: the expected improvement under
    the mixture is the mean of each model's (Bayesian model averaging of the acquisition,
    as BoTorch's fully Bayesian models average over hyperparameter samples).

    Args:
        acquisitions: Log-acquisition functions of the same inputs (``b x q x d -> b``).
    """

    def __init__(self, acquisitions: Sequence[AcquisitionFunction]) -> None:
        super().__init__(model=acquisitions[0].model)
        self.acquisitions = torch.nn.ModuleList(acquisitions)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:  # noqa: N802, N803
        for acq in self.acquisitions:
            acq.set_X_pending(X_pending)  # type: ignore[operator]
        super().set_X_pending(X_pending)

    def forward(self, X: Tensor) -> Tensor:  # noqa: N803
        logs = torch.stack([acq(X) for acq in self.acquisitions])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.acquisitions))


@register_planner("bo")
class BOPlanner(BayesOptPlanner):
    """qLogNEI for one objective, qLogNEHVI for several (see the module docstring)."""


@register_planner("qlognei")
class QLogNEIPlanner(BayesOptPlanner):
    """Bayesian optimisation of exactly one objective with qLogNEI."""

    max_objectives = 1


@register_planner("qlognehvi")
class QLogNEHVIPlanner(BayesOptPlanner):
    """Bayesian optimisation of two or more objectives with qLogNEHVI."""

    min_objectives = 2


def classifier_summary(classifier: FeasibilityClassifier) -> dict[str, list[float]]:
    """The success classifier's hyperparameters, as plain lists (JSON-ready)."""
    covar = classifier.covar_module
    return {
        "lengthscales": [float(v) for v in covar.base_kernel.lengthscale.detach().reshape(-1)],
        "outputscale": [float(covar.outputscale.detach())],
        "mean_constant": [float(classifier.mean_module.constant.detach())],
    }
