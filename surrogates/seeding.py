"""Seeded sections on torch's global random number generator, one thread at a time.

Planners and surrogates make their random choices reproducible by seeding torch's global
generator for the length of a decision or a fit (a decision seed, see
:meth:`planners.base.Planner.decision_seed`). That generator is shared by every thread of the
process, so two planners deciding at the same time on two threads (two campaigns in one
process, or a cancelled controller's planner still finishing while its successor decides)
would draw from each other's sequences, and a decision would no longer be a function of what
the planner holds. :func:`seeded` therefore holds one process-wide re-entrant lock for the
section: seeded sections of different threads run one after the other, nested ones (a
planner's decision fitting a surrogate) run inside their caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded"]

_SEEDED = threading.RLock()


@contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run a block alone on torch's global generator, seeded, and restore it afterwards.

    Args:
        seed: Seed of the block (reduced modulo ``2**63``); ``None`` keeps the current state
            (the block still runs alone and leaves the caller's generator as it found it).
        device: A CUDA device whose generator is forked and seeded too; CPU is always.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    with _SEEDED, torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed % (2**63))
        yield
