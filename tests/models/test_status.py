"""Lifecycle transition tables (models/status.py)."""

from __future__ import annotations

import itertools

import pytest

from models.errors import IllegalTransitionError
from models.status import (
    TRANSITIONS,
    CampaignStatus,
    ExperimentStatus,
    SampleState,
    StepStatus,
    can_transition,
    transition,
)

ES = ExperimentStatus


@pytest.mark.parametrize("enum", [CampaignStatus, ExperimentStatus, StepStatus, SampleState])
def test_transition_agrees_with_the_table_for_every_pair(enum: type) -> None:
    for a, b in itertools.product(list(enum), repeat=2):
        allowed = b in TRANSITIONS[enum][a]
        assert can_transition(a, b) is allowed
        if allowed:
            assert transition(a, b) is b
        else:
            with pytest.raises(IllegalTransitionError) as info:
                transition(a, b, "experiment 7")
            assert info.value.current == a.value
            assert info.value.target == b.value
            assert "experiment 7" in str(info.value)


def test_the_experiment_lifecycle_of_the_design() -> None:
    path = [ES.PROPOSED, ES.QUEUED, ES.RUNNING, ES.COMPLETED]
    for a, b in itertools.pairwise(path):
        assert can_transition(a, b)
    for end in (ES.FAILED, ES.INTERRUPTED, ES.ABANDONED):
        assert can_transition(ES.RUNNING, end)
    assert can_transition(ES.FAILED, ES.QUEUED)  # failed may be retried
    assert not TRANSITIONS[ExperimentStatus][ES.ABANDONED]  # never proposed again
    assert not TRANSITIONS[ExperimentStatus][ES.COMPLETED]


def test_statuses_of_different_lifecycles_never_mix() -> None:
    with pytest.raises(IllegalTransitionError):
        transition(ES.RUNNING, StepStatus.COMPLETED)  # type: ignore[type-var]


def test_an_emergency_stop_holds_until_reset_to_paused_or_aborted() -> None:
    C = CampaignStatus  # noqa: N806

    for start in (C.RUNNING, C.PAUSED):
        assert transition(start, C.ESTOPPED) is C.ESTOPPED
    assert {t for t in C if can_transition(C.ESTOPPED, t)} == {C.PAUSED, C.ABORTED}
    for start in (C.CREATED, C.COMPLETED, C.FAILED, C.ABORTED):
        assert not can_transition(start, C.ESTOPPED)
