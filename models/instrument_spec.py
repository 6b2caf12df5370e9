"""The ``[[instruments]]`` entries of campaign, lab and gateway files: an instrument's
address and link keys (:class:`InstrumentSpec`, :class:`CurveSpec`), or the simulator that
serves it (:class:`SimulatedInstrumentSpec`) and the faults it injects (:class:`FaultSpec`).

``docs/campaigns.md`` documents every key; :mod:`models.campaign` uses these in a campaign
file, :mod:`models.lab` in a lab file, :mod:`models.gateway` in a gateway's file.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from models.costs import NonNegativeCost
from models.params import NAME_PATTERN

__all__ = [
    "MAX_SEED",
    "CurveSpec",
    "FaultSpec",
    "InstrumentSpec",
    "SimulatedInstrumentSpec",
    "is_loopback_address",
]

MAX_SEED = 2**63 - 1
"""Largest seed a campaign file may give (the random generators take 64-bit seeds)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultSpec(_Spec):
    """The ``[instruments.simulated.faults]`` table: faults a simulated instrument injects.

    Each rate is the probability that one submitted action meets that fault; at most one
    fault is drawn per action, in the order listed, from a generator seeded with ``seed``,
    so the k-th action of an instrument always meets the same fault.

    Attributes:
        error_rate: The action fails with error code ``sim_fault`` (marked retryable).
        hang_rate: The action never finishes (until the controller cancels it).
        slow_rate: The action takes ``slow_factor`` times its normal duration.
        slow_factor: How much slower a slow action is.
        malformed_rate: The server answers the submit with a frame that is not a protocol
            message (the action itself runs normally).
        bad_result_rate: The action completes with a result that breaks its declared
            schema (an output missing, another not declared).
        crash_rate: The server process exits mid-action (``os._exit``), as a power cut
            would; a supervised server comes back and reports the action interrupted.
        drop_rate: The server drops off the network for ``drop_s`` seconds mid-action
            (socket closed, then bound again); the action goes on.
        drop_s: How long a drop lasts, in seconds.
        seed: Seed of the fault draws (default: derived from the instrument name).
    """

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_factor: float = Field(default=5.0, ge=1.0)
    malformed_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    bad_result_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    crash_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_s: float = Field(default=2.0, gt=0.0, le=600.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _total(self) -> FaultSpec:
        if self.total_rate > 1.0:
            raise ValueError(f"the fault rates add up to {self.total_rate:g}, more than 1")
        return self

    @property
    def total_rate(self) -> float:
        """Probability that an action meets any fault."""
        return (
            self.error_rate
            + self.hang_rate
            + self.slow_rate
            + self.malformed_rate
            + self.bad_result_rate
            + self.crash_rate
            + self.drop_rate
        )


class SimulatedInstrumentSpec(_Spec):
    """The ``[instruments.simulated]`` table: serve this instrument from a simulator.

    Attributes:
        driver: Registered simulated driver name (e.g. ``"objective-station"``).
        world: Registered simulated world (hidden ground truth), e.g. ``"hartmann6"``.
        noise_std: Standard deviation of the Gaussian measurement noise, in output units.
        duration_s: Simulated duration of each action, in seconds.
        seed: Seed of the noise; ``None`` derives one from the instrument name.
        options: Driver-specific settings.
        faults: Faults to inject (none by default).
        cost: The cost the simulated action declares per run (campaign cost unit).
        cost_per: The cost it declares per unit of some of its parameters.
    """

    driver: str = "objective-station"
    world: str
    noise_std: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    duration_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)
    faults: FaultSpec | None = None
    cost: NonNegativeCost = 0.0
    cost_per: dict[str, NonNegativeCost] = Field(default_factory=dict)


