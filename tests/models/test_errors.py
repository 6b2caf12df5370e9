"""Errors that carry data survive pickling (Ray sends an actor's exception to its caller)."""

from __future__ import annotations

import pickle

import pytest

from models.errors import (
    IllegalTransitionError,
    InstrumentError,
    InstrumentTimeoutError,
    LinkSecurityError,
    ParameterLimitError,
    ProtocolError,
    SdlabError,
)

ERRORS: list[SdlabError] = [
    IllegalTransitionError("experiment", "running", "proposed", "17"),
    ParameterLimitError("temperature_c", 1500, "maximum 1200.0", "furnace-1"),
    ProtocolError("bad_message", "expected an object", "body"),
    InstrumentError("furnace-1", "jammed", "sample stuck", "exp-1-step-0", True, "action"),
    InstrumentTimeoutError("furnace-1", "no reply to status within 11 s", "exp-1-step-0"),
    LinkSecurityError("furnace-1", "plaintext off the machine", "curve.server_public_key", "x"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_round_trip_through_pickle_with_their_data(error: SdlabError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)
