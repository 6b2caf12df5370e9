"""Other libraries' optimisers as baselines of the planner benchmark: BayBE, Ax, plain BoTorch.

Each is wrapped as a :class:`~planners.base.Planner`, so the benchmark drives it exactly as
it drives sdlab's planners (same problems, seeds, noise and budget, in the same process).
Every one starts from the same initial rows as sdlab's BO planner: its first
``initial_points`` experiments are the pool ``random`` baseline's (on a continuous space,
the ``sobol`` baseline's), and only then does the library choose.

* ``baybe``: BayBE's default recommender (``Campaign`` with its default
  ``TwoPhaseMetaRecommender``, i.e. ``BotorchRecommender`` once there are measurements:
  a GP with BayBE's priors and its default acquisition). On a pool the search space is the
  pool's rows (``SubspaceDiscrete.from_dataframe``) and measured rows are never recommended
  again (``allow_recommending_already_measured = False``). Fiedler et al., "BayBE: a
  Bayesian Back End for experimental planning in the low-to-no-data regime", Digital
  Discovery (2025).
* ``ax``: Ax's default generation strategy (``ax.api.Client``, ``method="fast"``: its
  modular BoTorch model, a GP with Ax's defaults, qLogNEI), rebuilt from every
  observation on each ask, pending experiments attached as running trials; its own
  initialization (centre point and Sobol) is replaced by the common initial design, so its
  modular BoTorch model chooses from the first ask after it. Ax's client has
  no candidate-set mode, so on a pool its point is snapped to the nearest unmeasured row
  (unit-scaled distance), as the ``sobol`` pool baseline snaps; the row is what is measured
  and told. Olson et al., "Ax: a platform for adaptive experimentation" (AutoML 2025).
* ``botorch``: a plain BoTorch GP: ``SingleTaskGP`` with BoTorch's default priors, inputs
  normalised, outcomes standardised, fitted by ``fit_gpytorch_mll``, and qLogNEI (Ament et
  al., NeurIPS 2023) scoring every unmeasured row (``optimize_acqf_discrete``), or
  optimised over the box (``optimize_acqf``) on a continuous space.

The libraries are imported only when a baseline is built: ``pip install -e .[benchmarks]``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from planners.base import Planner
from planners.candidates import CandidateSet
from planners.encoding import SpaceEncoder
from planners.random import sobol_unit

logger = logging.getLogger(__name__)

__all__ = ["BASELINES", "ExternalBaseline", "make_baseline", "missing_library"]

DEFAULT_INITIAL_POINTS = 4
_AX_METRIC = "objective"


class ExternalBaseline(Planner):
    """A library's optimiser as a planner, after the common initial design.

    Args:
        space: The search space (continuous parameters).
        objectives: One objective.
        seed: The campaign seed.
        pool: The candidate rows (``None``: the continuous box).
        initial_points: Experiments of the common initial design.
    """

    name = "external"

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int,
        pool: Sequence[Mapping[str, ParamValue]] | None = None,
        initial_points: int = DEFAULT_INITIAL_POINTS,
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        if len(objectives) != 1:
            raise ValueError(f"{self.name}: one objective, got {len(objectives)}")
        self.objective = objectives[0]
        self.encoder = SpaceEncoder(space)
        self.candidates = CandidateSet(self.encoder, pool, "pool") if pool is not None else None
        self.initial_points = initial_points

    # ------------------------------------------------------------------ the common part

    def _available(self, pending: Sequence[Mapping[str, ParamValue]]) -> list[int]:
        assert self.candidates is not None
        used = [o.parameters for o in self._observations] + list(pending)
        return self.candidates.available(used)

    def _initial(self, n: int, pending: Sequence[Mapping[str, ParamValue]], seed: int) -> list:
        """The common initial design: pool rows drawn as the pool ``random`` baseline draws
        them, or the next Sobol points of the campaign seed."""
        if self.candidates is not None:
            available = self._available(pending)
            picks = np.random.default_rng(seed).choice(len(available), size=n, replace=False)
            return [dict(self.candidates.points[available[int(i)]]) for i in picks]
        skip = len(self._observations) + len(pending)
        unit = sobol_unit(self.encoder.n_params, seed=self.seed, skip=skip, n=n)
        return self.encoder.from_unit(unit)

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """The initial design first, then the library's choice of ``n`` points."""
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, _ = self.decision_seed(len(pending))
        if len(self._observations) + len(pending) < self.initial_points:
            points = self._initial(n, pending, seed)
            return self.decision(
                [Proposal(parameters=p) for p in points], len(pending), t0, {"phase": "initial"}
            )
        points = self._choose(n, list(pending), seed)
        return self.decision(
            [Proposal(parameters=p) for p in points], len(pending), t0, {"phase": self.name}
        )

    def _choose(
        self, n: int, pending: list[Mapping[str, ParamValue]], seed: int
    ) -> list[dict[str, ParamValue]]:
        raise NotImplementedError

    def _told(self) -> list[Observation]:
        """Observations with a value of the objective (failed ones are left out)."""
        return [o for o in self._observations if self.objective.name in o.objectives]

    def _bounds(self) -> list[tuple[float, float]]:
        out = []
        for p in self.space.parameters:
            if not isinstance(p, ContinuousParameter):
                raise ValueError(f"{self.name}: continuous parameters only, not {p.name!r}")
            out.append((float(p.lower), float(p.upper)))
        return out

    def _snap(
        self, points: Sequence[Mapping[str, ParamValue]], pending: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, ParamValue]]:
        """Each point's nearest unmeasured, not yet picked pool row."""
        assert self.candidates is not None
        available = self._available(pending)
        picked: list[int] = []
        for p in points:
            x = self.encoder.encode([dict(p)], torch.double)
            idx = self.candidates.nearest(x, [i for i in available if i not in picked])
            picked.append(idx[0])
        return [dict(self.candidates.points[i]) for i in picked]


