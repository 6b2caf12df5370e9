"""The ``screening`` planner: propose the best untried candidates of a lab's own list.

The generate-screen-measure loop of GNoME (Merchant et al. 2023) starts, in most labs, from
a list: compounds from a database, an enumeration, a supplier's catalogue. This planner
takes such a list as its candidate set (the ``discovery`` planner instead generates its own
candidates inside one chemical system):

1. the list (:mod:`planners.candidate_list`: a CSV of ids and formulas, a structure file or
   a folder of structures, or an earlier campaign's export) is read once; rows that cannot be
   used are reported, by row and reason, in every decision's details;
2. every candidate is featurised once with a registered descriptor, in parallel, and the
   rows are cached by content (:mod:`planners.feature_cache`), so a restart or the next
   campaign over the same list computes nothing;
3. the features are standardised over the list and, with ``components`` (by default 20
   for ``list_gp``, none for other surrogates), projected onto the list's
   first principal components (Pearson 1901; computed from the list alone, never from
   measurements), scaled by one common factor so that the first spans the unit interval:
   a reduced space in which a smooth model's distances mean something, with the list's own
   directions of spread kept in proportion;
4. the first ``initial_points`` picks are drawn at random from the list; then a registered
   surrogate (default ``"list_gp"``, an exact GP for long lists, :mod:`surrogates.list_gp`;
   a forest, ``"rf"``, or any other registered one) is fitted to
   the measured candidates' rows and utilities, and every untried candidate is scored from
   the surrogate's mean and standard deviation in closed form (log EI, UCB, the mean) or by
   Thompson sampling of an ensemble's members, with the experiments still pending and the
   batch's earlier picks penalised (:mod:`planners.ensemble_acq`). A GP's standard
   deviation is computed exactly only where its cheap upper bound could still win
   (:func:`planners.ensemble_acq.select_batch_refined`), so the picks are the exact
   posterior's. The cost of a suggestion is one fit plus one prediction per candidate:
   linear in the list, flat in the number of pending experiments.

The search space holds the string parameter ``id_parameter`` (default ``candidate``, the
list's id) and, unless ``formula_parameter`` is ``None``, a string parameter holding the
candidate's formula (default ``formula``), so that an instrument (or the simulated
``formula-energy`` world) knows what to make. ``Decision.details["proposals"]`` gives each
proposal's ``id``, ``formula`` and ``source`` (its row in the list).

References:
    Merchant, A. et al. (2023). Scaling deep learning for materials discovery. Nature 624.
    González, J., Dai, Z., Hennig, P. and Lawrence, N. (2016). Batch Bayesian optimization
    via local penalization. AISTATS.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field

from models.errors import InvalidCampaignError, PlannerError, RegistryError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace, StringParameter
from models.records import Decision, Proposal
from planners.base import Planner, PlannerOptions, register_planner
from planners.bo_surrogate import surrogate_option_problem
from planners.candidate_list import CandidateList, read_candidates
from planners.ensemble_acq import (
    Acquisition,
    default_device,
    select_batch,
    select_batch_refined,
)
from planners.feature_cache import FeatureResult, featurize_rows
from surrogates.base import EnsembleSurrogate, Surrogate, make_surrogate
from surrogates.list_gp import ListGPSurrogate

logger = logging.getLogger(__name__)

LIST_GP_COMPONENTS = 20
"""Principal components ``list_gp`` sees by default: on the 25,000-oxide benchmark list they
keep 93 % of the Magpie variance, and the GP's fit and scoring stay within a second."""

__all__ = ["LIST_GP_COMPONENTS", "ScreeningOptions", "ScreeningPlanner", "project", "refit_point"]

MAX_BAD_ROWS_RECORDED = 50


