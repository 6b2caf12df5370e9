"""Tests of the stacked training of the residual-MLP ensemble (surrogates/mlp.py)."""

from __future__ import annotations

import torch

from surrogates.mlp import StackedResidualMLP


def test_members_are_independent() -> None:
    torch.manual_seed(0)
    net = StackedResidualMLP(3, 5, [8, 4])
    x = torch.randn(3, 16, 5)
    out = net(x)
    assert out.shape == (3, 16)
    out[1].sum().backward()  # member 1's loss moves member 1's weights only
    for p in net.parameters():
        assert p.grad is not None
        if p.dim() >= 2 and p.shape[0] == 3:  # stacked weights and biases: m x ...
            assert torch.count_nonzero(p.grad[0]) == 0
            assert torch.count_nonzero(p.grad[2]) == 0
            assert torch.count_nonzero(p.grad[1]) > 0


def test_a_member_sees_only_its_own_rows() -> None:
    torch.manual_seed(0)
    net = StackedResidualMLP(2, 4, [6]).eval()
    x = torch.randn(2, 10, 4)
    before = net(x)
    x2 = x.clone()
    x2[1] = torch.randn(10, 4)  # change member 1's inputs only
    after = net(x2)
    assert torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])
