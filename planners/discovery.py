"""The ``discovery`` planner: generate candidate materials, screen them, propose the best.

A GNoME-style loop (Merchant et al. 2023) inside one planner. The campaign's search space
has one string parameter (default ``material``) whose values are material specs
(:mod:`models.materials`); the planner

1. generates candidates inside the chemical system ``elements`` with its proposers
   (:mod:`planners.proposers`: charge-balanced compositions decorated into prototypes,
   data-mined substitutions into prototype compounds, and, once enough experiments are
   told, samples of a conditional composition VAE (:mod:`planners.vae`) drawn toward the
   best value measured so far), and removes duplicates and known structures
   (``StructureMatcher``);
2. after ``initial_points`` picks among them (by default those whose ions most probably
   replace the prototype's own, by pymatgen's data-mined substitution probabilities: the
   prior knowledge of known compounds; or at random), fits a GP (:mod:`surrogates.gp`) to
   descriptors of the measured materials (:class:`CompositionScreen`) and scores every
   candidate not measured or pending with an acquisition function: q-Log Noisy Expected
   Improvement (Ament et al., NeurIPS 2023) or the upper confidence bound (Srinivas et al.,
   ICML 2010), choosing a batch greedily with the chosen ones pending, as BoTorch's
   ``optimize_acqf_discrete`` does; or (the default, ``"pstable"``) the probability that
   a candidate beats ``threshold`` (the probability of improvement, Kushner 1964, in its
   log form), the chance it is a hit, taking the ``n`` most likely;
3. records with every proposal where it came from: ``Proposal.origin`` is the proposer
   and ``Decision.details["proposals"]`` gives each one's proposer, parent and formula.

The objective is the campaign's one objective (e.g. ``e_above_hull_ev_per_atom``,
minimised); experiments that failed are not modelled but never proposed again.

References:
    Merchant, A. et al. (2023). Scaling deep learning for materials discovery. Nature 624.
    Ament, S. et al. (2023). Unexpected Improvements to Expected Improvement for Bayesian
    Optimization. NeurIPS 36.
    Srinivas, N. et al. (2010). Gaussian Process Optimization in the Bandit Setting. ICML.
    Kushner, H. J. (1964). A New Method of Locating the Maximum Point of an Arbitrary
    Multipeak Curve in the Presence of Noise. J. Basic Eng. 86, 97-106.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from botorch.acquisition import (
    AcquisitionFunction,
    qUpperConfidenceBound,
)
from botorch.acquisition.analytic import LogProbabilityOfImprovement
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.models.model import Model
from botorch.sampling.get_sampler import get_sampler
from pydantic import Field, field_validator
from pymatgen.core import Composition, Element
from torch import Tensor

from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError, PlannerError, RegistryError
from models.materials import build_structure, parse_material
from models.objectives import Objective
from models.params import ParamValue, SearchSpace, StringParameter
from models.records import Decision, Proposal
from planners.base import Planner, PlannerOptions, register_planner
from planners.bo_surrogate import surrogate_option_problem
from planners.proposers import (
    Candidate,
    charge_balanced,
    charge_balanced_compositions,
    decorate,
    deduplicate,
    substitution_log_probability,
    substitutions,
)
from planners.screen import CompositionScreen
from planners.vae import nearest_formula, train_vae
from surrogates.base import Surrogate, make_surrogate

logger = logging.getLogger(__name__)

__all__ = ["DiscoveryOptions", "DiscoveryPlanner"]

Proposer = Literal["charge_balanced", "substitution", "vae"]
PROPOSERS: tuple[Proposer, ...] = ("charge_balanced", "substitution", "vae")


class DiscoveryOptions(PlannerOptions):
    """Options of the ``discovery`` planner (``[planner.options]``).

    Attributes:
        elements: The chemical system, 2 to 4 element symbols.
        parameter: The string parameter whose values are material specs.
        proposers: Which proposers generate candidates.
        max_atoms: Largest number of atoms in a generated reduced formula.
        min_elements: Fewest distinct elements of a generated composition (3 keeps only
            ternaries and beyond: the binaries are usually known).
        max_sites: Largest prototype cell used.
        substitution_threshold: Smallest data-mined substitution probability kept.
        max_candidates: Candidates kept after deduplication (in proposer order).
        known: Material specs already known (prior work); equivalent candidates are dropped.
        initial_points: Picks before the surrogate screens.
        initial_design: How those are chosen: ``"prior"``, the candidates whose ions most
            probably replace their prototype's (data-mined substitution probability, a
            prior from known compounds), or ``"random"``.
        acquisition: ``"pstable"`` (probability that the objective beats ``threshold``:
            the chance a candidate is a hit), ``"qlognei"``, ``"ucb"`` or ``"random"`` (no
            screening: the baseline).
        threshold: The objective value a hit must beat, in objective units (e.g. 0.025
            eV/atom above hull); default: the best value measured so far.
        beta: UCB's exploration weight.
        vae_samples: Compositions drawn from the VAE per ask.
        vae_max_atoms: Largest reduced formula a VAE sample is snapped to; above
            ``max_atoms`` it reaches compositions the enumeration leaves out (candidates
            equivalent to enumerated ones are dropped).
        vae_min_train: Compositions needed (told plus prior) before the VAE is trained.
        vae_epochs: VAE training steps.
        prior_data: CSV file with a ``formula`` column and a column named like the
            objective: prior compositions the VAE also learns from.
        surrogate: The model that screens the candidates: ``None`` (default) for the
            built-in GP on composition and prototype features (:mod:`planners.screen`),
            or a registered surrogate of :mod:`surrogates.base` (``"cgcnn"``,
            ``"mlp_ensemble"``, ``"rf"``, ...). A surrogate that featurises materials
            itself (``cgcnn``, or any with a ``descriptor`` option) is given the
            candidates' structures; the others the built-in screen's feature rows.
        surrogate_options: Options of that surrogate (``surrogate.options`` of
            :func:`surrogates.base.make_surrogate`).
    """

    elements: list[str] = Field(min_length=2, max_length=4)
    parameter: str = "material"
    proposers: list[Proposer] = Field(default_factory=lambda: list(PROPOSERS), min_length=1)
    max_atoms: int = Field(default=8, ge=2, le=20)
    min_elements: int = Field(default=2, ge=1, le=4)
    max_sites: int = Field(default=24, ge=1, le=24)
    substitution_threshold: float = Field(default=1e-3, gt=0.0, le=1.0)
    max_candidates: int = Field(default=2000, ge=1, le=100_000)
    known: list[str] = Field(default_factory=list)
    initial_points: int = Field(default=4, ge=1, le=10_000)
    initial_design: Literal["prior", "random"] = "prior"
    acquisition: Literal["pstable", "qlognei", "ucb", "random"] = "pstable"
    threshold: float | None = None
    beta: float = Field(default=2.0, gt=0.0, le=100.0)
    vae_samples: int = Field(default=64, ge=1, le=10_000)
    vae_max_atoms: int = Field(default=12, ge=2, le=20)
    vae_min_train: int = Field(default=6, ge=2, le=10_000)
    vae_epochs: int = Field(default=300, ge=1, le=100_000)
    prior_data: str | None = None
    surrogate: str | None = None
    surrogate_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not Element.is_valid_symbol(e)]
        if bad:
            raise ValueError(f"not element symbols: {bad}")
        if len(set(v)) != len(v):
            raise ValueError("an element is given twice")
        return v

    @field_validator("known")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_material(text)
        return v


@register_planner("discovery")
class DiscoveryPlanner(Planner):
    """Generate, screen and propose materials (see the module docstring).

    ``Decision.details`` holds ``phase`` (``"initial_design"``, ``"screening"`` or
    ``"random"``), ``n_candidates`` (per proposer), ``n_available``, ``proposals`` (one
    ``{"material", "proposer", "parent", "formula"}`` per proposal), ``decision_seed``,
    ``repeat`` and, when screening, ``acquisition``, ``predicted_utility_bilog`` and
    ``predicted_std_bilog`` of the proposals (the GP's mean and standard deviation of
    ``bilog(utility)``, see :func:`_bilog`), ``n_train`` and ``vae_loss`` (``None``
    without a VAE). ``candidate_scores`` are the acquisition values (in a ``"prior"``
    initial design: the log10 substitution probabilities).
    """

    version = "2"
    Options: ClassVar[type[PlannerOptions]] = DiscoveryOptions

    def __init__(
        self, space: SearchSpace, objectives: Sequence[Objective], *, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(space, objectives, seed=seed, **options)
        opts = self.options
        assert isinstance(opts, DiscoveryOptions)
        self.opts = opts
        if opts.parameter not in space.names or not isinstance(
            space[opts.parameter], StringParameter
        ):
            raise InvalidCampaignError(
                None,
                [("planner.options.parameter", f"no string parameter {opts.parameter!r}")],
            )
        if len(space) != 1:
            raise PlannerError("discovery: the search space must hold only the material")
        mains = [o for o in self.objectives if not o.is_constraint]
        if len(mains) != 1:
            raise PlannerError("discovery: the campaign needs exactly one objective")
        self.objective = mains[0]
        self.screen = CompositionScreen(opts.elements)
        if opts.surrogate is not None:
            self._surrogate(0)  # an unknown name or a bad option fails here, not mid-campaign
        self._base: list[Candidate] | None = None
        self._prior = _read_prior(opts.prior_data, self.objective.name, opts.elements)

    def base_candidates(self) -> list[Candidate]:
        """The candidates of the enumerating proposers (computed once, deterministic)."""
        if self._base is None:
            o = self.opts
            found: list[Candidate] = []
            if "substitution" in o.proposers:
                found += [
                    c
                    for c in substitutions(
                        o.elements, threshold=o.substitution_threshold, max_sites=o.max_sites
                    )
                    if len(Composition(c.formula)) >= o.min_elements
                ]
            if "charge_balanced" in o.proposers:
                comps = charge_balanced_compositions(
                    o.elements, max_atoms=o.max_atoms, min_elements=o.min_elements
                )
                found += decorate(comps, "charge_balanced", o.max_sites)
            known = [build_structure(k) for k in o.known]
            self._base = deduplicate(found, known)[: o.max_candidates]
        return self._base

    def _vae_candidates(self, seed: int, base: Sequence[Candidate]) -> tuple[list[Candidate], Any]:
        o = self.opts
        rows = [(self._fractions(str(ob.parameters[o.parameter])), ob) for ob in self._feasible()]
        fracs = [f for f, _ in rows] + [f for f, _ in self._prior]
        vals = [float(ob.objectives[self.objective.name]) for _, ob in rows] + [
            v for _, v in self._prior
        ]
        if "vae" not in o.proposers or len(fracs) < o.vae_min_train:
            return [], None
        trained = train_vae(np.array(fracs), vals, seed=seed % 2**31, epochs=o.vae_epochs)
        utils = [self.objective.utility(v) for v in vals]
        target = vals[int(np.argmax(utils))]
        samples = trained.sample(target, o.vae_samples, seed=seed % 2**31)
        comps: dict[str, Composition] = {}
        for row in samples:
            counts = nearest_formula(row, o.vae_max_atoms)
            comp = Composition({e: c for e, c in zip(o.elements, counts, strict=True) if c})
            if len(comp) >= o.min_elements and charge_balanced(comp) is not None:
                comps.setdefault(comp.reduced_formula, comp)
        have = {c.material for c in base}
        made = [c for c in decorate(comps.values(), "vae", o.max_sites) if c.material not in have]
        formulas = {c.formula for c in made}
        same = [build_structure(c.material) for c in base if c.formula in formulas]
        made = deduplicate(made, known=same)  # new structures only, not relabelled copies
        parent = f"vae(target={target:.4g})"
        return [Candidate(c.material, c.formula, "vae", f"{parent} {c.parent}") for c in made], (
            trained.final_loss
        )

    def _fractions(self, material: str) -> list[float]:
        comp = parse_material(material).composition
        return [comp.get_atomic_fraction(Element(e)) for e in self.opts.elements]

    def _feasible(self) -> list[Any]:
        name = self.objective.name
        return [ob for ob in self._observations if ob.feasible and name in ob.objectives]

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` materials not measured or pending (see the class docstring).

        Raises:
            PlannerError: If fewer than ``n`` candidates are left.
        """
        started = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        o = self.opts
        base = self.base_candidates()
        vae, vae_loss = self._vae_candidates(seed, base)
        cands = base + vae
        used = {str(p[o.parameter]) for p in pending} | {
            str(ob.parameters[o.parameter]) for ob in self._observations
        }
        avail = [c for c in cands if c.material not in used]
        if len(avail) < n:
            raise PlannerError(
                f"discovery: only {len(avail)} candidate materials left, {n} wanted "
                "(raise max_atoms or max_sites, or add proposers)"
            )
        feasible = self._feasible()
        details: dict[str, Any] = {
            "decision_seed": seed,
            "repeat": repeat,
            "n_candidates": {
                p: sum(p in c.proposer.split("+") for c in cands) for p in o.proposers
            },
            "n_available": len(avail),
            "vae_loss": vae_loss,
        }
        scores: list[float] = []
        rng = np.random.default_rng(seed)
        if o.acquisition == "random" or len(feasible) + len(pending) < o.initial_points:
            if o.acquisition != "random" and o.initial_design == "prior":
                prior = [substitution_log_probability(c.material) for c in avail]
                ties = rng.permutation(len(avail))
                picks = sorted(range(len(avail)), key=lambda i: (-prior[i], ties[i]))[:n]
                scores = [prior[i] for i in picks]
            else:
                picks = [int(i) for i in rng.choice(len(avail), size=n, replace=False)]
            details["phase"] = "random" if o.acquisition == "random" else "initial_design"
        else:
            picks, scores, extra = self._screen(avail, feasible, pending, n, seed)
            details.update(extra)
            details["phase"] = "screening"
        chosen = [avail[i] for i in picks]
        details["proposals"] = [
            {
                "material": c.material,
                "proposer": c.proposer,
                "parent": c.parent,
                "formula": c.formula,
            }
            for c in chosen
        ]
        proposals = [
            Proposal(
                parameters={o.parameter: c.material},
                score=scores[k] if scores else None,
                origin=c.proposer,
            )
            for k, c in enumerate(chosen)
        ]
        return self.decision(proposals, len(pending), started, details, scores)

    def _screen(
        self,
        avail: Sequence[Candidate],
        feasible: Sequence[Any],
        pending: Sequence[Mapping[str, ParamValue]],
        n: int,
        seed: int,
    ) -> tuple[list[int], list[float], dict[str, Any]]:
        o = self.opts
        train = [str(ob.parameters[o.parameter]) for ob in feasible]
        name = self.objective.name
        u = [self.objective.utility(float(ob.objectives[name])) for ob in feasible]
        y = [_bilog(v) for v in u]
        yvar = None
        if all(name in ob.uncertainties for ob in feasible):  # known noise, bilog-scaled
            yvar = [
                max((float(ob.uncertainties[name]) / (1.0 + abs(v))) ** 2, 1e-8)
                for ob, v in zip(feasible, u, strict=True)
            ]
        pend = [str(p[o.parameter]) for p in pending]
        model: Model
        if o.surrogate is None:
            model = self.screen.fit(train, y, [c.material for c in avail], yvar)
            rows = self.screen.features
        else:
            surrogate = self._surrogate(seed)
            own = surrogate.descriptor is not None or (
                type(surrogate).featurize is not Surrogate.featurize
            )

            def rows(materials: Sequence[str]) -> Tensor:
                given: Any = (
                    [build_structure(m) for m in materials]
                    if own
                    else self.screen.features(materials).numpy()
                )
                return torch.as_tensor(surrogate.featurize(given), dtype=torch.double)

            surrogate.fit(rows(train).numpy(), y)
            model = surrogate.as_botorch_model()
        x_all = rows([c.material for c in avail])
        x_pend = rows(pend) if pend else None
        x_train = rows(train)
        best_f = max(y) if o.threshold is None else _bilog(self.objective.utility(o.threshold))
        picks: list[int] = []
        scores: list[float] = []
        for _ in range(n):
            chosen = x_all[picks] if picks else None
            extra = [t for t in (x_pend, chosen) if t is not None]
            x_pending = torch.cat(extra) if extra else None
            acq: AcquisitionFunction
            probe: Any = model.posterior(x_all[:1])  # the posterior's type picks the sampler
            sampler = get_sampler(probe, sample_shape=torch.Size([128]), seed=seed % 2**31)
            if o.acquisition == "pstable":
                acq = LogProbabilityOfImprovement(model, best_f=best_f)
            elif o.acquisition == "ucb":
                acq = qUpperConfidenceBound(model, beta=o.beta, sampler=sampler)
                acq.set_X_pending(x_pending)
            else:
                acq = qLogNoisyExpectedImprovement(
                    model,
                    X_baseline=x_train,
                    sampler=sampler,
                    X_pending=x_pending,
                    prune_baseline=True,
                )
            with torch.no_grad():
                vals = torch.cat([acq(chunk.unsqueeze(1)) for chunk in x_all.split(256)]).double()
            if picks:
                vals[picks] = -torch.inf
            best = int(torch.argmax(vals))
            picks.append(best)
            scores.append(float(vals[best]))
        with torch.no_grad():
            post: Any = model.posterior(x_all[picks])
        info: dict[str, Any] = {
            "surrogate": o.surrogate or "screen-gp",
            "acquisition": o.acquisition,
            "n_train": len(train),
            "predicted_utility_bilog": [float(v) for v in post.mean.squeeze(-1).tolist()],
            "predicted_std_bilog": [
                float(v) for v in post.variance.clamp_min(0).sqrt().squeeze(-1)
            ],
        }
        return picks, scores, info

    def _surrogate(self, seed: int) -> Surrogate:
        """A new, unfitted surrogate of the ``surrogate`` option."""
        o = self.opts
        assert o.surrogate is not None
        opts = {"seed": seed % 2**31, **o.surrogate_options}
        try:
            return make_surrogate(o.surrogate, **opts)
        except RegistryError as exc:
            raise InvalidCampaignError(None, [("planner.options.surrogate", str(exc))]) from exc
        except InvalidCampaignError as exc:
            problems = [surrogate_option_problem(p) for p in exc.problems]
            raise InvalidCampaignError(None, problems) from exc


def _bilog(u: float) -> float:
    """``sign(u) log(1 + |u|)``: keeps far-off failures (eV above hull) from dominating the
    GP while preserving the order (the Bilog transform of BoTorch, Eriksson & Poloczek,
    "Scalable Constrained Bayesian Optimization", AISTATS 2021)."""
    return math.copysign(math.log1p(abs(u)), u)


def _read_prior(
    path: str | None, column: str, elements: Sequence[str]
) -> list[tuple[list[float], float]]:
    """Prior ``(fractions, value)`` pairs from a CSV file (``formula`` + ``column``)."""
    if path is None:
        return []
    key = "planner.options.prior_data"
    table = read_csv_table(path, key)
    out: list[tuple[list[float], float]] = []
    for line, row in zip(table.lines, table.rows, strict=True):
        try:
            comp = Composition(row["formula"])
            value = float(row[column])
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidCampaignError(
                path, [(key, f"row {line}: needs 'formula' and {column!r}: {exc}")]
            ) from exc
        if {e.symbol for e in comp.elements} - set(elements):
            continue
        out.append(([comp.get_atomic_fraction(Element(e)) for e in elements], value))
    return out