_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback_address(address: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine.

    ``ipc://`` and ``inproc://`` always do; ``tcp://`` does when its host is ``localhost``
    or a loopback IP address (``127.0.0.0/8``, ``::1``). A wildcard bind (``tcp://*:5601``,
    ``tcp://0.0.0.0:5601``), any other host name and any other transport do not.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    rest = rest.rpartition(";")[2]  # "tcp://source;host:port": the destination counts
    host = rest.rpartition(":")[0] if ":" in rest else rest
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CurveSpec(_Spec):
    """The ``[instruments.curve]`` table: CURVE keys of the instrument's ZeroMQ link.

    Paths are certificate files as ``sdlab keys generate`` writes them; in a file, a
    relative path is relative to the file's directory. The client pair is what the
    controller uses; the server pair is what a simulated server started from this file uses
    (a real instrument server is configured on its own machine).

    Attributes:
        server_public_key: The instrument server's public key file (``NAME.key``).
        client_keys: The controller's secret key file (``NAME.key_secret``).
        server_secret_key: The server's secret key file (``NAME.key_secret``).
        allowed_clients: Directory of the public key files of the clients the server admits.
    """

    server_public_key: Path | None = None
    client_keys: Path | None = None
    server_secret_key: Path | None = None
    allowed_clients: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> CurveSpec:
        if (self.server_public_key is None) != (self.client_keys is None):
            missing = "client_keys" if self.client_keys is None else "server_public_key"
            raise ValueError(f"{missing} is required with the other client key")
        if (self.server_secret_key is None) != (self.allowed_clients is None):
            missing = "allowed_clients" if self.allowed_clients is None else "server_secret_key"
            raise ValueError(f"{missing} is required with the other server key")
        return self


def _simulated_tag(value: object) -> str:
    return "flag" if isinstance(value, bool) else "table"


_Simulated = Annotated[
    Annotated[SimulatedInstrumentSpec, Tag("table")] | Annotated[bool, Tag("flag")],
    Discriminator(_simulated_tag),
]
"""``simulated``: a simulator table, or ``true`` for a driver's simulated backend (a bad
table is reported as a table, not also as "not a boolean")."""


class InstrumentSpec(_Spec):
    """One ``[[instruments]]`` entry.

    Attributes:
        name: Unique instrument name (as it answers ``describe``).
        kind: What the instrument is for; workflow steps pick instruments by kind, so
            several instruments of one kind share the work.
        address: ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5601"``. For simulated
            instruments it may be left out (``sdlab run`` picks a free loopback port).
        timeout_s: Overrides the time the controller waits for one action.
        driver: A registered driver that a gateway (``sdlab instruments serve``, or the
            local one ``sdlab run`` starts) hosts for this instrument, bound at ``address``.
        options: The driver's settings (``[instruments.options]``), validated by the
            driver's own ``Options`` model when the instrument is hosted.
        simulated: ``true`` runs ``driver`` against its simulated backend; a table
            (``[instruments.simulated]``) serves the instrument from a simulator instead.
        curve: CURVE keys of the link; required for a non-loopback ``address``.
        insecure: Allow a plaintext link to a non-loopback address (not recommended).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    kind: str = Field(pattern=NAME_PATTERN)
    address: str | None = Field(default=None, pattern=r"^(tcp|ipc|inproc)://.+$")
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    driver: str | None = Field(default=None, min_length=1, max_length=128)
    options: dict[str, Any] = Field(default_factory=dict)
    simulated: _Simulated | None = None
    curve: CurveSpec | None = None
    insecure: bool = False

    @property
    def simulator(self) -> SimulatedInstrumentSpec | None:
        """The ``[instruments.simulated]`` table, if the instrument is served by one."""
        return self.simulated if isinstance(self.simulated, SimulatedInstrumentSpec) else None

    @property
    def hosted(self) -> bool:
        """Whether a local gateway serves it (a ``driver`` or a simulator table)."""
        return self.driver is not None or self.simulator is not None

    @model_validator(mode="after")
    def _needs_address(self) -> InstrumentSpec:
        if self.driver is not None and self.simulator is not None:
            raise ValueError(
                "give either driver (with options) or an [instruments.simulated] table, "
                "not both: the table names its own driver"
            )
        if self.driver is None and self.simulated is True:
            raise ValueError("simulated = true needs a driver to simulate")
        if self.driver is None and self.options:
            raise ValueError("options are the settings of a driver: driver is missing")
        if self.address is None and not self.hosted:
            raise ValueError(
                "address is required for an instrument that is not simulated or hosted (no driver)"
            )
        if (
            self.address is not None
            and not self.insecure
            and not is_loopback_address(self.address)
            and (
                self.curve is None
                or (self.curve.server_public_key is None and self.curve.server_secret_key is None)
            )
        ):
            raise ValueError(
                f"instrument {self.name!r}: {self.address!r} is not a loopback address, so "
                "its link must be encrypted: set curve.server_public_key and "
                "curve.client_keys (or, for a simulated server, curve.server_secret_key and "
                "curve.allowed_clients), or insecure = true to allow plaintext"
            )
        return self
