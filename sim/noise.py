"""Measurement noise models for simulated instruments.

A simulated world computes the noise-free truth (``World.evaluate_true``); a noise model,
kept separate as in BoTorch's ``test_functions/base.py``, turns that truth into what the
instrument reports. Tests and benchmarks score against the truth, never against the noisy
values.

Noise is reproducible: a :class:`GaussianNoise` owns a :class:`numpy.random.Generator`
seeded once, so the ``k``-th measurement of a seeded instrument always gets the same draw.
"""

from __future__ import annotations

import hashlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)


def seed_from_name(name: str) -> int:
    """A stable 63-bit seed derived from a name (same on every run and platform).

    Python's ``hash`` is salted per process, so it cannot be used for this.

    Args:
        name: Any text, typically an instrument name.

    Returns:
        A non-negative integer below ``2**63``.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class NoiseModel(ABC):
    """Turns noise-free outputs into measured ones."""

    @abstractmethod
    def apply(self, truth: Mapping[str, float]) -> dict[str, float]:
        """Return a noisy copy of ``truth`` (one entry per output, same names).

        Args:
            truth: Noise-free value of each output.

        Returns:
            The measured values; ``truth`` itself is left untouched.
        """

    @abstractmethod
    def uncertainty(self, output: str) -> float | None:
        """Standard uncertainty the instrument reports for ``output`` (``None``: unknown)."""


class GaussianNoise(NoiseModel):
    """Independent, homoscedastic Gaussian noise on every output.

    Draws come from one :class:`numpy.random.Generator` in call order, one draw per output
    (in the order of the ``truth`` mapping), so a fixed seed and a fixed sequence of calls
    reproduce the same values. With ``std == 0`` the truth is returned unchanged and no
    draw is consumed.

    Args:
        std: Standard deviation of the noise, in output units; must be finite and ``>= 0``.
        seed: Seed of the generator; ``None`` draws fresh entropy (not reproducible).

    Raises:
        ValueError: If ``std`` is negative or not finite.
    """

    def __init__(self, std: float, seed: int | None = None) -> None:
        if not math.isfinite(std) or std < 0:
            raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
        self._std = float(std)
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    @property
    def std(self) -> float:
        """Standard deviation of the noise, in output units."""
        return self._std

    @property
    def seed(self) -> int | None:
        """The seed the generator started from."""
        return self._seed

    def sample(self, n: int) -> np.ndarray:
        """Draw ``n`` noise values (shape ``n``), advancing the generator.

        Args:
            n: Number of draws.

        Returns:
            A float64 array of ``n`` draws from ``N(0, std**2)``.
        """
        return self._std * self._rng.standard_normal(n)

    def apply(self, truth: Mapping[str, float]) -> dict[str, float]:
        """Add one Gaussian draw to each output (see the class docstring)."""
        if self._std == 0.0:
            return dict(truth)
        draws = self.sample(len(truth))
        return {k: float(v) + float(e) for (k, v), e in zip(truth.items(), draws, strict=True)}

    def uncertainty(self, output: str) -> float | None:
        """The noise std, the same for every output."""
        return self._std

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self._std!r}, seed={self._seed!r})"
