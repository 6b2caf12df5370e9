"""Serve the standards example's reference servers (and, with ``--gateway``, its drivers).

    python examples/standards/serve_reference.py [--lab lab.toml] [--gateway]
        [--journal-dir DIR]

Starts, on loopback, the SiLA 2 heater (``sila2_heater.py``) on the port the lab file's
``sila2`` entry names and the OPC UA heater (``opcua_heater.py``) on the port of its
``opcua`` entry. With ``--gateway`` it also hosts every ``driver`` entry of the lab file
with sdlab's gateway (:func:`instruments.gateway.serve_gateway`, what
``sdlab instruments serve LAB.toml`` runs) on the entry's address, in this process (VISA
through pyvisa-sim and ophyd through its sim devices run here), each driver's ``options``
validated by its own ``Options`` model. Without ``--gateway``, run
``sdlab instruments serve lab.toml`` beside it.

Prints ``ready`` once everything serves; stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def read_lab(path: Path) -> list[dict[str, Any]]:
    """The lab file's ``[[instruments]]`` entries."""
    with path.open("rb") as f:
        entries: list[dict[str, Any]] = tomllib.load(f).get("instruments", [])
    return entries


async def serve(lab: Path, gateway: bool, journal_dir: Path | None) -> None:
    """Start the reference servers (and the gateway); run until signalled."""
    import opcua_heater
    import sila2_heater

    from instruments.gateway import Gateway, serve_gateway
    from models.gateway import load_gateway

    entries = read_lab(lab)
    sila = [e for e in entries if e.get("driver") == "sila2"]
    opcua = [e for e in entries if e.get("driver") == "opcua"]
    sila_servers = [sila2_heater.start_heater(int(e["options"]["port"])) for e in sila]
    ua_servers = [
        await opcua_heater.start_heater(int(urlparse(e["options"]["url"]).port or 4840))
        for e in opcua
    ]
    hosted: Gateway | None = None
    try:
        if gateway:  # sdlab's gateway, as `sdlab instruments serve lab.toml` runs it
            os.chdir(lab.parent)  # paths in options are relative to the lab file
            hosted = await serve_gateway(load_gateway(lab), journal_dir=journal_dir)
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if hosted is not None:
            await hosted.stop()
        for ua in ua_servers:
            await ua.stop()
        for s in sila_servers:
            s.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", type=Path, default=HERE / "lab.toml")
    parser.add_argument("--gateway", action="store_true", help="also host the lab's drivers")
    parser.add_argument("--journal-dir", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.lab.resolve(), args.gateway, args.journal_dir))


if __name__ == "__main__":
    main()
