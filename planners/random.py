"""Space-filling planners: uniform random sampling and scrambled Sobol sequences.

``random`` draws every proposal uniformly (per parameter; categorical choices equally
likely) from a NumPy generator seeded by :meth:`~planners.base.Planner.decision_seed`.

``sobol`` walks one scrambled Sobol sequence (Owen scrambling; Sobol 1967, Owen 1998) seeded
by the campaign seed. The position in the sequence is the number of experiments already
told plus those pending, so a planner rebuilt after a restart continues exactly where the
old one stopped, and asynchronous asks never repeat a point that is still running.

In a space with linear or mixture constraints, the parameters the constraints involve are
drawn instead from the constrained polytope by BoTorch's hit-and-run sampler
(:func:`planners.constraints.polytope_unit_samples`), seeded like the rest of the
decision; the other parameters keep their uniform or Sobol values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from models.params import ParamValue
from models.records import Decision, Proposal
from planners.base import Planner, register_planner
from planners.constraints import polytope_unit_samples
from planners.encoding import SpaceEncoder

logger = logging.getLogger(__name__)

__all__ = ["RandomPlanner", "SobolPlanner", "sobol_unit"]

_SOBOL_SEED_MASK = (1 << 62) - 1


def sobol_unit(dim: int, *, seed: int, skip: int, n: int) -> Tensor:
    """Points ``skip .. skip + n - 1`` of a scrambled Sobol sequence.

    Args:
        dim: Dimension of the sequence.
        seed: Scrambling seed; the same seed gives the same sequence.
        skip: Number of leading points to skip.
        n: Number of points to return.

    Returns:
        ``n x dim`` double tensor with values in ``[0, 1)``.
    """
    engine = torch.quasirandom.SobolEngine(
        dimension=dim, scramble=True, seed=seed & _SOBOL_SEED_MASK
    )
    if skip:
        engine.fast_forward(skip)
    return engine.draw(n, dtype=torch.double)


@register_planner("random")
class RandomPlanner(Planner):
    """Proposes points drawn uniformly at random from the search space.

    Options: none.
    """

    version = "1"

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` uniformly random points (pending points only change the seed).

        Args:
            n: Number of proposals.
            pending: Points still being measured.

        Returns:
            The decision.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, repeat = self.decision_seed(len(pending))
        rng = np.random.default_rng(seed)
        encoder = SpaceEncoder(self.space)
        unit = torch.from_numpy(rng.random((n, encoder.n_params)))
        if self.space.constraints:
            unit = polytope_unit_samples(encoder, unit, seed=seed)
        points = encoder.from_unit(unit)
        return self.decision(
            [Proposal(parameters=p, origin="random") for p in points],
            len(pending),
            t0,
            {"phase": "random", "decision_seed": seed, "repeat": repeat},
        )


@register_planner("sobol")
class SobolPlanner(Planner):
    """Proposes the next points of a scrambled Sobol sequence.

    The sequence position is ``len(observations) + len(pending)``: each experiment that was
    told or is pending has used one point. Options: none.
    """

    version = "1"

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose the next ``n`` Sobol points.

        Args:
            n: Number of proposals.
            pending: Points still being measured (they count as used sequence positions).

        Returns:
            The decision; ``details["sequence_start"]`` is the first position used.
        """
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        _, repeat = self.decision_seed(len(pending))
        encoder = SpaceEncoder(self.space)
        skip = len(self._observations) + len(pending)
        unit = sobol_unit(encoder.n_params, seed=self.seed, skip=skip, n=n)
        if self.space.constraints:
            unit = polytope_unit_samples(encoder, unit, seed=self.seed + skip)
        points = encoder.from_unit(unit)
        return self.decision(
            [Proposal(parameters=p, origin="sobol") for p in points],
            len(pending),
            t0,
            {"phase": "sobol", "sequence_start": skip, "repeat": repeat},
        )
