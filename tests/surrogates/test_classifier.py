"""The GP classifier of experiment success (surrogates/classifier.py)."""

from __future__ import annotations

import pytest
import torch

from surrogates.classifier import fit_feasibility_classifier


def test_the_classifier_separates_a_failing_corner() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, 2, dtype=torch.double, generator=gen)
    fails = (x[:, 0] > 0.6) & (x[:, 1] < 0.4)
    model = fit_feasibility_classifier(x, (~fails).double())
    probe = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.2, 0.2]], dtype=torch.double)
    with torch.no_grad():
        p = model.probability(probe)
        log_p = model.log_probability(probe)
    assert p[0] < 0.3
    assert p[1] > 0.7
    assert p[2] > 0.7
    assert torch.allclose(log_p.exp(), p)
    # batches of shape b x q x d give b x q probabilities
    assert model.probability(probe.reshape(3, 1, 2)).shape == (3, 1)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="n labels"):
        fit_feasibility_classifier(torch.rand(4, 2), torch.ones(3))
