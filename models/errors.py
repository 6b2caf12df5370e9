"""The sdlab error hierarchy.

Every error sdlab raises on purpose derives from :class:`SdlabError`. Each subclass also
inherits the builtin it most resembles, so callers that only know the builtin still catch it
(``InvalidCampaignError`` is a ``ValueError``), and carries the data an operator needs
(the offending key path, the instrument, the experiment id) as attributes rather than only
inside the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Errors that carry data take it as constructor arguments, so ``pickle`` (which Ray uses to
# send an exception from an actor to its caller) cannot rebuild them from the message alone:
# each such class says in ``__reduce__`` how it was made.


class SdlabError(Exception):
    """Root of every error sdlab raises deliberately."""


class InvalidCampaignError(SdlabError, ValueError):
    """A campaign or simulation file is malformed or violates the campaign schema.

    Attributes:
        source: The file (or other source) the campaign came from, if known.
        problems: ``(key_path, message)`` pairs, one per problem found, e.g.
            ``("objectives[0].direction", "expected 'maximize' or 'minimize'")``.
    """

    def __init__(self, source: str | None, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        where = f"{source}: " if source else ""
        if len(lines) == 1:
            text = f"{where}{lines[0]}"
        else:
            text = f"{where}{len(lines)} problems\n  " + "\n  ".join(lines)
        super().__init__(text)


class IllegalTransitionError(SdlabError, ValueError):
    """A status change that the lifecycle's transition table forbids."""

    def __init__(self, kind: str, current: str, target: str, record_id: str | None = None) -> None:
        self.kind = kind
        self.current = current
        self.target = target
        self.record_id = record_id
        rid = f" {record_id}" if record_id else ""
        super().__init__(f"{kind}{rid}: illegal transition {current} -> {target}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.current, self.target, self.record_id))


class ParameterLimitError(SdlabError, ValueError):
    """A parameter value lies outside a declared limit (search space or instrument).

    Attributes:
        parameter: Name of the offending parameter.
        value: The value that was refused.
        limit: Human-readable description of the limit that was violated.
        instrument: The instrument whose declared limit was violated, if any.
    """

    def __init__(
        self, parameter: str, value: object, limit: str, instrument: str | None = None
    ) -> None:
        self.parameter = parameter
        self.value = value
        self.limit = limit
        self.instrument = instrument
        who = f" (instrument {instrument})" if instrument else ""
        super().__init__(f"parameter {parameter!r} = {value!r} violates {limit}{who}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.parameter, self.value, self.limit, self.instrument))


class ProtocolError(SdlabError, ValueError):
    """A ZeroMQ message violates the sdlab wire protocol.

    Attributes:
        code: The structured error code (see ``docs/protocol.md``).
        field: The offending message field, if one can be named.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        self.code = code
        self.field = field
        self.detail = message
        where = f" (field {field!r})" if field else ""
        super().__init__(f"{code}: {message}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.detail, self.field))


class InstrumentError(SdlabError, RuntimeError):
    """An instrument reported a failure or could not be reached.

    Attributes:
        instrument: Name of the instrument.
        code: Structured error code, e.g. ``"action_failed"``, ``"timeout"``.
        request_id: The request the failure belongs to, if any.
        retryable: Whether the instrument says retrying the same action may succeed.
        field: The message field the instrument objected to, if it named one.
    """

    def __init__(
        self,
        instrument: str,
        code: str,
        message: str,
        request_id: str | None = None,
        retryable: bool = False,
        field: str | None = None,
    ) -> None:
        self.instrument = instrument
        self.code = code
        self.request_id = request_id
        self.retryable = retryable
        self.field = field
        self.detail = message
        rid = f" request {request_id}" if request_id else ""
        super().__init__(f"instrument {instrument}{rid}: {code}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.instrument, self.code, self.detail, self.request_id, self.retryable)
        return (type(self), (*args, self.field))


class InstrumentTimeoutError(InstrumentError, TimeoutError):
    """An instrument did not answer within the allowed time."""

    def __init__(self, instrument: str, message: str, request_id: str | None = None) -> None:
        super().__init__(instrument, "timeout", message, request_id=request_id, retryable=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.instrument, self.detail, self.request_id))


class RegistryError(SdlabError, KeyError):
    """A name was registered twice, or looked up but never registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class PlannerError(SdlabError, RuntimeError):
    """A planner could not produce proposals."""


class StoreError(SdlabError, RuntimeError):
    """The experiment store is unreachable, inconsistent or at an unknown schema version."""


class CampaignStateError(SdlabError, RuntimeError):
    """An operation does not fit the campaign's current state (e.g. resuming a finished one)."""


class LinkSecurityError(SdlabError, ValueError):
    """A ZeroMQ link would be unprotected, or its CURVE keys cannot be used.

    Raised before any socket connects or binds: a non-loopback address without CURVE keys
    (and without an explicit ``insecure = true``), a key file that cannot be read, or a
    directory of allowed client keys that does not exist.

    Attributes:
        instrument: The instrument whose link it is.
        address: The endpoint concerned, if any.
        key: The configuration key to set or fix (``"curve.server_public_key"``).
    """

    def __init__(
        self, instrument: str, message: str, key: str | None = None, address: str | None = None
    ) -> None:
        self.instrument = instrument
        self.address = address
        self.key = key
        fix = f" (set {key})" if key else ""
        self.detail = message
        super().__init__(f"instrument {instrument}: {message}{fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.instrument, self.detail, self.key, self.address))
