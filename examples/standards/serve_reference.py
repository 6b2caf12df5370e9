"""Serve the standards example's reference servers (and, with ``--gateway``, its drivers).

    python examples/standards/serve_reference.py [--lab lab.toml] [--gateway]
        [--journal-dir DIR]

Starts, on loopback, the SiLA 2 heater (``sila2_heater.py``) on the port the lab file's
``sila2`` entry names and the OPC UA heater (``opcua_heater.py``) on the port of its
``opcua`` entry. With ``--gateway`` it also hosts every ``driver`` entry of the lab file in
an :class:`~instruments.server.InstrumentServer` on the entry's address (VISA through
pyvisa-sim and ophyd through its sim devices run here, in this process), each driver's
``options`` validated by its own ``Options`` model. That part stands in for
``sdlab instruments serve LAB.toml`` until the gateway reads ``driver`` entries; the lab
file is already in the gateway's format.

Prints ``ready`` once everything serves; stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STANDARD_MODULES = {
    "sila2": "instruments.standards.sila2",
    "opcua": "instruments.standards.opcua",
    "visa": "instruments.standards.visa",
    "ophyd": "instruments.standards.ophyd",
}


def read_lab(path: Path) -> list[dict[str, Any]]:
    """The lab file's ``[[instruments]]`` entries."""
    with path.open("rb") as f:
        entries: list[dict[str, Any]] = tomllib.load(f).get("instruments", [])
    return entries


def build_driver(entry: dict[str, Any], index: int) -> Any:
    """The driver of one ``driver`` entry, its options validated by the driver's model.

    Raises:
        SystemExit: With the key path and the problem, for a bad entry.
    """
    from pydantic import ValidationError

    from instruments.driver import get_driver

    name = entry.get("driver", "")
    if name in STANDARD_MODULES:
        importlib.import_module(STANDARD_MODULES[name])
    cls = get_driver(name)
    try:
        options = cls.Options.model_validate(entry.get("options", {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"instruments[{index}].options.{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"bad lab entry {entry.get('name')!r}: {problems}") from exc
    return cls(entry["name"], options, simulated=bool(entry.get("simulated", False)))


async def serve(lab: Path, gateway: bool, journal_dir: Path | None) -> None:
    """Start the reference servers (and the gateway); run until signalled."""
    import opcua_heater
    import sila2_heater

    from instruments.server import InstrumentServer

    entries = read_lab(lab)
    sila = [e for e in entries if e.get("driver") == "sila2"]
    opcua = [e for e in entries if e.get("driver") == "opcua"]
    sila_servers = [sila2_heater.start_heater(int(e["options"]["port"])) for e in sila]
    ua_servers = [
        await opcua_heater.start_heater(int(urlparse(e["options"]["url"]).port or 4840))
        for e in opcua
    ]
    servers: list[InstrumentServer] = []
    try:
        if gateway:
            os.chdir(lab.parent)  # paths in options are relative to the lab file
            for i, entry in enumerate(entries):
                if "driver" not in entry:
                    continue
                journal = None if journal_dir is None else journal_dir / f"{entry['name']}.jsonl"
                server = InstrumentServer(
                    build_driver(entry, i), entry["address"], journal_path=journal
                )
                await server.start()
                servers.append(server)
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for server in servers:
            await server.stop()
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