class ScreeningOptions(PlannerOptions):
    """Options of the ``screening`` planner (``[planner.options]``).

    Attributes:
        candidates: The list: a ``.csv`` file, a structure file or a folder of structures.
        id_column: The CSV column of the candidates' ids (``None``: the row number).
        formula_column: The CSV column of their formulas.
        id_parameter: The string parameter that carries a candidate's id.
        formula_parameter: The string parameter that carries its formula (``None``: none).
        descriptor: Registered descriptor the candidates are featurised with.
        descriptor_options: Its options.
        cache_dir: Directory of the feature cache (``None``: no cache).
        workers: Processes that featurise (``None``: one per core).
        components: Principal components of the list's standardised features the
            surrogate sees; ``"all"``: every feature, unprojected; ``None`` (default):
            20 for ``list_gp``, every feature for other surrogates.
        refit_growth: With ``list_gp``, its hyperparameters are refitted when the
            measured rows have grown by this fraction since the last fit (on the first rows
            in the order they were measured, so a restarted planner fits the same); in
            between, the posterior conditions on every row with the last ones. 0: every ask.
        surrogate: Registered surrogate that models the objective (default ``"list_gp"``;
            ``"rf"``, ``"gbr"``, ``"mlp_ensemble"``, ``"svr"``, ``"gp"``, ...).
        surrogate_options: Its options (feature rows are given, so no descriptor).
        acquisition: ``"mean"`` (greedy, the default: a list screen wants as many of the
            best rows as it can get within its budget, and the GP's trend already reaches
            beyond the best measured), ``"ei"`` (log expected improvement), ``"ucb"`` or
            ``"thompson"`` (one ensemble member per pick; ensembles only).
        beta: UCB's exploration weight.
        initial_points: Random picks before the surrogate screens.
        device: Where the acquisition is computed (``None``: CUDA when present).
    """

    candidates: str
    id_column: str | None = "id"
    formula_column: str = "formula"
    id_parameter: str = "candidate"
    formula_parameter: str | None = "formula"
    descriptor: str = "magpie"
    descriptor_options: dict[str, Any] = Field(default_factory=dict)
    cache_dir: str | None = None
    workers: int | None = Field(default=None, ge=1, le=256)
    components: Annotated[int, Field(ge=1, le=10_000)] | Literal["all"] | None = None
    refit_growth: float = Field(default=0.1, ge=0.0, le=10.0)
    surrogate: str = "list_gp"
    surrogate_options: dict[str, Any] = Field(default_factory=dict)
    acquisition: Acquisition = "mean"
    beta: float = Field(default=2.0, gt=0.0, le=100.0)
    initial_points: int = Field(default=10, ge=1, le=100_000)
    device: str | None = None


