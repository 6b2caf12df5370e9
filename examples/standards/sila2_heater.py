"""A SiLA 2 heater served by the ``sila2`` package: the sila2 driver's reference server.

Its features are defined by the FDL files beside this module and bound at run time with
``sila2.framework.Feature`` (no generated code):

- ``HeaterController``: the observable command ``HeatTo(TargetTemperature)`` (20..300 degC,
  a SiLA constraint) ramps at ``RATE_C_PER_S`` in ``STEPS`` steps, reporting progress, and
  returns ``FinalTemperature`` (degC) and ``HeatInput`` (J, ``heat_input_j``); the
  unobservable ``SetFanSpeed(Speed)`` (a SiLA set constraint 0..3) and ``SwitchOff()``;
  the property ``Temperature``.
- ``CancelController`` (org.silastandard/core.commands, its two commands): cancels a running
  ``HeatTo``, which then ends with an error, the temperature where the ramp stopped.

Used by ``tests/instruments/standards/test_sila2.py``, the standards integration test and
``serve_reference.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from sila2.framework import Feature
from sila2.framework.errors.undefined_execution_error import UndefinedExecutionError
from sila2.server import FeatureImplementationBase, SilaServer
from sila2.server.encryption import generate_self_signed_certificate

HERE = Path(__file__).resolve().parent
HEATER = Feature((HERE / "HeaterController.sila.xml").read_text(encoding="utf-8"))
CANCEL = Feature((HERE / "CancelController.sila.xml").read_text(encoding="utf-8"))

AMBIENT_C = 20.0
RATE_C_PER_S = 400.0
STEPS = 10
HEAT_CAPACITY_J_PER_K = 150.0


def heat_input_j(old_c: float, target_c: float) -> float:
    """What ``HeatTo`` returns as ``HeatInput``: heat capacity times the change, in J."""
    return HEAT_CAPACITY_J_PER_K * (target_c - old_c)


class HeaterState:
    """The heater's physics and the running executions (shared by both features)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.temperature_c = AMBIENT_C
        self.fan_speed = 0
        self.cancels: dict[UUID, threading.Event] = {}


class HeaterImpl(FeatureImplementationBase):
    """``HeaterController``: method names follow sila2's convention."""

    def __init__(self, server: SilaServer, state: HeaterState) -> None:
        super().__init__(server)
        self.state = state

    def get_Temperature(self, *, metadata: Any) -> float:  # noqa: N802 - SiLA identifier
        return self.state.temperature_c

    def SetFanSpeed(self, Speed: int, *, metadata: Any) -> int:  # noqa: N802, N803
        self.state.fan_speed = Speed
        return Speed

    def SwitchOff(self, *, metadata: Any) -> tuple[()]:  # noqa: N802
        for event in list(self.state.cancels.values()):
            event.set()
        self.state.fan_speed = 0
        self.state.temperature_c = AMBIENT_C
        return ()

    def HeatTo(  # noqa: N802
        self,
        TargetTemperature: float,  # noqa: N803
        *,
        metadata: Any,
        instance: Any,
    ) -> tuple[float, float]:
        cancel = threading.Event()
        self.state.cancels[instance.execution_uuid] = cancel
        try:
            instance.begin_execution()
            start = self.state.temperature_c
            step_s = abs(TargetTemperature - start) / RATE_C_PER_S / STEPS
            for i in range(1, STEPS + 1):
                if cancel.wait(step_s):
                    raise UndefinedExecutionError(
                        f"cancelled at {self.state.temperature_c:.3f} degC"
                    )
                self.state.temperature_c = start + (TargetTemperature - start) * i / STEPS
                instance.progress = i / STEPS
            self.state.temperature_c = TargetTemperature
            return (TargetTemperature, heat_input_j(start, TargetTemperature))
        finally:
            self.state.cancels.pop(instance.execution_uuid, None)


class CancelImpl(FeatureImplementationBase):
    """``CancelController``: sets the cancel event of a running ``HeatTo``."""

    def __init__(self, server: SilaServer, state: HeaterState) -> None:
        super().__init__(server)
        self.state = state

    def CancelCommand(self, CommandExecutionUUID: str, *, metadata: Any) -> tuple[()]:  # noqa: N802, N803
        event = self.state.cancels.get(UUID(CommandExecutionUUID))
        if event is None:
            raise UndefinedExecutionError(f"no running command {CommandExecutionUUID}")
        event.set()
        return ()

    def CancelAll(self, *, metadata: Any) -> tuple[()]:  # noqa: N802
        for event in list(self.state.cancels.values()):
            event.set()
        return ()


def start_heater(port: int, host: str = "127.0.0.1", *, insecure: bool = True) -> SilaServer:
    """Start the heater server. A secure one gets a self-signed certificate, which clients
    trust as their CA: ``server.heater_ca`` (PEM). Stop it with ``server.stop()``."""
    server = SilaServer(
        server_name="sdlab heater",
        server_type="SdlabHeater",
        server_description="The sila2 driver's reference heater",
        server_version="1.0",
        server_vendor_url="https://github.com/sdlab/sdlab",
    )
    state = HeaterState()
    server.heater_state = state  # type: ignore[attr-defined]
    server.set_feature_implementation(HEATER, HeaterImpl(server, state))
    server.set_feature_implementation(CANCEL, CancelImpl(server, state))
    if insecure:
        server.start_insecure(host, port, enable_discovery=False)
    else:
        key, cert = generate_self_signed_certificate(server.server_uuid, host)
        server.start(host, port, private_key=key, cert_chain=cert, enable_discovery=False)
        server.heater_ca = cert  # type: ignore[attr-defined]
    # gRPC binds at once; give its threads a moment so the first call does not race them.
    time.sleep(0.05)
    return server
