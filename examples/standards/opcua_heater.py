"""An OPC UA heater served by asyncua: the opcua driver's reference server.

Objects/Lab/Heater (a LADS-style functional unit in namespace ``urn:sdlab:heater``) holds

- ``Temperature`` (Double, degC, read-only): the heater's temperature;
- ``Power`` (Double, percent, writable);
- ``SetTemperature(Target: Double) -> RampTime: Double``: jumps ``Temperature`` to ``Target``
  and returns the ramp time a real heater would need at ``RATE_C_PER_S``, in seconds;
- ``Stop()``: power off, back to ``AMBIENT_C``.

Used by ``tests/instruments/standards/test_opcua.py``, the standards integration test and
``serve_reference.py``.
"""

from __future__ import annotations

from typing import Any

from asyncua import Server, ua
from asyncua.common.methods import uamethod

NAMESPACE = "urn:sdlab:heater"
AMBIENT_C = 20.0
RATE_C_PER_S = 10.0


def ramp_time_s(old_c: float, target_c: float) -> float:
    """What ``SetTemperature`` returns: seconds to go from ``old_c`` to ``target_c``."""
    return abs(target_c - old_c) / RATE_C_PER_S


async def start_heater(port: int, host: str = "127.0.0.1") -> Server:
    """Start the heater server on ``opc.tcp://host:port/sdlab/heater``; stop it with
    ``await server.stop()``."""
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{host}:{port}/sdlab/heater")
    server.set_server_name("sdlab reference heater")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NAMESPACE)
    lab = await server.nodes.objects.add_folder(idx, "Lab")
    heater = await lab.add_object(idx, "Heater")
    temperature = await heater.add_variable(idx, "Temperature", AMBIENT_C, ua.VariantType.Double)
    power = await heater.add_variable(idx, "Power", 0.0, ua.VariantType.Double)
    await power.set_writable()

    @uamethod
    async def set_temperature(parent: Any, target: float) -> float:
        old = await temperature.read_value()
        await temperature.write_value(float(target))
        return ramp_time_s(old, float(target))

    @uamethod
    async def stop(parent: Any) -> None:
        await power.write_value(0.0)
        await temperature.write_value(AMBIENT_C)

    target_arg = ua.Argument()
    target_arg.Name = "Target"
    target_arg.DataType = ua.NodeId(ua.ObjectIds.Double)
    target_arg.ValueRank = -1
    ramp_arg = ua.Argument()
    ramp_arg.Name = "RampTime"
    ramp_arg.DataType = ua.NodeId(ua.ObjectIds.Double)
    ramp_arg.ValueRank = -1
    await heater.add_method(idx, "SetTemperature", set_temperature, [target_arg], [ramp_arg])
    await heater.add_method(idx, "Stop", stop, [], [])
    await server.start()
    return server
