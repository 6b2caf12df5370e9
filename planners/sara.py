"""SARA: hierarchical active learning of a phase diagram from lateral-gradient anneals.

After Ament et al., "Autonomous materials synthesis via hierarchical active learning of
nonequilibrium phase diagrams", Sci. Adv. 7, eabg4930 (2021). Two nested loops, both
Gaussian-process active learning:

* the **inner loop** works on one annealed stripe. Positions across the stripe map to local
  temperatures through the calibrated lateral profile (:class:`~planners.sara_map.
  GaussianProfile`); a GP of the spectral descriptors over local temperature (one set of
  hyperparameters shared by all descriptors) picks the next position maximising
  ``sigma(T) * (1 + gradient_weight * g(T))``, where ``sigma`` is the mean standardised
  posterior std of the descriptors and ``g`` the norm of the posterior mean's temperature
  gradient (large at phase boundaries), scaled to ``[0, 1]``. The first ``inner_initial``
  positions are spread evenly in temperature. Positions colder than ``min_temperature_c``
  are not measured. The loop ends after ``inner_budget`` measurements of the stripe, or
  earlier once the largest ``sigma`` falls below ``inner_std_threshold``. Several positions
  of one stripe may be pending at once: a batch is chosen greedily with local penalisation
  around pending and chosen temperatures (Gonzalez et al., "Batch Bayesian Optimization via
  Local Penalization", AISTATS 2016).
* the **outer loop** picks the next stripe ``(tpeak, dwell)``. Each stripe's inner GP gives
  a phase-boundary indicator (the norm of the descriptors' temperature gradient, per 100
  degC) along the stripe; mapped to (local temperature, log10 dwell) and scaled by the
  campaign-wide descriptor spread, its ``log1p`` trains an outer GP. Candidate stripes
  (scrambled Sobol) are scored by the integral, over the temperatures they reach, of the
  outer GP's posterior std weighted by ``1 + outer_boundary_weight * mu / max(mu)``:
  uncertainty sampling that prefers regions where boundaries were seen. The first
  ``outer_initial`` stripes are a Sobol design (in dwell only, at the highest peak
  temperature, with ``initial_at_max_temperature``: the hottest stripes reach every lower
  temperature).

Every objective of the campaign is a descriptor (its direction is not used); the planner
also exposes :meth:`SaraPlanner.phase_map`, the phase map its measurements imply.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field
from scipy.stats import qmc

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Decision, Proposal
from planners.base import Planner, PlannerOptions, register_planner
from planners.sara_map import GaussianProfile, infer_phase_map
from surrogates.gp import fit_shared_hyperparameter_gp, fit_single_task_gp, hyperparameters_of
from surrogates.seeding import seeded

logger = logging.getLogger(__name__)

__all__ = ["SaraPlanner"]


@dataclass
class _Stripe:
    """One stripe: its synthesis conditions and what was measured or is pending on it."""

    tpeak: float
    dwell: float
    positions: list[float] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    n_failed: int = 0
    pending: list[float] = field(default_factory=list)

    @property
    def used(self) -> int:
        return len(self.positions) + self.n_failed + len(self.pending)


@register_planner("sara")
class SaraPlanner(Planner):
    """Hierarchical SARA planner (see the module docstring)."""

    version = "2"

    class Options(PlannerOptions):
        """Options of the ``sara`` planner (``[planner.options]``)."""

        temperature: str = "tpeak_c"
        dwell: str = "dwell_us"
        position: str = "position_mm"
        ambient_c: float = Field(default=25.0, ge=-273.15, le=1000.0)
        width_mm: float = Field(default=0.55, gt=0.0, le=100.0)
        width_log_dwell_slope: float = Field(default=0.12, ge=0.0, le=1.0)
        center_mm: float = 0.0
        inner_budget: int = Field(default=10, ge=2, le=500)
        inner_initial: int = Field(default=3, ge=1, le=50)
        inner_std_threshold: float = Field(default=0.0, ge=0.0)
        gradient_weight: float = Field(default=10.0, ge=0.0)
        min_temperature_c: float | None = None
        outer_initial: int = Field(default=3, ge=1, le=100)
        initial_at_max_temperature: bool = True
        outer_candidates: int = Field(default=256, ge=8, le=8192)
        outer_boundary_weight: float = Field(default=1.0, ge=0.0)
        position_grid: int = Field(default=121, ge=11, le=5001)
        boundary_grid: int = Field(default=12, ge=3, le=200)
        cluster_threshold: float = Field(default=0.05, gt=0.0)

    def __init__(
        self, space: SearchSpace, objectives: Sequence[Objective], *, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(space, objectives, seed=seed, **options)
        o = self.options
        assert isinstance(o, SaraPlanner.Options)
        self.opts = o
        problems: list[tuple[str, str]] = []
        self._bounds: dict[str, tuple[float, float]] = {}
        names = [p.name for p in space.parameters]
        for key in ("temperature", "dwell", "position"):
            name = getattr(o, key)
            param = next((p for p in space.parameters if p.name == name), None)
            if not isinstance(param, ContinuousParameter):
                problems.append(
                    (f"planner.options.{key}", f"{name!r} is not a continuous parameter of {names}")
                )
                continue
            self._bounds[key] = (param.lower, param.upper)
        if len(space.parameters) != 3 and not problems:
            problems.append(
                ("planner.options", f"sara needs exactly three parameters, got {names}")
            )
        if "dwell" in self._bounds and self._bounds["dwell"][0] <= 0:
            problems.append(("planner.options.dwell", "the dwell parameter needs lower > 0"))
        if o.inner_initial > o.inner_budget:
            problems.append(("planner.options.inner_initial", "must not exceed inner_budget"))
        if problems:
            raise InvalidCampaignError(None, problems)
        self.profile = GaussianProfile(
            o.ambient_c, o.width_mm, o.width_log_dwell_slope, o.center_mm
        )
        self.descriptor_names = [obj.name for obj in objectives]
        lo, hi = self._bounds["position"]
        self._grid = np.linspace(lo, hi, o.position_grid)
        self._indicator_cache: dict[tuple[float, float, int], tuple[np.ndarray, np.ndarray]] = {}

    # ----------------------------------------------------------------------------- state
    def _key(self, point: Mapping[str, ParamValue]) -> tuple[float, float]:
        return (float(point[self.opts.temperature]), float(point[self.opts.dwell]))

    def _stripes(self, pending: Sequence[Mapping[str, ParamValue]]) -> list[_Stripe]:
        """Stripes in order of first appearance (observations as told, then pending)."""
        stripes: dict[tuple[float, float], _Stripe] = {}
        pos = self.opts.position
        for obs in self._observations:
            key = self._key(obs.parameters)
            s = stripes.setdefault(key, _Stripe(*key))
            values = [obs.objectives.get(n) for n in self.descriptor_names]
            if obs.feasible and all(v is not None and math.isfinite(v) for v in values):
                s.positions.append(float(obs.parameters[pos]))
                s.values.append([float(v) for v in values if v is not None])
            else:
                s.n_failed += 1
        for point in pending:
            key = self._key(point)
            stripes.setdefault(key, _Stripe(*key)).pending.append(float(point[pos]))
        return list(stripes.values())

    def _point(self, stripe: _Stripe, position: float) -> dict[str, ParamValue]:
        o = self.opts
        return {o.temperature: stripe.tpeak, o.dwell: stripe.dwell, o.position: float(position)}

    # ------------------------------------------------------------------------------- ask
    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` measurements: positions on the current stripe, or a new stripe.

        Args:
            n: Number of proposals.
            pending: Measurements still running (any stripe).

        Returns:
            The decision; ``details["loop"]`` is ``"outer"`` when it opens a new stripe,
            else ``"inner"``; each proposal's ``origin`` says which loop chose it.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        stripes = self._stripes(pending)
        details: dict[str, Any] = {
            "decision_seed": seed,
            "repeat": repeat,
            "n_stripes": len(stripes),
            "new_stripes": [],
            "inner": [],
        }
        proposals: list[Proposal] = []
        scores: list[float] = []
        with seeded(seed % (2**31)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while len(proposals) < n:
                current = stripes[-1] if stripes else None
                if current is None or self._stripe_done(current, details):
                    t_outer = time.perf_counter()
                    current = self._outer(stripes, seed, details)
                    details["seconds_outer"] = time.perf_counter() - t_outer
                    stripes.append(current)
                    origin = "outer"
                else:
                    origin = "inner"
                k = min(n - len(proposals), self.opts.inner_budget - current.used)
                for pos, score in self._inner(current, k, details):
                    proposals.append(Proposal(self._point(current, pos), score, origin))
                    scores.append(score)
                    current.pending.append(pos)
        details["loop"] = "outer" if details["new_stripes"] else "inner"
        last = stripes[-1]
        details["stripe"] = {
            "index": len(stripes) - 1,
            "tpeak": last.tpeak,
            "dwell": last.dwell,
            "measured": len(last.positions),
        }
        return self.decision(proposals, len(pending), t0, details, scores)

    # ----------------------------------------------------------------------- inner loop
    def _temps(self, stripe: _Stripe, positions: np.ndarray | list[float]) -> np.ndarray:
        return self.profile.temperature(stripe.tpeak, stripe.dwell, np.asarray(positions))

    def _candidates(self, stripe: _Stripe) -> tuple[np.ndarray, np.ndarray]:
        """Candidate positions on a stripe and their local temperatures: the position grid,
        less the positions colder than ``min_temperature_c`` (unless that leaves none)."""
        temps = self._temps(stripe, self._grid)
        if self.opts.min_temperature_c is not None:
            keep = temps >= self.opts.min_temperature_c
            if keep.any():
                return self._grid[keep], temps[keep]
        return self._grid, temps

    def _fit_inner(self, stripe: _Stripe) -> Any:
        """The stripe's GP of descriptors over local temperature (``None``: too little data)."""
        if len(stripe.positions) < 2:
            return None
        x = torch.as_tensor(self._temps(stripe, stripe.positions), dtype=torch.double)[:, None]
        y = torch.as_tensor(np.asarray(stripe.values), dtype=torch.double)
        lo = float(min(self._candidates(stripe)[1].min(), x.min()))
        bounds = torch.tensor([[lo], [max(stripe.tpeak, lo + 1.0)]], dtype=torch.double)
        return fit_shared_hyperparameter_gp(x, y, bounds=bounds, device="cpu")

    def _sigma_and_gradient(
        self, model: Any, temps: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At temperatures ``temps``: the mean standardised posterior std, the norm of the
        mean's gradient in outcome-std units, and in raw descriptor units (both per 100 degC).
        """
        h = 0.5
        t = torch.as_tensor(temps, dtype=torch.double)[:, None]
        ystd = model.outcome_transform.stdvs.detach().reshape(-1)
        with torch.no_grad():
            post = model.posterior(t)
            std = post.variance.clamp_min(0).sqrt() / ystd
            up = model.posterior(t + h).mean
            down = model.posterior(t - h).mean
        raw = (up - down) / (2 * h) * 100.0
        return (
            std.mean(dim=-1).numpy(),
            (raw / ystd).norm(dim=-1).numpy(),
            raw.norm(dim=-1).numpy(),
        )

    def _stripe_done(self, stripe: _Stripe, details: dict[str, Any]) -> bool:
        o = self.opts
        if stripe.used >= o.inner_budget:
            return True
        if o.inner_std_threshold <= 0 or len(stripe.positions) < max(o.inner_initial, 2):
            return False
        model = self._fit_inner(stripe)
        sigma, _, _ = self._sigma_and_gradient(model, self._candidates(stripe)[1])
        done = bool(sigma.max() < o.inner_std_threshold)
        details["inner_max_std"] = float(sigma.max())
        return done

    def _inner(self, stripe: _Stripe, k: int, details: dict[str, Any]) -> list[tuple[float, float]]:
        """``k`` positions on ``stripe`` with their scores (``stripe.pending`` grows)."""
        o = self.opts
        grid, temps = self._candidates(stripe)
        out: list[tuple[float, float]] = []
        model = None
        score = np.zeros_like(grid)
        t_fit = time.perf_counter()
        if stripe.used >= o.inner_initial:
            model = self._fit_inner(stripe)
        if model is not None:
            sigma, grad, _ = self._sigma_and_gradient(model, temps)
            g = grad / grad.max() if grad.max() > 0 else grad
            score = sigma * (1.0 + o.gradient_weight * g)
            hyper = hyperparameters_of(model)
            lengthscale_c = hyper["lengthscales"][0] * float(temps.max() - temps.min())
            details["inner"].append(
                {
                    "tpeak": stripe.tpeak,
                    "dwell": stripe.dwell,
                    "n_train": len(stripe.positions),
                    "hyperparameters": hyper,
                    "max_std": float(sigma.max()),
                    "seconds": time.perf_counter() - t_fit,
                }
            )
        for _ in range(k):
            taken = self._temps(stripe, stripe.positions + stripe.pending)
            if model is None:
                pos = self._spread_position(stripe, grid, temps)
                out.append((pos, 0.0))
            else:
                penal = np.ones_like(score)
                for tt in taken:
                    penal *= 1.0 - np.exp(-0.5 * ((temps - tt) / max(lengthscale_c, 1.0)) ** 2)
                best = int(np.argmax(score * penal))
                pos = float(grid[best])
                out.append((pos, float(score[best] * penal[best])))
            stripe.pending.append(pos)
        del stripe.pending[len(stripe.pending) - k :]
        return out

    def _spread_position(self, stripe: _Stripe, grid: np.ndarray, temps: np.ndarray) -> float:
        """A position without a model: the next of ``inner_initial`` positions spread evenly
        in local temperature on one side of the centre line, then the temperature farthest
        from every measured or pending one."""
        o = self.opts
        j = stripe.used
        side = grid >= o.center_mm
        idx = np.flatnonzero(side) if side.any() else np.arange(len(grid))
        if j < o.inner_initial:
            lo, hi = float(temps.min()), float(temps.max())
            frac = 1.0 if o.inner_initial == 1 else 1.0 - j / (o.inner_initial - 1)
            target = lo + frac * (hi - lo)
            return float(grid[idx[int(np.argmin(np.abs(temps[idx] - target)))]])
        taken = self._temps(stripe, stripe.positions + stripe.pending)
        gap = np.abs(temps[idx][:, None] - taken[None, :]).min(axis=1)
        return float(grid[idx[int(np.argmax(gap))]])

    # ----------------------------------------------------------------------- outer loop
    def _indicator(self, stripe: _Stripe) -> tuple[np.ndarray, np.ndarray] | None:
        """Phase-boundary indicator along a stripe: ``(temperatures, values)``."""
        if len(stripe.positions) < 2:
            return None
        key = (stripe.tpeak, stripe.dwell, len(stripe.positions))
        if key not in self._indicator_cache:
            with seeded(self.seed % (2**31)):
                model = self._fit_inner(stripe)
            t_obs = self._temps(stripe, stripe.positions)
            temps = np.linspace(t_obs.min(), t_obs.max(), self.opts.boundary_grid)
            _, _, raw = self._sigma_and_gradient(model, temps)
            self._indicator_cache[key] = (temps, raw)
        return self._indicator_cache[key]

    def _outer(self, stripes: list[_Stripe], seed: int, details: dict[str, Any]) -> _Stripe:
        """Choose a new stripe (appended to ``details["new_stripes"]``)."""
        o = self.opts
        t_lo, t_hi = self._bounds["temperature"]
        d_lo, d_hi = (math.log10(v) for v in self._bounds["dwell"])
        record: dict[str, Any] = {}
        n_done = len(stripes)
        data = [ind for s in stripes if (ind := self._indicator(s)) is not None]
        if n_done < o.outer_initial or len(data) < 2:
            unit = qmc.Sobol(2, scramble=True, seed=self.seed).random(
                2 ** math.ceil(math.log2(n_done + 1))
            )[n_done]
            # the hottest stripes reach every lower temperature: the most to learn from
            tpeak = t_hi if o.initial_at_max_temperature else t_lo + unit[0] * (t_hi - t_lo)
            dwell = 10 ** (d_lo + unit[1] * (d_hi - d_lo))
            record.update(phase="initial_design", score=None)
        else:
            xs, ys = [], []
            spread = (
                np.std(np.asarray([v for s in stripes for v in s.values]), axis=0).mean() or 1.0
            )
            for s, ind in zip(stripes, [self._indicator(s) for s in stripes], strict=True):
                if ind is None:
                    continue
                temps, values = ind
                xs.append(np.column_stack([temps, np.full_like(temps, math.log10(s.dwell))]))
                ys.append(values / spread)
            x = torch.as_tensor(np.concatenate(xs), dtype=torch.double)
            y = torch.as_tensor(np.log1p(np.concatenate(ys)), dtype=torch.double)[:, None]
            lo_t = min(self.profile.ambient_c, t_lo)
            bounds = torch.tensor([[lo_t, d_lo], [t_hi, d_hi]], dtype=torch.double)
            t_fit = time.perf_counter()
            model = fit_single_task_gp(x, y, bounds=bounds, device="cpu")
            fit_s = time.perf_counter() - t_fit
            unit = qmc.Sobol(2, scramble=True, seed=seed).random(o.outer_candidates)
            cand_t = t_lo + unit[:, 0] * (t_hi - t_lo)
            cand_d = d_lo + unit[:, 1] * (d_hi - d_lo)
            g = o.boundary_grid
            edge = np.abs(self._grid - o.center_mm).max()
            t_min = self.profile.temperature(cand_t, 10**cand_d, o.center_mm + edge)
            if o.min_temperature_c is not None:
                t_min = np.clip(t_min, o.min_temperature_c, None)
            frac = np.linspace(0.0, 1.0, g)
            tt = t_min[:, None] + (cand_t - t_min)[:, None] * frac[None, :]
            pts = np.column_stack([tt.reshape(-1), np.repeat(cand_d, g)])
            with torch.no_grad():
                post = model.posterior(torch.as_tensor(pts, dtype=torch.double))
                mu = post.mean.reshape(len(cand_t), g).clamp_min(0.0)
                sd = post.variance.clamp_min(0).sqrt().reshape(len(cand_t), g)
            weight = 1.0 + o.outer_boundary_weight * mu / mu.max().clamp_min(1e-12)
            # integral over the temperatures the stripe reaches (per 100 degC)
            reach = np.clip(cand_t - t_min, 0.0, None) / 100.0
            score = (sd * weight).mean(dim=-1).numpy() * reach
            best = int(np.argmax(score))
            tpeak, dwell = float(cand_t[best]), float(10 ** cand_d[best])
            record.update(
                phase="active_learning",
                score=float(score[best]),
                hyperparameters=hyperparameters_of(model),
                n_train=int(x.shape[0]),
                seconds_fit=fit_s,
                score_quantiles=[float(q) for q in np.quantile(score, [0.0, 0.5, 1.0])],
            )
        tpeak = float(min(max(tpeak, t_lo), t_hi))
        dwell = float(min(max(dwell, self._bounds["dwell"][0]), self._bounds["dwell"][1]))
        record.update(tpeak=tpeak, dwell=dwell, index=len(stripes))
        details["new_stripes"].append(record)
        return _Stripe(tpeak, dwell)

    # ------------------------------------------------------------------------ phase map
    def phase_map(self, grid_t_c: np.ndarray, grid_dwell: np.ndarray) -> np.ndarray:
        """The phase map the measurements so far imply (see :mod:`planners.sara_map`).

        Args:
            grid_t_c: ``g`` local temperatures (degC).
            grid_dwell: ``g`` dwells (the dwell parameter's unit), paired with ``grid_t_c``.

        Returns:
            ``g`` inferred phase labels (cluster numbers).
        """
        stripes = self._stripes(())
        if not any(s.positions for s in stripes):
            raise ValueError("no successful measurement yet: there is no phase map")
        t = np.concatenate([self._temps(s, s.positions) for s in stripes if s.positions])
        ld = np.concatenate([np.full(len(s.positions), math.log10(s.dwell)) for s in stripes])
        y = np.concatenate([np.asarray(s.values) for s in stripes if s.positions])
        d_lo, d_hi = (math.log10(v) for v in self._bounds["dwell"])
        return infer_phase_map(
            t,
            ld,
            y,
            np.asarray(grid_t_c),
            np.log10(np.asarray(grid_dwell)),
            threshold=self.opts.cluster_threshold,
            t_range_c=(self.profile.ambient_c, self._bounds["temperature"][1]),
            log_dwell_range=(d_lo, d_hi),
        )
