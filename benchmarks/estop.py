"""Emergency stop latency, beside abort's, measured in the same run.

A campaign runs one long action on a simulated furnace (``sim-furnace``, ``duration_s``
seconds of heating) behind a real instrument server; a real campaign controller (in this
process, planner on a thread) drives it through SQLite. Part way into the action the
benchmark sends a command exactly as ``sdlab control NAME ...`` does (a row in the store's
``commands`` table, picked up by the controller's poller):

* ``estop``: time from sending the command to the furnace's driver *reporting its safe
  state* (the moment its ``safe_state()`` returns, on the instrument side), and to the CLI
  seeing the command APPLIED;
* ``abort`` (the baseline): time from sending the command to the campaign *stopping*
  (the controller's run returning ABORTED), which lets the running step finish.

The controller's command poll interval (``reliability.command_poll_s``, 0.5 s by default)
bounds the estop's latency from below; it is printed with the numbers.

Usage:  python -m benchmarks.estop [--repeats N] [--duration S] [--poll S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from controller.control import send_command
from controller.loop import CampaignController, ControllerOptions
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.instrument_spec import SimulatedInstrumentSpec
from sim.furnace import SimulatedFurnaceDriver


class TimedFurnace(SimulatedFurnaceDriver):
    """The simulated furnace, noting when its safe state was reached."""

    safe_at: float | None = None

    async def safe_state(self) -> str:
        description = await super().safe_state()
        self.safe_at = time.perf_counter()
        return description


def _spec(name: str, poll_s: float) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": name, "seed": 1},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": -5, "upper": 10},
                {"name": "x2", "type": "continuous", "lower": 0, "upper": 15},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "furnace", "action": "measure"}],
            "instruments": [
                {"name": "furnace-1", "kind": "furnace", "address": "tcp://127.0.0.1:1"}
            ],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": 1},
            "reliability": {"command_poll_s": poll_s},
        }
    )


async def _one(
    db: str, name: str, command: str, duration_s: float, lead_s: float
) -> dict[str, Any]:
    """Run one campaign, send ``command`` ``lead_s`` into its action; the timings."""
    sim = SimulatedInstrumentSpec(driver="sim-furnace", world="branin", duration_s=duration_s)
    furnace = TimedFurnace("furnace-1", sim)
    server = InstrumentServer(furnace, "tcp://127.0.0.1:*")
    endpoints = {server.name: await server.start()}
    ctl = CampaignController(db, name, endpoints, ControllerOptions(use_ray_planner=False))
    out: dict[str, Any] = {}
    try:
        run = asyncio.create_task(ctl.run())
        while not furnace.heater_on:
            await asyncio.sleep(0.005)
        await asyncio.sleep(lead_s)
        sent = time.perf_counter()
        answer = asyncio.create_task(
            asyncio.to_thread(send_command, db, name, command, wait_s=60.0, poll_s=0.01)
        )
        if command == "estop":
            outcome = await answer
            out["applied_s"] = time.perf_counter() - sent
            assert furnace.safe_at is not None, outcome
            out["safe_s"] = furnace.safe_at - sent
            out["description"] = furnace.last_safe_state
            await asyncio.to_thread(send_command, db, name, "abort", wait_s=60.0)
            await run
        else:
            result = await run
            out["stopped_s"] = time.perf_counter() - sent
            out["status"] = result["status"]
            await answer
    finally:
        ctl.dispose()
        await server.stop()
    return out


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="action length, s")
    parser.add_argument("--lead", type=float, default=1.0, help="command sent this far in, s")
    parser.add_argument("--poll", type=float, default=0.5, help="command_poll_s, s")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"estop -> safe state": [], "estop -> APPLIED": []}
    rows["abort -> campaign stopped"] = []
    description = ""
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'estop.db'}"
        engine = make_engine(db)
        migrate(engine)
        factory = session_factory(engine)
        for i in range(args.repeats):
            for command in ("estop", "abort"):
                name = f"{command}-{i}"
                with transaction(factory) as s:
                    create_campaign(s, _spec(name, args.poll), seed=1, max_experiments=1)
                out = asyncio.run(_one(db, name, command, args.duration, args.lead))
                if command == "estop":
                    rows["estop -> safe state"].append(out["safe_s"])
                    rows["estop -> APPLIED"].append(out["applied_s"])
                    description = out["description"]
                else:
                    rows["abort -> campaign stopped"].append(out["stopped_s"])
        engine.dispose()
    table = Table(
        title=f"Emergency stop vs abort: {args.duration:g} s furnace action, command sent "
        f"{args.lead:g} s in, command_poll_s = {args.poll:g} s, {args.repeats} runs each"
    )
    for col in ("from the command to", "median s", "min s", "max s"):
        table.add_column(col, justify="left" if col.startswith("from") else "right")
    for label, values in rows.items():
        table.add_row(
            label,
            f"{statistics.median(values):.3f}",
            f"{min(values):.3f}",
            f"{max(values):.3f}",
        )
    console = Console()
    console.print(table)
    console.print(f"the furnace's driver reported: {description!r}")


if __name__ == "__main__":
    main()
