"""The sdlab error hierarchy.

Every error sdlab raises on purpose derives from :class:`SdlabError`. Each subclass also
inherits the builtin it most resembles, so callers that only know the builtin still catch it
(``InvalidCampaignError`` is a ``ValueError``), and carries the data an operator needs
(the offending key path, the instrument, the experiment id) as attributes rather than only
inside the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
"""Exit status of a command line that did what it was asked."""
EXIT_FAILED = 1
"""Exit status of a command line that failed (a campaign that failed, an error)."""
EXIT_INVALID = 2
"""Exit status of a command line given a bad file or option (the message names the key)."""

# Errors that carry data take it as constructor arguments, so ``pickle`` (which Ray uses to
# send an exception from an actor to its caller) cannot rebuild them from the message alone:
# each such class says in ``__reduce__`` how it was made.


class SdlabError(Exception):
    """Root of every error sdlab raises deliberately."""


KeyPath = tuple[str | int, ...]
"""A key path into a campaign file: ``("workflow", 0, "fixed", "ramp")``."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_TOKEN = re.compile(r'\[(\d+)\]|\.?"((?:[^"\\]|\\.)*)"|\.?([A-Za-z0-9_-]+)')


def render_key_path(path: KeyPath) -> str:
    """``("workflow", 0, "fixed", "ramp")`` as ``workflow[0].fixed.ramp``.

    A key that is not a bare TOML key is quoted as TOML quotes it (``options."a.b"``).
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def parse_key_path(key: str) -> KeyPath:
    """The inverse of :func:`render_key_path`, for problems given as text.

    Text that is not a key path (a command-line option such as ``--bind``) is kept as one
    key, so it renders unchanged.
    """
    parts: list[str | int] = []
    pos = 0
    while pos < len(key):
        m = _KEY_TOKEN.match(key, pos)
        if m is None or (pos == 0 and key.startswith(".")):
            return (key,)
        if m.group(1) is not None:
            parts.append(int(m.group(1)))
        elif m.group(2) is not None:
            parts.append(json.loads(f'"{m.group(2)}"'))
        else:
            parts.append(m.group(3))
        pos = m.end()
    path = tuple(parts)
    return path if render_key_path(path) == key else (key,)


@dataclass(frozen=True)
class Problem:
    """One problem of a campaign (or simulation, or lab) file.

    Attributes:
        path: Where it is, as the keys and list indices leading to it
            (``("workflow", 0, "parameters", 1)``); empty for the file as a whole.
        message: What is wrong, for the person who wrote the file.
    """

    path: KeyPath
    message: str

    @classmethod
    def at(cls, key: str, message: str) -> Problem:
        """A problem whose path is given as text (``"workflow[0].fixed.ramp"``)."""
        return cls(parse_key_path(key) if key else (), message)

    @property
    def key(self) -> str:
        """The path as the file's author writes it: ``workflow[0].parameters[1]``."""
        return render_key_path(self.path)

    def under(self, *prefix: str | int) -> Problem:
        """The same problem seen from an enclosing table (``prefix`` put in front)."""
        return Problem((*prefix, *self.path), self.message)

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.path else self.message


ProblemLike = Problem | tuple[str, str]
"""A :class:`Problem`, or a ``(key_path_text, message)`` pair that becomes one."""


def as_problem(problem: ProblemLike) -> Problem:
    """``problem`` as a :class:`Problem` (a ``(key, message)`` pair is parsed)."""
    if isinstance(problem, Problem):
        return problem
    key, message = problem
    return Problem.at(key, message)


class InvalidCampaignError(SdlabError, ValueError):
    """A campaign or simulation file is malformed or violates the campaign schema.

    Attributes:
        source: The file (or other source) the campaign came from, if known.
        problems: One :class:`Problem` per problem found, e.g.
            ``Problem(("objectives", 0, "direction"), "expected 'maximize' or 'minimize'")``;
            ``problem.key`` renders its path as ``objectives[0].direction``.
    """

    def __init__(self, source: str | None, problems: Sequence[ProblemLike]) -> None:
        self.source = source
        self.problems = [as_problem(p) for p in problems]
        lines = [str(p) for p in self.problems]
        where = f"{source}: " if source else ""
        if len(lines) == 1:
            text = f"{where}{lines[0]}"
        else:
            text = f"{where}{len(lines)} problems\n  " + "\n  ".join(lines)
        super().__init__(text)

    def __reduce__(self) -> tuple[type[InvalidCampaignError], tuple[str | None, list[Problem]]]:
        # Raised in a Ray actor (the connect-time check), it is pickled to the caller.
        return (type(self), (self.source, self.problems))

    def key_paths(self) -> list[str]:
        """The key path of each problem, as text, in order."""
        return [p.key for p in self.problems]

    def by_key(self) -> dict[str, str]:
        """Each problem's message by its key path as text (the last one of a key wins)."""
        return {p.key: p.message for p in self.problems}


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


class PlannerUnavailableError(PlannerError, ConnectionError):
    """The planner's actor died and did not come back in time (or may not come back).

    Attributes:
        call: The planner call that could not be made (``"ask"``, ``"tell_related"``).
        waited_s: How long the call waited for the actor to be restarted, in seconds.
        attempts: How many times the call was sent.
    """

    def __init__(self, call: str, waited_s: float, attempts: int, reason: str) -> None:
        super().__init__(
            f"planner actor unavailable for {call!r} after {attempts} attempts over "
            f"{waited_s:.1f} s: {reason}"
        )
        self.call = call
        self.waited_s = waited_s
        self.attempts = attempts
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.call, self.waited_s, self.attempts, self.reason))


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
