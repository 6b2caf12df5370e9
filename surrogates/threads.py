"""How many CPU threads PyTorch uses for a piece of work.

PyTorch runs each operation on all cores by default. For the many small operations of a
hyperparameter fit, a small network's training or a greedy batch selection, the threads
spend their time waiting for each other at every operation, and on busy cores (a lab PC
running other software, or several campaigns) a thread that loses its core stalls the rest:
measured here, a 20-column GP fit on 10 rows took 28 CPU seconds with two threads on two
loaded cores against under 1 s with one, and a small network trained 30x slower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` PyTorch CPU threads (``None``: leave the setting alone).

    The previous setting is restored on exit, also after an error.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
