"""Serve simulated instruments over the real ``sdlab/1`` ZeroMQ protocol.

A thin user of the gateway (:mod:`instruments.gateway`): it registers sdlab's simulated
drivers, then hosts the instruments of a campaign or simulation file exactly as
``sdlab instruments serve`` hosts a lab's drivers. Each ``[instruments.simulated]`` table
is the options of the simulator it names; a simulator declaring faults is hosted by the
fault-injecting server (:meth:`sim.drivers.SimulatedDriver.make_server`).

Command line (the gateway's, see :func:`instruments.gateway.main`)::

    python -m sim.serve FILE [--only NAME ...] [--journal-dir DIR] [--bind ENDPOINT]
                             [--curve-secret-key FILE --curve-allow DIR]

When every server is bound it prints exactly one line of JSON to stdout,
``{"ready": true, "endpoints": {name: endpoint}}``, then serves until SIGINT or SIGTERM and
exits 0. A broken file (or an address that cannot be bound) is reported on stderr with the
offending key path, and the exit status is 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import zmq.asyncio

from instruments import gateway
from instruments.driver import Driver
from instruments.gateway import Gateway
from instruments.security import CurveServerKeys
from models.errors import InvalidCampaignError
from models.gateway import GatewayEntry, GatewayFile
from models.instrument_spec import InstrumentSpec
from sim.drivers import load_builtin_drivers

DEFAULT_ADDRESS = gateway.DEFAULT_ADDRESS

SimulatedInstruments = Gateway
"""The running servers :func:`serve_instruments` returns (a gateway)."""


def _gateway_file(
    specs: Sequence[InstrumentSpec], source: str | None, key_paths: Sequence[str] | None
) -> GatewayFile:
    paths = (
        list(key_paths)
        if key_paths is not None
        else [f"instruments[{i}]" for i in range(len(specs))]
    )
    if len(paths) != len(specs):
        raise ValueError("key_paths must have one entry per spec")
    missing = [
        (f"{p}.simulated", "required key is missing")
        for p, s in zip(paths, specs, strict=True)
        if s.simulator is None
    ]
    if missing:
        raise InvalidCampaignError(source, missing)
    entries = [GatewayEntry(spec=s, key_path=p) for p, s in zip(paths, specs, strict=True)]
    return GatewayFile(source=source, entries=entries)


def build_drivers(
    specs: Sequence[InstrumentSpec],
    *,
    source: str | None = None,
    key_paths: Sequence[str] | None = None,
) -> list[Driver]:
    """Build the simulated driver of every instrument.

    Raises:
        InvalidCampaignError: Naming the key path of every instrument that is not simulated
            or whose driver, world or options are bad (``instruments[1].simulated.world``).
    """
    load_builtin_drivers()
    return gateway.build_drivers(_gateway_file(specs, source, key_paths))


async def serve_instruments(
    specs: Sequence[InstrumentSpec],
    *,
    journal_dir: Path | None = None,
    context: zmq.asyncio.Context | None = None,
    source: str | None = None,
    key_paths: Sequence[str] | None = None,
    bind: str | None = None,
    curve: CurveServerKeys | None = None,
) -> Gateway:
    """Start one instrument server per simulated instrument in the running event loop.

    See :func:`instruments.gateway.serve_gateway` for the arguments and errors; every spec
    must have an ``[instruments.simulated]`` table.
    """
    load_builtin_drivers()
    return await gateway.serve_gateway(
        _gateway_file(specs, source, key_paths),
        journal_dir=journal_dir,
        context=context,
        bind=bind,
        curve=curve,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sim.serve`` (the gateway's, with the simulators loaded)."""
    load_builtin_drivers()
    return gateway.main(argv, prog="python -m sim.serve")


if __name__ == "__main__":
    sys.exit(main())
