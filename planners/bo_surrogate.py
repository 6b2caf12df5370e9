"""Bayesian optimisation with any registered surrogate in place of the default GP.

The ``bo`` planner family (``bo``, ``qlognei``) fits, by default, a GP to the encoded
parameters (:mod:`surrogates.gp`). With ``surrogate = "mlp_ensemble"`` (or ``"rf"``,
``"gbr"``, ``"svr"``, ``"gp"``, any name of :func:`surrogates.base.surrogate_names`) in
``[planner.options]`` the objective model is that surrogate instead, fitted to the encoded
parameter rows (the feature rows the surrogate sees) and their observed objective; the
acquisition function (qLogNEI) is BoTorch's, evaluated on the surrogate's
``as_botorch_model()``. An ensemble's posterior is BoTorch's ``EnsemblePosterior``: the
Monte-Carlo samples of the acquisition are draws of ensemble members (BoTorch's
``get_sampler`` picks the sampler that suits the posterior; Lakshminarayanan et al., "Simple
and scalable predictive uncertainty estimation using deep ensembles", NeurIPS 2017, for
deep ensembles as BO surrogates).

How the acquisition is optimised depends on the surrogate:

* differentiable in its inputs (``gp``, ``mlp_ensemble``): gradient-based, as with the
  default GP (``optimize_acqf`` with restarts);
* gradient-free (tree ensembles ``rf``/``gbr``, bagged ``svr``: piecewise-constant or
  computed outside PyTorch): a discrete candidate set of ``surrogate_candidates`` scrambled
  Sobol points of the space (polytope samples under linear constraints) is scored and the
  best ``q`` are taken, greedily given the pending points (``optimize_acqf_discrete``), as
  in SMAC's random-forest BO (Hutter et al., "Sequential model-based optimization for
  general algorithm configuration", LION 2011) which also scores sampled candidates.

A ``pool`` of candidate rows or a small enumerated space is scored directly in either case.
One objective without outcome constraints is supported; the success classifier of failed
experiments and the imputation of failures work as with the GP.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from botorch.models.model import Model
from botorch.sampling import MCSampler, SobolQMCNormalSampler
from botorch.sampling.get_sampler import get_sampler
from pydantic import Field
from torch import Tensor

from models.errors import InvalidCampaignError, Problem, RegistryError
from planners.base import PlannerOptions
from planners.constraints import polytope_unit_samples
from planners.encoding import SpaceEncoder
from planners.outcomes import OutcomeLayout
from planners.random import sobol_unit
from surrogates.base import EnsembleSurrogate, Surrogate, make_surrogate

logger = logging.getLogger(__name__)

__all__ = [
    "SurrogateBOOptions",
    "check_surrogate_layout",
    "differentiable",
    "fit_surrogate",
    "make_planner_surrogate",
    "mc_sampler",
    "sobol_choices",
    "surrogate_summary",
]

OPTION = "planner.options.surrogate"


class SurrogateBOOptions(PlannerOptions):
    """The surrogate options of the Bayesian optimisation planners.

    Attributes:
        surrogate: Registered surrogate that models the objective instead of the default
            GP (``None``: the GP of :mod:`surrogates.gp`).
        surrogate_options: Its options (``surrogate.options`` of
            :func:`surrogates.base.make_surrogate`; ``seed`` defaults to the decision seed).
        surrogate_candidates: Sobol candidates scored when the surrogate has no input
            gradients (tree ensembles, SVR).
    """

    surrogate: str | None = None
    surrogate_options: dict[str, Any] = Field(default_factory=dict)
    surrogate_candidates: int = Field(default=2048, ge=16, le=1_000_000)


def surrogate_option_problem(problem: Problem) -> Problem:
    """A surrogate's own problem (``surrogate.options.<key>``) as the campaign file's key
    (``planner.options.surrogate_options.<key>``); other problems are kept as they are."""
    if problem.path[:2] == ("surrogate", "options"):
        return Problem(
            ("planner", "options", "surrogate_options", *problem.path[2:]), problem.message
        )
    return problem


def make_planner_surrogate(options: SurrogateBOOptions, seed: int) -> Surrogate:
    """A new, unfitted surrogate of the ``surrogate`` option.

    Raises:
        InvalidCampaignError: If the name is unknown (``planner.options.surrogate``) or an
            option is invalid (``planner.options.surrogate_options.<key>``), or the surrogate
            needs materials rather than parameter rows.
    """
    assert options.surrogate is not None
    opts = {"seed": seed % 2**31, **options.surrogate_options}
    try:
        surrogate = make_surrogate(options.surrogate, **opts)
    except RegistryError as exc:
        raise InvalidCampaignError(None, [(OPTION, str(exc))]) from exc
    except InvalidCampaignError as exc:
        problems = [surrogate_option_problem(p) for p in exc.problems]
        raise InvalidCampaignError(None, problems) from exc
    if surrogate.descriptor is not None or type(surrogate).featurize is not Surrogate.featurize:
        raise InvalidCampaignError(
            None,
            [
                (
                    OPTION,
                    f"surrogate {options.surrogate!r} models materials (a descriptor or "
                    "structure ids), but the 'bo' planners fit it to the encoded parameters; "
                    "use the 'discovery' planner for materials",
                )
            ],
        )
    return surrogate


def check_surrogate_layout(
    planner: str, options: SurrogateBOOptions, layout: OutcomeLayout
) -> None:
    """Check at construction that the surrogate option suits the campaign.

    Raises:
        InvalidCampaignError: If the campaign has several objectives or outcome constraints
            (``planner.options.surrogate``), or the surrogate option is invalid.
    """
    if options.surrogate is None:
        return
    if len(layout.objectives) != 1:
        raise InvalidCampaignError(
            None,
            [
                (
                    OPTION,
                    f"{planner} with surrogate {options.surrogate!r} supports exactly one "
                    f"objective and no outcome constraints, got {len(layout.objectives)} "
                    "[[objectives]] entries; remove the surrogate option to use the GP",
                )
            ],
        )
    make_planner_surrogate(options, 0)  # an unknown name or a bad option fails here


def fit_surrogate(
    options: SurrogateBOOptions, x: Tensor, y: Tensor, seed: int, device: torch.device
) -> tuple[Model, Surrogate]:
    """Fit the surrogate to ``n x d`` encoded rows and ``n x 1`` signed outcomes.

    Returns:
        The surrogate's BoTorch model (double precision on ``device``) and the surrogate.
    """
    surrogate = make_planner_surrogate(options, seed)
    surrogate.fit(x.detach().cpu().double().numpy(), y[:, 0].detach().cpu().double().numpy())
    return surrogate.as_botorch_model().to(device=device), surrogate


def surrogate_summary(surrogate: Surrogate) -> dict[str, Any]:
    """The decision record's description of a fitted surrogate (JSON-ready)."""
    out: dict[str, Any] = {"surrogate": surrogate.name}
    if isinstance(surrogate, EnsembleSurrogate):
        out["calibration_scale"] = float(surrogate.scale)
        out["calibration_floor"] = float(surrogate.floor)
    return out


