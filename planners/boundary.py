"""Boundary-seeking active learning for phase maps: the ``boundary`` planner.

The instrument reports a phase label (a class index ``0 .. K-1``) in one objective. After
a Sobol initial design, every ask fits the Dirichlet GP classifier of
:mod:`surrogates.phase` (Milios et al., NeurIPS 2018) to the labels and scores
``n_candidates`` Sobol candidates by how uncertain the predicted phase is there:

* ``entropy`` (default): the entropy of the predicted class probabilities, divided by
  ``log K``, i.e. uncertainty sampling (Lewis and Gale, SIGIR 1994) in its entropy form;
  it is high on the boundaries between phases and, since the probabilities average over
  the latent uncertainty, also far from any data;
* ``margin``: ``1 - (p_first - p_second)``, the margin between the two most likely phases
  (Scheffer, Decomain and Wrobel, IDA 2001);
* ``bald``: the mutual information between the label and the latent functions (Houlsby,
  Huszár, Ghahramani and Lengyel, "Bayesian Active Learning for Classification and
  Preference Learning", 2011), which discounts boundaries the model is already sure of.
  On the ``phase-map`` world (``benchmarks/active_learning.py``, 20 seeds, batches of 5)
  it reached 90 % map accuracy after a median of 25 experiments against 32.5 for
  ``entropy``, but it is less steady one experiment at a time (one seed of the test
  suite's sequential run: 0.894 against 0.926 after 30), so it is not the default yet.

The score is multiplied by the model's own uncertainty to the power ``uncertainty_weight``
(the latent posterior standard deviation relative to its prior, averaged over the
classes), so that a boundary already pinned down by nearby measurements yields to one
that is not. A batch, and the experiments still pending, are spread out by local
penalisation (González, Dai, Hennig and Lawrence, "Batch Bayesian Optimization via Local
Penalization", AISTATS 2016): each point already chosen or pending multiplies the scores
around it by ``1 - exp(-|x - x_j|^2 / 2 r^2)``, with ``r`` the classifier's lengthscales
times ``penalty_radius`` (per input, in the unit cube). The greedy picks therefore
never coincide, and a pending experiment's neighbourhood waits for its label.

Boundaries can only be refined between phases that have been seen. A phase that forms in
a small pocket inside a large one (a line compound, a metastable phase) is invisible to
the classifier until a measurement lands in it: its lengthscales are those of the large
phases, so it is confident across the pocket. With ``explore_radius`` set (``rho``, the
size of the smallest region the map must not miss, in unit-cube units) each candidate also
gets a coverage score ``prod_j (1 - exp(-|x - x_j|^2 / 2 rho^2))`` over the measured, pending
and already chosen points (the penalisation kernel above with the fixed radius ``rho``):
near 1 in a hole of the design wider than ``rho``, near 0 next to a measurement. A
candidate's score is the larger of its boundary score and ``explore_weight`` times its
coverage, so the holes are filled first (a maximin space-filling design, which finds
every pocket wider than about ``rho``; Johnson, Moore and Ylvisaker, "Minimax and maximin
distance designs", J. Stat. Plan. Inference 1990), and the boundaries, the pockets' among
them once found, are refined as soon as no hole is left that is more uncertain than they
are. ``details["explore_picks"]`` counts the proposals chosen for coverage.

The objective's direction is ignored. Labels are rounded to the nearest integer; a label
below 0 or not below ``n_classes`` is an error naming the experiment.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from planners.active import ActiveLearningOptions, ActiveLearningPlanner
from planners.base import register_planner
from surrogates.phase import PhasePrediction, fit_phase_classifier

logger = logging.getLogger(__name__)

__all__ = ["BoundaryOptions", "BoundaryPlanner", "boundary_scores"]


class BoundaryOptions(ActiveLearningOptions):
    """Options of the ``boundary`` planner.

    Attributes:
        phase_objective: The objective carrying the phase label; may be left out when the
            campaign has exactly one objective.
        n_classes: Number of phases ``K``; default: the largest label seen plus one (at
            least 2), so a phase never seen yet gets no latent function until it appears.
        acquisition: ``"entropy"``, ``"margin"`` or ``"bald"`` (module docstring).
        uncertainty_weight: Exponent of the model-uncertainty factor (0: none).
        penalty_radius: Local-penalisation radius, in classifier lengthscales.
        alpha_epsilon: Dirichlet pseudo-count of the phases a point was not labelled
            with; larger trusts each label less (noisy labels).
        mc_samples: Monte-Carlo draws of the latent functions per prediction.
        fit_iterations: Adam steps of the classifier fit.
        explore_radius: Coverage radius ``rho`` (unit-cube units; module docstring):
            the size of the smallest phase region the map should find; ``None``: no
            coverage term (boundary refinement only).
        explore_weight: Weight of the coverage score against the boundary score.
        label_gaps: With ``explore_radius``, also score the gaps between differently
            labelled neighbours (:func:`_label_gaps`), so that a pocket found is outlined
            by bisection (off by default; see docs/benchmarks.md).
    """

    phase_objective: str | None = None
    n_classes: int | None = Field(default=None, ge=2, le=1000)
    acquisition: Literal["entropy", "margin", "bald"] = "entropy"
    uncertainty_weight: float = Field(default=1.0, ge=0.0, le=10.0)
    penalty_radius: float = Field(default=1.0, ge=0.0, le=100.0)
    alpha_epsilon: float = Field(default=0.01, gt=0.0, le=1.0)
    mc_samples: int = Field(default=128, ge=8, le=16_384)
    fit_iterations: int = Field(default=60, ge=1, le=10_000)
    explore_radius: float | None = Field(default=None, gt=0.0, le=1.0)
    explore_weight: float = Field(default=1.0, gt=0.0, le=100.0)
    label_gaps: bool = False


def boundary_scores(
    prediction: PhasePrediction, acquisition: str, uncertainty_weight: float
) -> Tensor:
    """Score candidates by how uncertain their phase is (larger: measure sooner).

    Args:
        prediction: The classifier's prediction at ``n`` candidates.
        acquisition: ``"entropy"``, ``"margin"`` or ``"bald"``.
        uncertainty_weight: Exponent of the mean relative latent standard deviation.

    Returns:
        ``n`` non-negative scores.
    """
    p = prediction.probabilities.clamp_min(1e-12)
    k = p.shape[-1]
    entropy = -(p * p.log()).sum(dim=-1) / math.log(k)
    if acquisition == "entropy":
        base = entropy
    elif acquisition == "margin":
        top2 = p.topk(2, dim=-1).values
        base = 1.0 - (top2[:, 0] - top2[:, 1])
    elif acquisition == "bald":
        s = prediction.samples.clamp_min(1e-12)
        expected = -(s * s.log()).sum(dim=-1).mean(dim=0) / math.log(k)
        base = (entropy - expected).clamp_min(0.0)
    else:
        raise ValueError(f"unknown acquisition {acquisition!r}")
    if uncertainty_weight > 0:
        base = base * prediction.latent_std.mean(dim=-1).clamp(0.0, 1.0) ** uncertainty_weight
    return base


@register_planner("boundary")
class BoundaryPlanner(ActiveLearningPlanner):
    """Propose where the predicted phase is least certain (see the module docstring).

    ``Decision.details`` adds, after the initial design: ``acquisition``,
    ``phase_objective``, ``n_classes``, ``class_counts`` (labels seen per phase),
    ``hyperparameters`` (:meth:`surrogates.phase.PhaseClassifier.summary`),
    ``n_model``, ``n_candidates``, ``penalty_radii`` (unit-cube units, per input column),
    ``probabilities`` and ``predicted_phase`` of each proposal, ``mean_score`` (over the
    candidates, before penalisation), ``seconds_fit`` and ``seconds_acq``.
    ``candidate_scores`` are the proposals' scores after penalisation, in the order chosen.
    """

    version = "2"
    Options = BoundaryOptions
    options: BoundaryOptions
    model_phase = "boundary"

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create the planner; see :class:`BoundaryOptions`.

        Raises:
            InvalidCampaignError: If an option is unknown or invalid (also when
                ``phase_objective`` names no objective, or is needed and missing).
        """
        super().__init__(space, objectives, seed=seed, **options)
        names = [o.name for o in self.objectives]
        chosen = self.options.phase_objective
        if chosen is None:
            if len(names) != 1:
                raise _option_error(
                    "phase_objective", f"required with several objectives ({', '.join(names)})"
                )
            chosen = names[0]
        elif chosen not in names:
            raise _option_error("phase_objective", f"no objective {chosen!r} ({', '.join(names)})")
        self.phase_objective = chosen

    def labelled(self) -> tuple[list[Mapping[str, ParamValue]], list[int]]:
        """Points and integer labels of the observations that carry a phase.

        Raises:
            PlannerError: If a label is negative or not below ``n_classes``.
        """
        points: list[Mapping[str, ParamValue]] = []
        labels: list[int] = []
        top = self.options.n_classes
        for obs in self._observations:
            value = obs.objectives.get(self.phase_objective)
            if not obs.feasible or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            label = round(value)
            if label < 0 or (top is not None and label >= top):
                which = f"experiment {obs.experiment_id}" if obs.experiment_id else "observation"
                bound = f"0..{top - 1}" if top is not None else ">= 0"
                raise PlannerError(
                    f"{self.name}: {which} has phase {value!r} ({self.phase_objective}), "
                    f"outside {bound}"
                )
            points.append(obs.parameters)
            labels.append(label)
        return points, labels

    def n_usable(self) -> int:
        """Observations with a phase label."""
        return len(self.labelled()[1])

    def plan(
        self,
        n: int,
        pending: Sequence[Mapping[str, ParamValue]],
        seed: int,
        details: dict[str, Any],
    ) -> tuple[list[dict[str, ParamValue]], list[float]]:
        """Fit the classifier, score the candidates, pick ``n`` with local penalisation."""
        points, labels = self.labelled()
        k = self.options.n_classes or max(2, max(labels) + 1)
        x = self.encoder.encode(points)
        y = torch.tensor(labels, dtype=torch.long)
        t_fit = time.perf_counter()
        try:
            model = fit_phase_classifier(
                x,
                y,
                k,
                alpha_epsilon=self.options.alpha_epsilon,
                iterations=self.options.fit_iterations,
            )
        except Exception as exc:  # GPyTorch raises a variety of errors
            raise PlannerError(f"{self.name}: fitting the phase classifier failed: {exc}") from exc
        details.update(
            acquisition=self.options.acquisition,
            phase_objective=self.phase_objective,
            n_classes=k,
            class_counts=torch.bincount(y, minlength=k).tolist(),
            hyperparameters=model.summary(),
            n_model=len(labels),
            seconds_fit=time.perf_counter() - t_fit,
        )
        t_acq = time.perf_counter()
        cand_points, cand = self.unit_candidates(self.options.n_candidates, seed)
        prediction = model.predict(cand, num_samples=self.options.mc_samples, seed=seed % (2**63))
        base = boundary_scores(
            prediction, self.options.acquisition, self.options.uncertainty_weight
        )
        radii = (model.lengthscales().mean(dim=0) * self.options.penalty_radius).clamp_min(1e-6)
        score = base.clone()
        centres = [self.encoder.encode(pending)] if pending else []
        for c in centres:
            score = score * _penalty(cand, c, radii)
        rho = self.options.explore_radius
        cover: Tensor | None = None
        if rho is not None:
            rho_t = torch.full_like(radii, rho)
            cover = self.options.explore_weight * _penalty(cand, torch.cat([x, *centres]), rho_t)
            if self.options.label_gaps:
                cover = torch.maximum(cover, _label_gaps(cand, x, y, rho))
            for c in centres:
                cover = cover * _penalty(cand, c, rho_t)
        picked: list[int] = []
        scores: list[float] = []
        explored = 0
        for _ in range(n):
            total = score if cover is None else torch.maximum(score, cover)
            i = int(total.argmax())
            picked.append(i)
            scores.append(float(total[i]))
            if cover is not None:
                explored += bool(cover[i] > score[i])
                cover = cover * _penalty(cand, cand[i : i + 1], rho_t)
                cover[i] = -1.0
            score = score * _penalty(cand, cand[i : i + 1], radii)
            score[i] = -1.0  # never the same candidate twice (even with penalty_radius 0)
        details.update(
            n_candidates=len(cand_points),
            penalty_radii=radii.tolist(),
            probabilities=prediction.probabilities[picked].tolist(),
            predicted_phase=prediction.labels[picked].tolist(),
            mean_score=float(base.mean()),
            explore_picks=explored,
            seconds_acq=time.perf_counter() - t_acq,
        )
        return [cand_points[i] for i in picked], scores


