"""The multi-task GP of a campaign and its related campaigns (surrogates/multitask.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from surrogates.gp import fit_single_task_gp
from surrogates.multitask import fit_multitask_gp, task_correlations

BOX = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.double)


def truth(x: Tensor) -> Tensor:
    return torch.sin(6 * x[:, :1]) + x[:, 1:2]


def _error(model: torch.nn.Module, xq: Tensor) -> float:
    with torch.no_grad():
        return float((model.posterior(xq).mean - truth(xq)).abs().mean())  # type: ignore[operator]


def test_a_rescaled_shifted_related_task_sharpens_the_target_model() -> None:
    mt, single = [], []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        xr = torch.rand(40, 2, dtype=torch.double, generator=g)
        xt = torch.rand(4, 2, dtype=torch.double, generator=g)
        xq = torch.rand(200, 2, dtype=torch.double, generator=g)
        torch.manual_seed(seed)
        model = fit_multitask_gp(xt, truth(xt), [(xr, 3 * truth(xr) + 10)], bounds=BOX)
        assert model.posterior(xq).mean.shape == (200, 1)  # the target task only
        assert task_correlations(model)[0] > 0.5
        mt.append(_error(model, xq))
        single.append(_error(fit_single_task_gp(xt, truth(xt), bounds=BOX), xq))
    # predictions are in the target's units although the related task is 3x and +10
    assert sum(mt) < 0.8 * sum(single), (mt, single)


def test_shapes_are_checked() -> None:
    x = torch.rand(4, 2, dtype=torch.double)
    with pytest.raises(ValueError, match="related task"):
        fit_multitask_gp(x, truth(x), [])
    with pytest.raises(ValueError, match="task 1"):
        fit_multitask_gp(x, truth(x), [(torch.rand(5, 3, dtype=torch.double), truth(x))])