class BaybeBaseline(ExternalBaseline):
    """BayBE's default recommender (see the module docstring)."""

    name = "baybe"

    def _choose(
        self, n: int, pending: list[Mapping[str, ParamValue]], seed: int
    ) -> list[dict[str, ParamValue]]:
        import pandas as pd
        from baybe import Campaign
        from baybe.parameters import NumericalContinuousParameter, NumericalDiscreteParameter
        from baybe.searchspace import SearchSpace as BaybeSpace
        from baybe.searchspace import SubspaceDiscrete
        from baybe.targets import NumericalTarget
        from baybe.utils.random import set_random_seed

        names = self.space.names
        target = NumericalTarget(
            name=self.objective.name, minimize=self.objective.direction == "minimize"
        )
        if self.candidates is not None:
            rows = pd.DataFrame([dict(p) for p in self.candidates.points], columns=names)
            params = [
                NumericalDiscreteParameter(name=c, values=tuple(sorted(set(rows[c].tolist()))))
                for c in names
            ]
            space = BaybeSpace(discrete=SubspaceDiscrete.from_dataframe(rows, params))
        else:
            space = BaybeSpace.from_product(
                [
                    NumericalContinuousParameter(name=c, bounds=b)
                    for c, b in zip(names, self._bounds(), strict=True)
                ]
            )
        campaign = Campaign(
            searchspace=space,
            objective=target.to_objective(),
            allow_recommending_already_measured=False,
        )
        told = self._told()
        if told:
            campaign.add_measurements(
                pd.DataFrame(
                    [
                        {
                            **dict(o.parameters),
                            self.objective.name: o.objectives[self.objective.name],
                        }
                        for o in told
                    ]
                )
            )
        pending_frame = pd.DataFrame([dict(p) for p in pending], columns=names) if pending else None
        set_random_seed(seed % 2**31)
        out = campaign.recommend(batch_size=n, pending_experiments=pending_frame)
        return [{c: float(r[c]) for c in names} for _, r in out.iterrows()]


