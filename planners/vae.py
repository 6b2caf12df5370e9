"""A conditional variational autoencoder of compositions, sampled toward a target property.

Compositions of a chemical system of ``k`` elements are points of the simplex (atomic
fractions). The encoder maps a composition and its (standardised) property to a Gaussian
over a small latent space; the decoder maps a latent point and a property back to a softmax
over the elements. Trained on the campaign's measured compositions (and any prior data), it
is sampled with the property set to a target, so the compositions it returns lean toward
those that had property values near the target (Kingma & Welling 2014; the conditional form
of Sohn et al. 2015; for inverse design of inorganic compositions, e.g. Dan et al. 2020).

Samples are snapped to the nearest small-integer formula (:func:`nearest_formula`) so that
the proposers can check their charge balance and decorate them into prototypes.

References:
    Kingma, D. P. and Welling, M. (2014). Auto-Encoding Variational Bayes. ICLR.
    Sohn, K., Lee, H. and Yan, X. (2015). Learning Structured Output Representation using
    Deep Conditional Generative Models. NeurIPS 28.
    Dan, Y. et al. (2020). Generative adversarial networks (GAN) based efficient sampling
    of chemical composition space for inverse design of inorganic materials. npj Comput.
    Mater. 6, 84.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from surrogates.seeding import seeded
from surrogates.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = ["CompositionVAE", "TrainedVAE", "nearest_formula", "train_vae"]


class CompositionVAE(nn.Module):
    """Encoder ``(x, y) -> q(z)`` and decoder ``(z, y) -> softmax over elements``.

    Args:
        n_elements: Number of elements ``k`` of the system.
        latent_dim: Dimension of the latent space.
        hidden: Width of the hidden layers.
    """

    def __init__(self, n_elements: int, latent_dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.n_elements = n_elements
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Linear(n_elements + 1, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, n_elements)
        )

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (``n x latent_dim`` each) of ``q(z | x, y)``.

        Args:
            x: ``n x k`` atomic fractions.
            y: ``n x 1`` standardised property values.
        """
        h = self.encoder(torch.cat([x, y], dim=-1))
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode_logits(self, z: Tensor, y: Tensor) -> Tensor:
        """Logits (``n x k``) of the element fractions at latent points ``z`` and ``y``."""
        return self.decoder(torch.cat([z, y], dim=-1))

    def loss(self, x: Tensor, y: Tensor, beta: float) -> Tensor:
        """Negative ELBO per composition: cross-entropy reconstruction + ``beta`` KL."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logp = torch.log_softmax(self.decode_logits(z, y), dim=-1)
        recon = -(x * logp).sum(dim=-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)
        return (recon + beta * kl).mean()


@dataclass
class TrainedVAE:
    """A fitted VAE with the standardisation of its property.

    Attributes:
        model: The network (evaluation mode).
        y_mean: Mean of the training property values.
        y_std: Standard deviation of the training property values (1 when constant).
        final_loss: Training loss of the last epoch.
    """

    model: CompositionVAE
    y_mean: float
    y_std: float
    final_loss: float

    def sample(self, target: float, n: int, seed: int) -> np.ndarray:
        """Draw ``n`` compositions conditioned on the property ``target``.

        Args:
            target: Property value, in the training data's units.
            n: Number of samples.
            seed: Seed of the latent draws.

        Returns:
            ``n x k`` atomic fractions (each row non-negative, summing to one).
        """
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.model.latent_dim, generator=gen)
        y = torch.full((n, 1), (target - self.y_mean) / self.y_std)
        with torch.no_grad(), torch_threads(1):
            probs = torch.softmax(self.model.decode_logits(z, y), dim=-1)
        return probs.numpy().astype(np.float64)


def train_vae(
    fractions: np.ndarray,
    values: Sequence[float],
    *,
    seed: int = 0,
    epochs: int = 400,
    latent_dim: int = 2,
    hidden: int = 32,
    lr: float = 5e-3,
    beta: float = 0.05,
) -> TrainedVAE:
    """Fit a conditional composition VAE by full-batch Adam.

    Args:
        fractions: ``n x k`` atomic fractions (rows sum to one).
        values: ``n`` property values (any units).
        seed: Seed of the initial weights and the reparameterisation noise.
        epochs: Optimisation steps.
        latent_dim: Latent dimension.
        hidden: Hidden width.
        lr: Adam learning rate.
        beta: Weight of the KL term (small: the latent space stays informative).

    Returns:
        The trained model.

    Raises:
        ValueError: If the shapes disagree or there are fewer than two compositions.
    """
    x = torch.as_tensor(np.asarray(fractions, dtype=np.float32))
    yv = np.asarray(values, dtype=np.float64)
    if x.dim() != 2 or x.shape[0] != yv.shape[0] or x.shape[0] < 2:
        raise ValueError(f"expected n x k fractions and n values (n >= 2), got {tuple(x.shape)}")
    mean = float(yv.mean())
    std = float(yv.std()) or 1.0
    y = torch.as_tensor(((yv - mean) / std)[:, None], dtype=torch.float32)
    with seeded(seed), torch_threads(1):
        model = CompositionVAE(x.shape[1], latent_dim, hidden)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            opt.zero_grad()
            loss = model.loss(x, y, beta)
            loss.backward()
            opt.step()
    model.eval()
    return TrainedVAE(model, mean, std, float(loss.detach()))


def nearest_formula(
    fractions: Sequence[float], max_atoms: int, tolerance: float = 0.08
) -> tuple[int, ...]:
    """The simplest small-integer formula close to some atomic fractions.

    Among formulas of at most ``max_atoms`` atoms within L1 distance ``tolerance`` of the
    fractions, the one with the fewest atoms (then the nearest); if none is that close,
    the nearest.

    Args:
        fractions: ``k`` atomic fractions.
        max_atoms: Largest number of atoms.
        tolerance: L1 distance within which a smaller formula is preferred.

    Returns:
        ``k`` non-negative integers with a positive sum, their gcd 1.
    """
    f = np.asarray(fractions, dtype=np.float64)
    best: tuple[float, int, tuple[int, ...]] | None = None
    close: tuple[int, float, tuple[int, ...]] | None = None
    for counts in itertools.product(range(max_atoms + 1), repeat=len(f)):
        total = sum(counts)
        if total == 0 or total > max_atoms or math.gcd(*counts) != 1:
            continue
        d = float(np.abs(np.asarray(counts) / total - f).sum())
        if best is None or (d, total, counts) < best:
            best = (d, total, counts)
        if d <= tolerance and (close is None or (total, d, counts) < close):
            close = (total, d, counts)
    assert best is not None
    return close[2] if close is not None else best[2]