def _penalty(x: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """``prod_j (1 - exp(-|x - c_j|^2 / 2 r^2))`` for ``n x d`` points and ``m x d`` centres."""
    z = (x.unsqueeze(1) - centres.unsqueeze(0)) / radii
    return (1.0 - torch.exp(-0.5 * (z**2).sum(dim=-1))).prod(dim=-1)


def _label_gaps(cand: Tensor, x: Tensor, y: Tensor, rho: float) -> Tensor:
    """How wide the unresolved stretch of a label change is at each candidate, in units of
    ``rho``: with ``d1`` the distance to the nearest measured point and ``d2`` to the
    nearest one of another label, ``g = (d1 + d2) / 2`` (half the gap across the change),
    the score is ``g / rho`` where the candidate lies midway (``d2 - d1`` small against
    ``g``) and falls off as ``exp(-2 ((d2 - d1) / g)^2)`` away from the middle: bisecting
    the gaps between differently labelled neighbours, as in LOLA-Voronoi (Crombecq, Gorissen,
    Deschrijver and Dhaene, "A Novel Hybrid Sequential Design Strategy for Global Surrogate
    Modeling of Computer Experiments", SIAM J. Sci. Comput. 2011). ``n`` candidates, ``m``
    labelled points ``x`` (``m x d``) with labels ``y``; returns ``n`` scores."""
    dist = torch.cdist(cand.to(x), x)  # n x m
    d1, nearest = dist.min(dim=1)
    other = y[nearest].unsqueeze(1) != y.unsqueeze(0)  # n x m
    if not bool(other.any()):
        return torch.zeros_like(d1)
    d2 = torch.where(other, dist, torch.full_like(dist, math.inf)).min(dim=1).values
    gap = (0.5 * (d1 + d2)).clamp_min(1e-12)
    score = gap / rho * torch.exp(-2.0 * ((d2 - d1) / gap) ** 2)
    return torch.where(torch.isfinite(d2), score, torch.zeros_like(score))


def _option_error(key: str, message: str) -> InvalidCampaignError:
    """An invalid-option error naming ``planner.options.<key>``."""
    return InvalidCampaignError(None, [(f"planner.options.{key}", message)])
