"""Tests of surrogates.gp.fit_shared_hyperparameter_gp: one fit, every output."""

from __future__ import annotations

import pytest
import torch

from surrogates.gp import fit_shared_hyperparameter_gp, hyperparameters_of


def test_outputs_share_the_fitted_hyperparameters_and_interpolate_the_data() -> None:
    torch.manual_seed(0)
    x = torch.linspace(0.0, 10.0, 12, dtype=torch.double)[:, None]
    base = torch.sin(x)
    y = torch.cat([base, 3.0 * base + 1.0, -base], dim=-1)  # outputs that change together
    model = fit_shared_hyperparameter_gp(x, y, device="cpu")
    hyper = hyperparameters_of(model)
    assert len(set(hyper["lengthscales"])) == 1
    assert len(set(hyper["noise"])) == 1
    assert hyper["outcome_mean"] == pytest.approx(y.mean(dim=0).tolist())
    with torch.no_grad():
        mean = model.posterior(x).mean
        between = model.posterior(torch.tensor([[2.5], [7.5]], dtype=torch.double)).mean
    assert mean == pytest.approx(y, abs=0.05)
    truth = torch.sin(torch.tensor([2.5, 7.5], dtype=torch.double))
    assert between[:, 0] == pytest.approx(truth, abs=0.1)
    assert between[:, 1] == pytest.approx(3.0 * truth + 1.0, abs=0.3)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="outputs"):
        fit_shared_hyperparameter_gp(torch.zeros(3, 1), torch.zeros(3))
