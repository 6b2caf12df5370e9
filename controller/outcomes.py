"""What became of a step's request, and what to do after an instrument fault.

The step runner (:mod:`controller.steps`) follows a request to one of these ends: the
instrument's final state (a :class:`~instruments.client.RequestState`), a request the
instrument refused for good (:class:`Refused`), or one whose result never came
(:class:`Lost`); :func:`retry_decision` says whether a faulted step runs again, fails, or
waits for an operator, and :func:`schema_problem` checks a result against the outputs its
action declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from instruments.client import RequestState
from instruments.driver import ActionSpec
from instruments.protocol import (
    PARAMETER_OUT_OF_LIMITS,
    REQUEST_ID_CONFLICT,
    UNKNOWN_ACTION,
    UNSUPPORTED_PROTOCOL,
)

__all__ = [
    "MAX_TRANSPORT_PAUSE_S",
    "POLL_S",
    "REFUSALS",
    "Lost",
    "Refused",
    "Retry",
    "retry_decision",
    "schema_problem",
]

Retry = Literal["retry", "interrupt", "fail"]


def retry_decision(
    *, retry_safe: bool, attempt: int, max_attempts: int, aborted: bool, fate_known: bool
) -> Retry:
    """What becomes of a step after an instrument fault.

    ======================================  ===============  =============
    the action                              fate known       fate unknown
    ======================================  ===============  =============
    retry-safe, attempts left, not aborted  ``retry``        ``retry``
    retry-safe, no attempts left / aborted  ``fail``         ``fail``
    not retry-safe                          ``fail``         ``interrupt``
    ======================================  ===============  =============

    An action not declared safe to re-run is never sent twice: if it surely stopped, the
    experiment fails; if its fate is unknown, the experiment waits INTERRUPTED for an
    operator's decision.

    Args:
        retry_safe: The instrument declared the action safe to re-run.
        attempt: The attempt that just ended (1 for the first).
        max_attempts: ``reliability.max_attempts`` of the campaign.
        aborted: The campaign is being aborted.
        fate_known: The instrument confirmed the action stopped.
    """
    if retry_safe and attempt < max_attempts and not aborted:
        return "retry"
    if not retry_safe and not fate_known:
        return "interrupt"
    return "fail"


def schema_problem(action: ActionSpec, state: RequestState) -> str | None:
    """What is wrong with a completed result, measured against the declared outputs."""
    if state.state != "completed":
        return None
    declared = {o.name for o in action.outputs}
    got = [m.name for m in state.measurements]
    missing = sorted(declared - set(got))
    extra = sorted(set(got) - declared)
    if missing or extra:
        return f"result breaks the declared outputs: missing {missing}, undeclared {extra}"
    bad = [m.name for m in state.measurements if m.value is not None and not math.isfinite(m.value)]
    if bad:
        return f"result has non-finite values for {bad}"
    return None


POLL_S = 1.0
"""Long-poll window of each status call while a step runs, in seconds."""

MAX_TRANSPORT_PAUSE_S = 5.0
"""Longest pause between two tries to reach an instrument during one step, in seconds."""

REFUSALS = frozenset(
    {UNKNOWN_ACTION, PARAMETER_OUT_OF_LIMITS, REQUEST_ID_CONFLICT, UNSUPPORTED_PROTOCOL}
)
"""Error replies that refuse a request for good: sending it again cannot help."""


@dataclass(frozen=True)
class Lost:
    """A step whose result never came: ``known`` if the instrument confirmed it stopped."""

    code: str
    message: str
    known: bool = False


@dataclass(frozen=True)
class Refused:
    """A step the instrument refused outright."""

    code: str
    message: str