class AxBaseline(ExternalBaseline):
    """Ax's default generation strategy (see the module docstring)."""

    name = "ax"

    def _choose(
        self, n: int, pending: list[Mapping[str, ParamValue]], seed: int
    ) -> list[dict[str, ParamValue]]:
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig

        for noisy in ("ax", "ax.api", "ax.service", "ax.modelbridge", "ax.generation_strategy"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        names = self.space.names
        client = Client(random_seed=seed % 2**31)
        client.configure_experiment(
            parameters=[
                RangeParameterConfig(name=c, parameter_type="float", bounds=b)
                for c, b in zip(names, self._bounds(), strict=True)
            ],
            name="sdlab-benchmark",
        )
        sign = "-" if self.objective.direction == "minimize" else ""
        # Ax parses the objective as an expression: a name like "yield" (a Python keyword)
        # would not parse, so its metric has a fixed name
        client.configure_optimization(objective=f"{sign}{_AX_METRIC}")
        # the initial design is the common one, attached below: Ax goes straight to its model
        # (its centre point included: with it, Ax 1.3 generated Sobol points after 6 trials)
        client.configure_generation_strategy(
            initialization_budget=self.initial_points, initialize_with_center=False
        )
        for o in self._told():
            idx = client.attach_trial(parameters={c: float(o.parameters[c]) for c in names})
            client.complete_trial(
                trial_index=idx,
                raw_data={_AX_METRIC: float(o.objectives[self.objective.name])},
            )
        for p in pending:
            client.attach_trial(parameters={c: float(p[c]) for c in names})  # running
        trials = client.get_next_trials(max_trials=n)
        points = [{c: float(v[c]) for c in names} for v in trials.values()]  # type: ignore[arg-type]
        return self._snap(points, pending) if self.candidates is not None else points


class BoTorchBaseline(ExternalBaseline):
    """A plain BoTorch GP and qLogNEI (see the module docstring)."""

    name = "botorch"

    def _choose(
        self, n: int, pending: list[Mapping[str, ParamValue]], seed: int
    ) -> list[dict[str, ParamValue]]:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize
        from botorch.optim import optimize_acqf, optimize_acqf_discrete
        from gpytorch.mlls import ExactMarginalLogLikelihood

        torch.manual_seed(seed % 2**31)
        told = self._told()
        bounds = torch.tensor(self._bounds(), dtype=torch.double).T
        x = torch.tensor(
            [[float(o.parameters[c]) for c in self.space.names] for o in told], dtype=torch.double
        )
        sign = -1.0 if self.objective.direction == "minimize" else 1.0
        y = torch.tensor(
            [[sign * float(o.objectives[self.objective.name])] for o in told], dtype=torch.double
        )
        model = SingleTaskGP(
            x,
            y,
            input_transform=Normalize(d=x.shape[-1], bounds=bounds),
            outcome_transform=Standardize(m=1),
        )
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        x_pending = (
            torch.tensor(
                [[float(p[c]) for c in self.space.names] for p in pending], dtype=torch.double
            )
            if pending
            else None
        )
        acq = qLogNoisyExpectedImprovement(model, X_baseline=x, X_pending=x_pending)
        if self.candidates is not None:
            available = self._available(pending)
            choices = torch.tensor(
                [
                    [float(self.candidates.points[i][c]) for c in self.space.names]
                    for i in available
                ],
                dtype=torch.double,
            )
            cand, _ = optimize_acqf_discrete(acq, q=n, choices=choices, unique=True)
        else:
            cand, _ = optimize_acqf(acq, bounds=bounds, q=n, num_restarts=8, raw_samples=256)
        return [dict(zip(self.space.names, map(float, row), strict=True)) for row in cand]


BASELINES: dict[str, type[ExternalBaseline]] = {
    "baybe": BaybeBaseline,
    "ax": AxBaseline,
    "botorch": BoTorchBaseline,
}
"""The external baselines by benchmark key."""


_LIBRARY = {"baybe": "baybe", "ax": "ax"}


def missing_library(planner: str) -> str | None:
    """Why the baseline ``planner`` cannot run here (its library is not installed), if so."""
    module = _LIBRARY.get(planner)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"{planner} needs its library: pip install -e .[benchmarks]"


def make_baseline(
    key: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    *,
    seed: int,
    pool: Sequence[Mapping[str, ParamValue]] | None,
    initial_points: int | None,
) -> ExternalBaseline:
    """The external baseline ``key`` for a problem, with the BO planner's initial design
    size (``initial_points``, else its default ``2 * d`` clipped to ``[4, 10]``)."""
    n_init = initial_points or max(DEFAULT_INITIAL_POINTS, min(10, 2 * len(space)))
    return BASELINES[key](space, objectives, seed=seed, pool=pool, initial_points=n_init)
