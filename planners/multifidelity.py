"""Cost-aware multi-fidelity Bayesian optimisation (``mfbo``).

One parameter of the search space is the *fidelity* of the measurement (a screening
measurement at low fidelity, the accurate one at the target fidelity), and a measurement
costs ``fixed_cost + cost_per_fidelity * fidelity``. After a scrambled Sobol initial design
at ``initial_fidelity`` (the cheapest allowed fidelity by default), every ask fits a
``SingleTaskMultiFidelityGP`` (:mod:`surrogates.mfgp`) and proposes the point and fidelity
maximising multi-fidelity max-value entropy search per unit cost:

* ``qMultiFidelityMaxValueEntropy`` (Takeno, S. et al. (2020). Multi-fidelity Bayesian
  Optimization with Max-value Entropy Search and its Parallelization. ICML 37; after Wang,
  Z. and Jegelka, S. (2017). Max-value Entropy Search for Efficient Bayesian Optimization.
  ICML 34): the information a measurement at fidelity ``s`` gives about the maximum of the
  objective *at the target fidelity*;
* divided by its cost, through BoTorch's ``InverseCostWeightedUtility`` with an
  ``AffineFidelityCostModel`` (Wu, J. et al. (2019). Practical Multi-fidelity Bayesian
  Optimization for Hyperparameter Tuning. UAI 35).

MF-MES was chosen over ``qMultiFidelityKnowledgeGradient`` because its cost per decision is
a few posterior evaluations over a fixed candidate set, where MF-KG optimises one fantasy
point per fantasy sample jointly with the candidate (seconds instead of tens of seconds per
decision on two CPU cores, at similar regret in BoTorch's tutorials). Batches (``n > 1``)
and pending experiments go through the acquisition's ``X_pending`` (fantasies), sequentially
greedy. With ``fidelities`` the fidelity is chosen among those values only (one optimisation
per value, ``optimize_acqf_mixed``).

The planner recommends at the target fidelity: the maximiser of the GP's posterior mean with
the fidelity fixed to the target (``recommendation`` in each decision's details).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from botorch.acquisition import PosteriorMean
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
from botorch.acquisition.max_value_entropy_search import qMultiFidelityMaxValueEntropy
from botorch.acquisition.utils import project_to_target_fidelity
from botorch.models.cost import AffineFidelityCostModel
from botorch.optim import optimize_acqf, optimize_acqf_mixed
from pydantic import Field
from torch import Tensor
from torch.quasirandom import SobolEngine

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Decision, Proposal
from planners.base import register_planner
from planners.bo import MIN_TRAIN_POINTS, BayesOptOptions, BayesOptPlanner
from planners.bo_speed import OptimiserSettings, optimiser_settings
from planners.encoding import training_data
from surrogates.mfgp import fit_multi_fidelity_gp
from surrogates.seeding import seeded

logger = logging.getLogger(__name__)

__all__ = ["MultiFidelityOptions", "MultiFidelityPlanner"]


class MultiFidelityOptions(BayesOptOptions):
    """Options of ``mfbo`` (``[planner.options]``), beside those of the BO planners.

    Attributes:
        fidelity: Name of the continuous parameter that is the measurement's fidelity.
        target_fidelity: The most accurate fidelity, where recommendations are made
            (default: the parameter's upper bound).
        fidelities: The fidelities that may be chosen (default: any in the bounds); must
            hold the target.
        fixed_cost: Cost of any measurement, in the campaign's cost unit (> 0).
        cost_per_fidelity: Further cost per unit of fidelity.
        initial_fidelity: Fidelity of the initial design (default: the lowest allowed).
        candidate_set_size: Sobol points over which max values are sampled.
        num_mv_samples: Max-value samples of the entropy search.
        fit_maxiter: Iteration limit of the GP fit (``warm_start_maxiter`` when warm).
    """

    fidelity: str
    target_fidelity: float | None = Field(default=None, allow_inf_nan=False)
    fidelities: list[float] | None = Field(default=None, min_length=1, max_length=64)
    fixed_cost: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    cost_per_fidelity: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    initial_fidelity: float | None = Field(default=None, allow_inf_nan=False)
    candidate_set_size: int = Field(default=500, ge=10, le=100_000)
    fit_maxiter: int = Field(default=100, ge=1, le=100_000)
    num_mv_samples: int = Field(default=10, ge=1, le=1000)


LIGHT_OPTIONS: dict[str, Any] = {
    "num_restarts": 2,
    "raw_samples": 64,
    "maxiter": 50,
    "candidate_set_size": 256,
    "fit_maxiter": 75,
    "warm_start": True,
    "warm_start_maxiter": 30,
}
"""Planner options lighter than qLogNEI's defaults (``num_restarts = 4``,
``raw_samples = 128``), for campaigns on a few CPU cores: mfbo makes several times more
decisions than a single-fidelity planner for the same cost. The multi-fidelity benchmark
runs with them."""


@register_planner("mfbo")
class MultiFidelityPlanner(BayesOptPlanner):
    """Cost-aware multi-fidelity BO of one objective (see the module docstring).

    ``Decision.details`` holds, beside the initial-design details of
    :class:`~planners.bo.BayesOptPlanner`, ``fidelity`` (the parameter), ``fidelities``
    (of each proposal, best first), ``costs`` (their predicted costs), ``cost_model``
    (``{"type": "affine", "fixed_cost", "cost_per_fidelity"}``), ``target_fidelity``
    and, once the GP is fitted, ``acquisition``, ``hyperparameters``, ``recommendation``
    (the point at the target fidelity with the best posterior mean) and
    ``recommendation_mean``.
    """

    version = "1"
    Options = MultiFidelityOptions  # type: ignore[assignment]  # a subclass of the BO options
    options: MultiFidelityOptions
    max_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create the planner; see :class:`MultiFidelityOptions` for the options.

        Raises:
            InvalidCampaignError: If an option is unknown or invalid (key path
                ``planner.options.<key>``).
            PlannerError: If the campaign has more than one objective, an outcome
                constraint or a categorical parameter.
        """
        super().__init__(space, objectives, seed=seed, **options)
        self._warm_state: dict[str, Tensor] | None = None
        opts = self.options
        by_name = {p.name: p for p in space.parameters}
        param = by_name.get(opts.fidelity)

        def bad(key: str, msg: str) -> InvalidCampaignError:
            return InvalidCampaignError(None, [(f"planner.options.{key}", msg)])

        if not isinstance(param, ContinuousParameter) or param.log_scale:
            raise bad("fidelity", f"{opts.fidelity!r} is not a linear continuous parameter")
        if opts.pool is not None:
            raise bad("pool", "mfbo does not take a candidate pool")
        if (
            self.encoder.dim != len(space)
            or self.layout.constraints()
            or self.objectives[0].target is not None
        ):
            raise PlannerError(
                "mfbo handles continuous and integer parameters and one objective to maximise "
                "or minimise, without outcome constraints"
            )
        lo, hi = float(param.lower), float(param.upper)
        target = hi if opts.target_fidelity is None else opts.target_fidelity
        if not lo <= target <= hi:
            raise bad("target_fidelity", f"{target:g} is outside [{lo:g}, {hi:g}]")
        allowed = sorted(set(opts.fidelities)) if opts.fidelities is not None else None
        if allowed is not None:
            if any(not lo <= f <= hi for f in allowed):
                raise bad("fidelities", f"every fidelity must lie in [{lo:g}, {hi:g}]")
            if target not in allowed:
                raise bad("fidelities", f"the target fidelity {target:g} must be one of them")
        initial = opts.initial_fidelity
        if initial is None:
            initial = allowed[0] if allowed is not None else lo
        elif allowed is not None and initial not in allowed:
            raise bad("initial_fidelity", f"{initial:g} is not one of the fidelities")
        elif not lo <= initial <= hi:
            raise bad("initial_fidelity", f"{initial:g} is outside [{lo:g}, {hi:g}]")
        self.fidelity = opts.fidelity
        self.column = self.encoder.slices[[p.name for p in space.parameters].index(param.name)]
        self.col = self.column.start
        self.lo, self.hi = lo, hi
        self.target = target
        self.allowed = allowed
        self.initial_fidelity = initial

    # ------------------------------------------------------------------ costs

    def cost(self, fidelity: float) -> float:
        """What a measurement at ``fidelity`` costs (campaign cost unit)."""
        return self.options.fixed_cost + self.options.cost_per_fidelity * fidelity

    def cost_model(self) -> dict[str, Any]:
        """The cost model, as recorded in every decision."""
        return {
            "type": "affine",
            "fixed_cost": self.options.fixed_cost,
            "cost_per_fidelity": self.options.cost_per_fidelity,
        }

    def _enc(self, fidelity: float) -> float:
        return (fidelity - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.0

    def _snap(self, value: ParamValue) -> float:
        """The allowed fidelity nearest ``value`` (``value`` itself if any is allowed)."""
        v = float(value)
        if self.allowed is None:
            return min(max(v, self.lo), self.hi)
        return min(self.allowed, key=lambda f: abs(f - v))

    def _with_fidelity(self, decision: Decision, fidelity: float | None) -> Decision:
        """``decision`` with every proposal at ``fidelity`` (or snapped to an allowed one)
        and the fidelities, costs and cost model recorded."""
        proposals = []
        for p in decision.proposals:
            params = dict(p.parameters)
            params[self.fidelity] = (
                fidelity if fidelity is not None else self._snap(params[self.fidelity])
            )
            proposals.append(Proposal(parameters=params, score=p.score, origin=p.origin))
        fids = [float(p.parameters[self.fidelity]) for p in proposals]
        details = {
            **decision.details,
            "fidelity": self.fidelity,
            "fidelities": fids,
            "costs": [self.cost(f) for f in fids],
            "cost_model": self.cost_model(),
            "target_fidelity": self.target,
        }
        return Decision(
            proposals=proposals,
            planner=decision.planner,
            version=decision.version,
            seed=decision.seed,
            n_train=decision.n_train,
            n_pending=decision.n_pending,
            candidate_scores=decision.candidate_scores,
            seconds=decision.seconds,
            details=details,
        )

    # ------------------------------------------------------------------ ask

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` experiments, each with its fidelity.

        Raises:
            PlannerError: If ``n`` is invalid or fitting fails.
            ParameterLimitError: If a pending point lies outside the search space.
        """
        data = training_data(self.encoder, self._observations, self.objectives)
        used_n = len(self._observations) + len(pending)
        if used_n < self.initial_points or data.n < MIN_TRAIN_POINTS:
            return self._with_fidelity(super().ask(n, pending), self.initial_fidelity)
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        details: dict[str, Any] = {
            "phase": "multifidelity",
            "initial_points": self.initial_points,
            "n_feasible": data.n,
            "n_infeasible": data.n_infeasible,
            "n_incomplete": data.n_incomplete,
            "decision_seed": seed,
            "repeat": repeat,
            "acquisition": "qMultiFidelityMaxValueEntropy/InverseCostWeightedUtility",
        }
        with seeded(seed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, scores = self._propose(n, pending, data.X, data.Y, data.Yvar, seed, details)
        details["warnings"] = len(caught)
        points = self.encoder.decode(x)
        order = sorted(range(n), key=lambda i: -scores[i])
        proposals = [
            Proposal(parameters=points[i], score=scores[i], origin="acquisition") for i in order
        ]
        decision = self.decision(proposals, len(pending), t0, details, [scores[i] for i in order])
        return self._with_fidelity(decision, None)

    def _propose(
        self,
        n: int,
        pending: Sequence[Mapping[str, ParamValue]],
        x: Tensor,
        y: Tensor,
        yvar: Tensor | None,
        seed: int,
        details: dict[str, Any],
    ) -> tuple[Tensor, list[float]]:
        """Fit the multi-fidelity GP and optimise the cost-weighted MF-MES.

        Returns:
            The ``n x d`` encodings proposed and the acquisition value of each.
        """
        d, dtype = self.encoder.dim, torch.double
        t_fit = time.perf_counter()
        try:
            warm = self._warm_state if self.options.warm_start else None
            model = fit_multi_fidelity_gp(
                x,
                y,
                self.col,
                train_Yvar=yvar,
                maxiter=self.options.warm_start_maxiter if warm else self.options.fit_maxiter,
                warm_start_state=warm,
            )
        except Exception as exc:  # GPyTorch/BoTorch raise a variety of errors
            raise PlannerError(f"{self.name}: fitting the GP failed: {exc}") from exc
        if self.options.warm_start:
            self._warm_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        details["warm_started"] = warm is not None
        details["hyperparameters"] = _hyperparameters(model)
        details["seconds_fit"] = time.perf_counter() - t_fit
        t_acq = time.perf_counter()
        target = {self.col: self._enc(self.target)}
        span = self.hi - self.lo
        cost_model = AffineFidelityCostModel(
            fidelity_weights={self.col: self.options.cost_per_fidelity * span},
            fixed_cost=self.options.fixed_cost + self.options.cost_per_fidelity * self.lo,
        )

        def project(z: Tensor) -> Tensor:
            return project_to_target_fidelity(X=z, target_fidelities=target, d=d)

        candidates = SobolEngine(d, scramble=True, seed=seed % (2**31)).draw(
            self.options.candidate_set_size, dtype=dtype
        )
        acqf = qMultiFidelityMaxValueEntropy(
            model,
            candidates,
            num_mv_samples=self.options.num_mv_samples,
            cost_aware_utility=InverseCostWeightedUtility(cost_model=cost_model),
            project=project,
            X_pending=self.encoder.encode(pending, dtype) if pending else None,
        )
        opt = self._optimiser(int(x.shape[0]))
        common: dict[str, Any] = {
            "acq_function": acqf,
            "bounds": self.encoder.bounds(dtype),
            "q": 1,
            "num_restarts": opt.num_restarts,
            "raw_samples": opt.raw_samples,
            "options": {"seed": seed % (2**31), "maxiter": opt.maxiter},
            "inequality_constraints": self.constraints.inequality or None,
            "equality_constraints": self.constraints.equality or None,
        }
        # MF-MES scores one point at a time: a batch is chosen greedily, each point with the
        # ones chosen before it (and the experiments still running) as X_pending.
        base = self.encoder.encode(pending, dtype) if pending else None
        chosen = torch.empty(0, d, dtype=dtype)
        for _ in range(n):
            if self.allowed is not None:
                fixings = [{self.col: self._enc(f)} for f in self.allowed]
                x_next, _ = optimize_acqf_mixed(fixed_features_list=fixings, **common)
            else:
                x_next, _ = optimize_acqf(**common)
            chosen = torch.cat([chosen, x_next.reshape(1, d)])
            acqf.set_X_pending(chosen if base is None else torch.cat([base, chosen]))
        acqf.set_X_pending(base)
        with torch.no_grad():
            scores = [float(v) for v in acqf(chosen.unsqueeze(1)).reshape(-1).tolist()]
        details["seconds_acq"] = time.perf_counter() - t_acq
        details.update(self._recommend(model, seed, opt))
        return chosen, scores

    def _optimiser(self, n_model: int) -> OptimiserSettings:
        """The acquisition optimiser's settings: the options, or chosen from the data size."""
        o = self.options
        return optimiser_settings(
            n_model,
            1,
            num_restarts=o.num_restarts,
            raw_samples=o.raw_samples,
            maxiter=o.maxiter,
            sequential=False,
        )

    def _recommend(self, model: Any, seed: int, opt: OptimiserSettings) -> dict[str, Any]:
        """The point with the best posterior mean at the target fidelity."""
        d = self.encoder.dim
        others = [i for i in range(d) if i != self.col]
        mean = FixedFeatureAcquisitionFunction(
            PosteriorMean(model), d=d, columns=[self.col], values=[self._enc(self.target)]
        )
        bounds = self.encoder.bounds(torch.double)[:, others]
        best, value = optimize_acqf(
            mean,
            bounds=bounds,
            q=1,
            num_restarts=opt.num_restarts,
            raw_samples=opt.raw_samples,
            options={"seed": seed % (2**31), "maxiter": opt.maxiter},
        )
        full = mean._construct_X_full(best)
        point = self.encoder.decode(full)[0]
        sign = self.objectives[0].sign
        assert value is not None
        return {"recommendation": point, "recommendation_mean": sign * float(value)}


def _hyperparameters(model: Any) -> dict[str, list[float]]:
    """Every fitted hyperparameter of ``model`` in its constrained (actual) units, keyed by
    its module path (``covar_module.base_kernel.kernels.0.lengthscale``), as plain lists."""
    out: dict[str, list[float]] = {}
    for name, raw, constraint in model.named_parameters_and_constraints():
        value = raw if constraint is None else constraint.transform(raw)
        key = name.replace("raw_", "")
        out[key] = [float(v) for v in value.detach().reshape(-1).cpu().tolist()]
    return out