def differentiable(model: Model, d: int, device: torch.device) -> bool:
    """Whether the model's posterior mean has gradients with respect to its ``d`` inputs."""
    x = torch.rand(2, 1, d, dtype=torch.double, device=device, requires_grad=True)
    mean = model.posterior(x).mean  # type: ignore[attr-defined]
    if not mean.requires_grad:
        return False
    (grad,) = torch.autograd.grad(mean.sum(), x, allow_unused=True)
    return grad is not None and bool(torch.isfinite(grad).all())


def mc_sampler(
    options: SurrogateBOOptions, mc_samples: int, model: Model, x: Tensor, seed: int
) -> MCSampler:
    """The acquisition's sampler: scrambled-Sobol normal samples for the default GP (as
    before), else the one BoTorch's ``get_sampler`` picks for the surrogate's posterior
    (QMC normal samples for a GP, member indices for an ensemble)."""
    shape = torch.Size([mc_samples])
    if options.surrogate is None:
        return SobolQMCNormalSampler(sample_shape=shape, seed=seed % (2**31))
    with torch.no_grad():
        posterior: Any = model.posterior(x[:1])
    sampler = get_sampler(posterior, sample_shape=shape, seed=seed % (2**31))
    assert sampler is not None
    return sampler


def sobol_choices(
    options: SurrogateBOOptions,
    model: Model,
    encoder: SpaceEncoder,
    seed: int,
    device: torch.device,
) -> Tensor | None:
    """The candidate set of a gradient-free surrogate, or ``None`` (optimise by gradients).

    Returns:
        ``surrogate_candidates x d`` encodings of scrambled Sobol points of the space
        (polytope samples when it has linear constraints) when a surrogate is set and its
        posterior mean has no input gradients, else ``None``.
    """
    if options.surrogate is None or differentiable(model, encoder.dim, device):
        return None
    n = options.surrogate_candidates
    unit = sobol_unit(encoder.n_params, seed=seed, skip=0, n=n)
    if encoder.space.constraints:
        unit = polytope_unit_samples(encoder, unit, seed=seed)
    return encoder.encode(encoder.from_unit(unit), torch.double)