@register_planner("screening")
class ScreeningPlanner(Planner):
    """Screen a candidate list and propose its best untried rows (see the module docstring).

    ``Decision.details`` holds ``phase`` (``"initial_design"``, ``"screening"``, or
    ``"finished"``), ``proposals`` (``{"id", "formula", "source"}`` each), ``n_candidates``,
    ``n_available``, ``n_bad_rows`` and ``bad_rows`` (the first 50, ``"where: reason"``),
    ``features_computed``, ``decision_seed``, ``repeat`` and, when screening,
    ``surrogate``, ``acquisition``, ``n_train``, ``predicted_utility`` and
    ``predicted_std`` of the proposals, ``fit_seconds``, ``score_seconds`` and ``device``.
    """

    version = "2"
    Options: ClassVar[type[PlannerOptions]] = ScreeningOptions

    def __init__(
        self, space: SearchSpace, objectives: Sequence[Objective], *, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(space, objectives, seed=seed, **options)
        opts = self.options
        assert isinstance(opts, ScreeningOptions)
        self.opts = opts
        wanted = [("id_parameter", opts.id_parameter)]
        if opts.formula_parameter is not None:
            wanted.append(("formula_parameter", opts.formula_parameter))
        for key, name in wanted:
            if name not in space.names or not isinstance(space[name], StringParameter):
                raise InvalidCampaignError(
                    None, [(f"planner.options.{key}", f"no string parameter {name!r}")]
                )
        if len(space) != len(wanted):
            raise PlannerError(
                "screening: the search space must hold only the candidate's id (and formula)"
            )
        mains = [o for o in self.objectives if not o.is_constraint]
        if len(mains) != 1:
            raise PlannerError("screening: the campaign needs exactly one objective")
        self.objective = mains[0]
        probe = self._surrogate(0)  # an unknown name or a bad option fails here
        if opts.acquisition == "thompson" and not isinstance(probe, EnsembleSurrogate):
            raise InvalidCampaignError(
                None,
                [
                    (
                        "planner.options.acquisition",
                        f"'thompson' needs an ensemble surrogate, not {opts.surrogate!r}",
                    )
                ],
            )
        self.list: CandidateList = read_candidates(
            opts.candidates, id_column=opts.id_column, formula_column=opts.formula_column
        )
        self._index = {row.id: k for k, row in enumerate(self.list.rows)}
        self._features: FeatureResult | None = None
        self._scaled: torch.Tensor | None = None
        self._rows: np.ndarray | None = None
        self._gp: tuple[tuple[int, ...], ListGPSurrogate] | None = None
        self.device = torch.device(opts.device) if opts.device else default_device()

    def features(self) -> FeatureResult:
        """The list's feature rows (computed, or read from the cache, on first use)."""
        if self._features is None:
            o = self.opts
            try:
                self._features = featurize_rows(
                    self.list.rows,
                    o.descriptor,
                    o.descriptor_options,
                    cache_dir=o.cache_dir,
                    workers=o.workers,
                )
            except RegistryError as exc:
                raise InvalidCampaignError(
                    None, [("planner.options.descriptor", str(exc))]
                ) from exc
            x = torch.as_tensor(self._features.x, dtype=torch.double, device=self.device)
            spread = x.std(dim=0) if x.shape[0] > 1 else torch.ones(x.shape[1], device=self.device)
            self._scaled = (x - x.mean(dim=0)) / torch.where(spread > 0, spread, 1.0)
            self._rows = self._features.x
            components = self.components
            if components is not None:
                self._rows = project(self._scaled.cpu().numpy(), components)
            if not self._features.index:
                raise PlannerError("screening: no candidate of the list could be featurised")
        return self._features

    @property
    def components(self) -> int | None:
        """The principal components the surrogate sees (``None``: every feature)."""
        c = self.opts.components
        if c is None:
            return LIST_GP_COMPONENTS if self.opts.surrogate == "list_gp" else None
        return None if c == "all" else c

    def _surrogate(self, seed: int) -> Surrogate:
        o = self.opts
        opts = {"seed": seed % 2**31, **o.surrogate_options}
        try:
            return make_surrogate(o.surrogate, **opts)
        except RegistryError as exc:
            raise InvalidCampaignError(None, [("planner.options.surrogate", str(exc))]) from exc
        except InvalidCampaignError as exc:
            problems = [surrogate_option_problem(p) for p in exc.problems]
            raise InvalidCampaignError(None, problems) from exc

    def _list_gp(self, train_rows: list[int], train_y: list[float]) -> ListGPSurrogate:
        """The ``list_gp`` of this ask: the scheduled hyperparameters, conditioned on all rows.

        The hyperparameters are those fitted on the first ``refit_point(n)`` measured rows
        (seeded by the campaign's seed and that count), kept until the schedule moves on.
        """
        assert self._rows is not None
        n_fit = refit_point(len(train_rows), self.opts.refit_growth)
        key = tuple(train_rows[:n_fit])
        if self._gp is None or self._gp[0] != key:
            gp = self._surrogate(
                int(np.random.SeedSequence([self.seed, n_fit]).generate_state(1)[0])
            )
            assert isinstance(gp, ListGPSurrogate)
            gp.fit(self._rows[train_rows[:n_fit]], np.asarray(train_y[:n_fit]))
            self._gp = (key, gp)
        if n_fit == len(train_rows):
            return self._gp[1]
        return self._gp[1].conditioned(self._rows[train_rows], np.asarray(train_y))

    def _row_of(self, point: Mapping[str, ParamValue]) -> int | None:
        """Position in the feature rows of a point's candidate (``None``: not listed)."""
        k = self._index.get(str(point.get(self.opts.id_parameter)))
        return None if k is None else self._feature_pos.get(k)

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose up to ``n`` untried candidates of the list (see the class docstring).

        Returns fewer (none, with ``details["finished"]``) when the list runs out.
        """
        started = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        o = self.opts
        feats = self.features()
        self._feature_pos = {k: pos for pos, k in enumerate(feats.index)}
        m = len(feats.index)
        free = torch.ones(m, dtype=torch.bool)
        pend_rows = [r for r in (self._row_of(p) for p in pending) if r is not None]
        for r in pend_rows:
            free[r] = False
        name = self.objective.name
        train_rows: list[int] = []
        train_y: list[float] = []
        for ob in self._observations:
            row = self._row_of(ob.parameters)
            if row is None:
                continue
            r = row
            free[r] = False
            if ob.feasible and name in ob.objectives:
                train_rows.append(r)
                train_y.append(self.objective.utility(float(ob.objectives[name])))
        bad = self.list.bad + feats.bad
        details: dict[str, Any] = {
            "decision_seed": seed,
            "repeat": repeat,
            "n_candidates": m,
            "n_available": int(free.sum()),
            "n_bad_rows": len(bad),
            "bad_rows": [f"{b.where}: {b.reason}" for b in bad[:MAX_BAD_ROWS_RECORDED]],
            "features_computed": feats.computed,
            "descriptor": o.descriptor,
        }
        q = min(n, int(free.sum()))
        if q == 0:
            details["phase"] = "finished"
            details["finished"] = "every candidate of the list was measured or is pending"
            details["proposals"] = []
            return self.decision([], len(pending), started, details)
        scores: list[float] = []
        if len(set(train_rows)) + len(pend_rows) < o.initial_points or len(set(train_rows)) < 2:
            rng = np.random.default_rng(seed)
            choices = np.flatnonzero(free.numpy())
            picks = [int(i) for i in rng.choice(choices, size=q, replace=False)]
            details["phase"] = "initial_design"
        else:
            picks, scores, extra = self._screen(train_rows, train_y, pend_rows, free, q, seed)
            details.update(extra)
            details["phase"] = "screening"
        chosen = [self.list.rows[feats.index[i]] for i in picks]
        details["proposals"] = [
            {"id": c.id, "formula": c.formula, "source": c.source} for c in chosen
        ]
        proposals = []
        for k, c in enumerate(chosen):
            point: dict[str, ParamValue] = {o.id_parameter: c.id}
            if o.formula_parameter is not None:
                point[o.formula_parameter] = c.formula
            proposals.append(
                Proposal(parameters=point, score=scores[k] if scores else None, origin="list")
            )
        return self.decision(proposals, len(pending), started, details, scores)

    def _screen(
        self,
        train_rows: list[int],
        train_y: list[float],
        pend_rows: list[int],
        free: torch.Tensor,
        q: int,
        seed: int,
    ) -> tuple[list[int], list[float], dict[str, Any]]:
        o = self.opts
        self.features()
        assert self._scaled is not None
        t0 = time.perf_counter()
        rows = self._rows
        assert rows is not None
        surrogate = self._surrogate(seed)
        if isinstance(surrogate, ListGPSurrogate):
            surrogate = self._list_gp(train_rows, train_y)
        else:
            surrogate.fit(rows[train_rows], np.asarray(train_y))
        t1 = time.perf_counter()
        members: torch.Tensor | None = None
        info: dict[str, Any] = {}
        if isinstance(surrogate, ListGPSurrogate):
            mean, bound = surrogate.bounded_predictions(rows, self.device)
            n_exact = [0]

            def exact(idx: torch.Tensor) -> torch.Tensor:
                n_exact[0] += int(idx.numel())
                return surrogate.exact_std(rows[idx.numpy()], self.device)

            picks, scores, std = select_batch_refined(
                o.acquisition,
                mean,
                bound,
                exact,
                self._scaled,
                q,
                best=max(train_y),
                beta=o.beta,
                pending_rows=pend_rows,
                available=free.to(self.device),
                seed=seed % 2**31,
            )
            info["n_exact_std"] = n_exact[0]
        else:
            if isinstance(surrogate, EnsembleSurrogate):
                members, mean, std = surrogate.member_predictions(rows, self.device)
            else:
                mu, sd = surrogate.predict(rows)
                mean = torch.as_tensor(mu, dtype=torch.double, device=self.device)
                std = torch.as_tensor(sd, dtype=torch.double, device=self.device)
            pending = [(self._scaled[r], float(mean[r]), float(std[r])) for r in pend_rows]
            picks, scores = select_batch(
                o.acquisition,
                mean,
                std,
                self._scaled,
                q,
                best=max(train_y),
                beta=o.beta,
                members=members,
                pending=pending,
                available=free.to(self.device),
                seed=seed % 2**31,
            )
        t2 = time.perf_counter()
        info |= {
            "surrogate": o.surrogate,
            "components": self.components,
            "acquisition": o.acquisition,
            "n_train": len(train_rows),
            "predicted_utility": [float(mean[i]) for i in picks],
            "predicted_std": [float(std[i]) for i in picks],
            "fit_seconds": t1 - t0,
            "score_seconds": t2 - t1,
            "device": str(self.device),
        }
        return picks, scores, info


def project(scaled: NDArray[np.float64], components: int) -> NDArray[np.float64]:
    """The list's rows on its first principal components, in one common unit.

    Args:
        scaled: ``m x d`` features, standardised over the list.
        components: How many components (at most ``min(m, d)`` are kept).

    Returns:
        ``m x k`` scores, shifted to start at 0 and divided by the first component's range,
        so that the first spans ``[0, 1]`` and the others keep their spread relative to it.
    """
    centred = scaled - scaled.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    z = centred @ vt[:components].T
    # each component's sign fixed (largest loading positive), so the projection is unique
    signs = np.sign(vt[:components][np.arange(z.shape[1]), np.abs(vt[:components]).argmax(1)])
    z = z * np.where(signs == 0, 1.0, signs)
    z = z - z.min(axis=0)
    span = float(z[:, 0].max()) if z.shape[0] > 1 else 0.0
    return z / (span if span > 0 else 1.0)


def refit_point(n: int, growth: float) -> int:
    """The number of rows the hyperparameters of an ask with ``n`` rows are fitted on.

    The schedule starts at 2 and each point is ``floor(p (1 + growth))``, at least ``p + 1``
    (``growth = 0``: every ``n``); the answer is the last point not above ``n``.
    """
    p = 2
    while True:
        nxt = max(p + 1, math.floor(p * (1.0 + growth)))
        if nxt > n:
            return min(p, n)
        p = nxt
