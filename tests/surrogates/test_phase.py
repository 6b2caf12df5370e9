"""Tests of the Dirichlet GP phase classifier (surrogates/phase.py)."""

from __future__ import annotations

import pytest
import torch
from gpytorch.likelihoods import DirichletClassificationLikelihood

from surrogates.phase import dirichlet_targets, fit_phase_classifier


def three_phases(x: torch.Tensor) -> torch.Tensor:
    """A noise-free 3-phase map of the unit square: a disc, and a split of the rest."""
    disc = ((x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.7) ** 2) < 0.2**2
    return torch.where(disc, 2, (x[:, 0] + 0.3 * x[:, 1] > 0.6).long())


def grid(per_axis: int) -> torch.Tensor:
    c = (torch.arange(per_axis, dtype=torch.double) + 0.5) / per_axis
    return torch.cartesian_prod(c, c)


def test_targets_match_gpytorch_dirichlet_likelihood() -> None:
    labels = torch.tensor([0, 2, 1, 1, 0])
    targets, noise = dirichlet_targets(labels, 3, 0.05)
    ref = DirichletClassificationLikelihood(labels, alpha_epsilon=0.05, dtype=torch.double)
    torch.testing.assert_close(targets, ref.transformed_targets)
    torch.testing.assert_close(noise, ref.noise)


def test_unseen_class_still_gets_a_latent_function() -> None:
    targets, noise = dirichlet_targets(torch.tensor([0, 1]), 4, 0.01)
    assert targets.shape == noise.shape == (4, 2)
    assert torch.all(targets[2:] < targets[:2].max())  # classes 2 and 3: prior pseudo-count


def test_learns_a_three_phase_map() -> None:
    x = grid(9)  # 81 labelled points
    model = fit_phase_classifier(x, three_phases(x), 3)
    test = grid(40)
    accuracy = (model.predict_labels(test) == three_phases(test)).double().mean()
    assert accuracy > 0.93, accuracy
    pred = model.predict(test[:200], num_samples=64, seed=3)
    torch.testing.assert_close(pred.probabilities.sum(-1), torch.ones(200, dtype=torch.double))
    assert pred.samples.shape == (64, 200, 3)
    # the Monte-Carlo mode agrees with the mean-latent labels away from boundaries
    agree = (pred.labels == model.predict_labels(test[:200])).double().mean()
    assert agree > 0.95
    summary = model.summary()
    assert len(summary["lengthscales"]) == 3 * 2
    assert len(summary["outputscale"]) == 3


def test_uncertainty_is_low_at_data_and_high_far_away() -> None:
    x = torch.tensor([[0.1, 0.1], [0.15, 0.1], [0.1, 0.2], [0.2, 0.15]], dtype=torch.double)
    labels = torch.tensor([0, 0, 1, 1])
    model = fit_phase_classifier(x, labels, 2)
    pred = model.predict(torch.tensor([[0.1, 0.1], [0.95, 0.95]], dtype=torch.double))
    sd = pred.latent_std.mean(dim=-1)
    assert sd[0] < sd[1] - 0.1
    assert sd[1] > 0.8  # close to the prior far from the data
    assert pred.probabilities[0, 0] > 0.6  # a measured point keeps its label


def test_predictions_are_reproducible() -> None:
    x = grid(5)
    model = fit_phase_classifier(x, three_phases(x), 3)
    test = grid(7)
    a = model.predict(test, seed=1).probabilities
    b = model.predict(test, seed=1).probabilities
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    again = fit_phase_classifier(x, three_phases(x), 3)
    torch.testing.assert_close(again.predict(test, seed=1).probabilities, a)


def test_bad_input_raises() -> None:
    x = grid(3)
    with pytest.raises(ValueError, match="n labels"):
        fit_phase_classifier(x, torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_classes"):
        fit_phase_classifier(x, torch.zeros(9, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        fit_phase_classifier(x, torch.full((9,), 2), 2)
    model = fit_phase_classifier(x, three_phases(x), 3)
    with pytest.raises(ValueError, match="n x d"):
        model.predict(torch.zeros(3, 3, dtype=torch.double))
