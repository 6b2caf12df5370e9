"""The sdlab controller: the Ray event loop, scheduling, safety gate, recovery, the
experiment store, the FastAPI app, the command line and the Python API
(``from controller import Campaign``, :mod:`controller.notebook`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.notebook import Campaign

__all__ = ["Campaign"]


def __getattr__(name: str) -> Any:
    """``Campaign`` is imported on first use, so ``import controller.store`` stays light."""
    if name == "Campaign":
        from controller.notebook import Campaign

        return Campaign
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
