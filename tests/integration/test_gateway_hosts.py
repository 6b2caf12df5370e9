"""Instrument gateways on other hosts, and a network link cut in the middle of a campaign.

Two Linux network namespaces stand in for two lab PCs, each joined to this host by a veth
pair with addresses of its own (``10.77.N.1`` here, ``10.77.N.2`` in the namespace). Each
runs ``sdlab instruments serve LAB.toml``, hosting two simulated instruments bound to the
namespace's address and secured with CURVE keys: the first PC its furnaces, the second its
measuring stations. Every experiment anneals on a furnace, then measures on a station.

A campaign runs from this host (the runner, on the session's Ray, with a SQLite store).
Once a few experiments are done the furnace PC's link is cut (``ip link set ... down`` on
the host side) until the controller has marked both furnaces UNKNOWN with an alarm, and
for a while after; then the link comes back. The two furnaces' action timeouts differ, so
that each recovery rule is seen: ``furnace-1`` (60 s) outlives the cut, so its step in
flight is collected under its own request id once the link is back; ``furnace-2`` (3 s)
gives up during the cut, so its step is INTERRUPTED and run again as a flagged re-run, and
the request it gave up on is cancelled when the furnace answers again.

``CUT_S`` is how long the link stays down at least: 30 s, as the issue asks, well past
the detection (``silent_after_s`` plus a heartbeat, about 3.5 s) and ``furnace-2``'s action
timeout, and still inside ``furnace-1``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controller.runner import RunOptions, run
from controller.store import make_engine, session_factory, submit_command, transaction
from controller.work import ControllerOptions
from instruments.client import InstrumentClient
from instruments.protocol import UNKNOWN_REQUEST, RequestState, RequestStatus
from instruments.security import CurveClientKeys, curve_available
from models.errors import InstrumentError, InstrumentTimeoutError
from models.status import ExperimentStatus, InstrumentState, StepStatus
from models.tables import CampaignRow, EventRow, InstrumentRow
from sim.campaign_toml import problem_toml
from tests.integration import netns
from tests.integration.helpers import (
    check_history,
    experiments,
    journal,
    record_figures,
    steps,
)
from tests.integration.netns import (
    Keys,
    LabPC,
    ip,
    make_keys,
    must,
    ready,
    start_gateway,
)

lab_pcs = netns.lab_pcs  # the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not curve_available(), reason="libzmq built without CURVE"),
]

CUT_S = 30.0
"""Shortest time the furnace PC's link stays down, in seconds (the issue asks for 30)."""

HOLD_S = 3.0
"""How long the link stays down after both furnaces are marked UNKNOWN, at least, in s."""

DONE_BEFORE_CUT = 3
"""Experiments completed before the link is cut."""

BUDGET = 10

CAMPAIGN = "gateway-hosts"

PORTS = (5801, 5802)
"""The two instruments' ports on each PC (each namespace has its own port space)."""

RELIABILITY = """
[reliability]
max_attempts = 10
backoff_s = 0.2
backoff_max_s = 1.0
quarantine_after = 20
quarantine_s = 1.0
heartbeat_s = 0.5
silent_after_s = 3.0
"""


@dataclass(frozen=True)
class Instrument:
    name: str
    kind: str
    driver: str
    pc: int  # 1 or 2
    port: int
    duration_s: float
    timeout_s: float
    seed: int


INSTRUMENTS = [
    Instrument("furnace-1", "furnace", "sim-furnace", 1, PORTS[0], 1.0, 60.0, 1),
    Instrument("furnace-2", "furnace", "sim-furnace", 1, PORTS[1], 1.0, 3.0, 2),
    Instrument("station-1", "station", "objective-station", 2, PORTS[0], 0.5, 20.0, 3),
    Instrument("station-2", "station", "objective-station", 2, PORTS[1], 0.5, 20.0, 4),
]


def _lab_file(path: Path, pc: int, address: str, keys: Keys) -> Path:
    """The gateway file of one PC: its instruments, bound to its address, over CURVE."""
    text = ""
    for inst in INSTRUMENTS:
        if inst.pc != pc:
            continue
        text += f"""
[[instruments]]
name = "{inst.name}"
kind = "{inst.kind}"
address = "tcp://{address}:{inst.port}"
curve.server_secret_key = "{keys.secret(f"pc{pc}")}"
curve.allowed_clients = "{keys.allowed}"
[instruments.simulated]
driver = "{inst.driver}"
world = "branin"
duration_s = {inst.duration_s}
seed = {inst.seed}
"""
    path.write_text(text)
    return path


def _campaign_file(path: Path, pcs: list[LabPC], keys: Keys) -> Path:
    """The campaign: anneal on a furnace (PC 1), then measure on a station (PC 2)."""
    instruments = ""
    for inst in INSTRUMENTS:
        instruments += f"""
[[instruments]]
name = "{inst.name}"
kind = "{inst.kind}"
address = "tcp://{pcs[inst.pc - 1].ip}:{inst.port}"
timeout_s = {inst.timeout_s}
curve.server_public_key = "{keys.public(f"pc{inst.pc}")}"
curve.client_keys = "{keys.secret("controller")}"
"""
    path.write_text(
        f"""
[campaign]
name = "{CAMPAIGN}"
seed = 5

{problem_toml("branin")}[[workflow]]
kind = "furnace"
action = "measure"

[[workflow]]
kind = "station"
action = "measure"
{instruments}
[planner]
name = "sobol"

[budget]
max_experiments = {BUDGET}
max_failures = {BUDGET}
{RELIABILITY}"""
    )
    return path


# ------------------------------------------------------------------ the store


@dataclass
class Seen:
    """What the store showed while the link was down."""

    in_flight: dict[int, str] = field(default_factory=dict)  # step id -> instrument
    silent: set[str] = field(default_factory=set)


class Store:
    """Short read-only looks at the campaign's store."""

    def __init__(self, db: str) -> None:
        self.engine = make_engine(db)
        self.sessions = session_factory(self.engine)

    def events(self, *kinds: str) -> list[EventRow]:
        with transaction(self.sessions) as s:
            rows = list(
                s.scalars(select(EventRow).where(EventRow.kind.in_(kinds)).order_by(EventRow.id))
            )
            s.expunge_all()
            return rows

    def instruments(self) -> dict[str, InstrumentState]:
        with transaction(self.sessions) as s:
            return {r.name: InstrumentState(r.state) for r in s.scalars(select(InstrumentRow))}

    def abort(self) -> None:
        """Ask the running controller to abort (a failed test must not leave it running)."""
        with transaction(self.sessions) as s:
            campaign = s.scalars(select(CampaignRow).where(CampaignRow.name == CAMPAIGN)).first()
            if campaign is not None:
                submit_command(s, campaign.id, "abort", actor="test")


def _wait(what: str, check: Any, limit_s: float = 120.0, thread: Any = None) -> Any:
    """Poll ``check()`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if thread is not None:
            assert thread.is_alive(), f"the campaign ended while waiting for {what}"
        with contextlib.suppress(Exception):  # the store may not exist yet
            got = check()
            if got:
                return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _done(db: str) -> int:
    return sum(r["status"] == ExperimentStatus.COMPLETED for r in experiments(db))


def _running_on(db: str, names: set[str]) -> dict[int, str]:
    return {
        st.id: st.instrument or ""
        for st in steps(db)
        if st.status == StepStatus.RUNNING and st.instrument in names
    }


# ------------------------------------------------------------------ the test


@pytest.mark.usefixtures("ray_address")
def test_a_cut_link_to_a_gateway_loses_nothing_and_repeats_nothing(
    tmp_path: Path, lab_pcs: list[LabPC]
) -> None:
    keys = make_keys(tmp_path / "keys")
    journal_dir = tmp_path / "journals"
    # The gateways start up (imports take seconds) while the controller does; it keeps
    # trying to reach its instruments for connect_timeout_s.
    gateways = [
        start_gateway(pc, _lab_file(tmp_path / f"pc{i}.toml", i, pc.ip, keys), journal_dir)
        for i, pc in enumerate(lab_pcs, start=1)
    ]
    path = _campaign_file(tmp_path / "campaign.toml", lab_pcs, keys)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    furnaces = {i.name for i in INSTRUMENTS if i.pc == 1}
    cut = lab_pcs[0]

    result: dict[str, Any] = {}

    def campaign() -> None:
        try:
            opts = RunOptions(
                db_url=db,
                progress=False,
                journal_dir=journal_dir,
                controller=ControllerOptions(
                    use_ray_planner=False, rpc_timeout_s=2.0, connect_timeout_s=90.0
                ),
            )
            result["code"] = run(path, opts)
        except BaseException as exc:  # reported by the test thread
            result["error"] = exc

    runner = threading.Thread(target=campaign, name="campaign", daemon=True)
    runner.start()
    store = Store(db)
    seen = Seen()
    try:
        for pc, proc in zip(lab_pcs, gateways, strict=True):
            ready(pc, proc)
        _wait(
            f"{DONE_BEFORE_CUT} experiments done",
            lambda: _done(db) >= DONE_BEFORE_CUT,
            thread=runner,
        )
        must(ip("link", "set", cut.host_if, "down"))
        cut_at = time.monotonic()
        try:

            def look() -> None:
                # RUNNING a second into the cut: no answer can have reached the controller
                if time.monotonic() > cut_at + 1.0:
                    seen.in_flight.update(_running_on(db, furnaces))

            def both_unknown() -> bool:
                look()
                alarms = store.events("alarm.instrument_silent")
                seen.silent = {e.instrument or "" for e in alarms}
                states = store.instruments()
                unknown = {n for n, st in states.items() if st == InstrumentState.UNKNOWN}
                return furnaces <= seen.silent and furnaces <= unknown

            # the alarm is written first, the instruments' rows right after it
            _wait("both furnaces UNKNOWN with an alarm", both_unknown, thread=runner)
            until = max(cut_at + CUT_S, time.monotonic() + HOLD_S)
            while time.monotonic() < until:
                look()
                time.sleep(0.1)
            assert seen.silent == furnaces, "only the cut PC's instruments may go silent"
            assert store.instruments()["station-1"] != InstrumentState.UNKNOWN
        finally:
            must(ip("link", "set", cut.host_if, "up"))
        cut_s = time.monotonic() - cut_at
        runner.join(timeout=180)
        assert not runner.is_alive(), "the campaign did not finish after the link came back"
    finally:
        if runner.is_alive():
            with contextlib.suppress(Exception):
                store.abort()
            runner.join(timeout=60)
        store.engine.dispose()
    if "error" in result:
        raise result["error"]
    assert result["code"] == 0

    # The campaign reached its budget; every experiment is done, or failed with a reason.
    rows = experiments(db)
    assert sum(r["status"] == ExperimentStatus.COMPLETED for r in rows) == BUDGET
    for r in rows:
        assert r["status"] in (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED), r
    store = Store(db)
    try:
        back = {e.instrument for e in store.events("instrument.back")}
        assert furnaces <= back
        assert all(s != InstrumentState.UNKNOWN for s in store.instruments().values())
        orphans = store.events("instrument.orphan_cancelled")
    finally:
        store.engine.dispose()

    # Nothing lost, nothing run twice: request ids unique in the store and in the journals,
    # every later attempt of a step flagged as a re-run, every value the world's truth.
    figures = check_history(db, [], journal_dir, "branin")
    started = [
        j["request_id"]
        for f in journal_dir.glob("*.jsonl")
        for j in journal(f)
        if j["state"] == "running"
    ]
    assert len(started) == len(set(started))

    # The steps in flight across the cut went as the recovery rules say.
    by_step = {st["request_id"]: (r, st) for r in rows for st in r["steps"]}
    step_rows = {st.id: st for st in steps(db)}
    collected = rerun = 0
    for step_id, instrument in seen.in_flight.items():
        st = step_rows[step_id]
        r, _ = by_step[st.request_id]
        later = [x for x in r["steps"] if x["index"] == st.index and x["attempt"] > st.attempt]
        if instrument == "furnace-1":  # outlived the cut: collected under its own id
            assert st.status == StepStatus.COMPLETED, (st.request_id, st.status, st.error)
            assert not later
            assert st.request_id in started
            collected += 1
        else:  # gave up during the cut: interrupted, then run again, flagged
            assert st.status == StepStatus.INTERRUPTED, (st.request_id, st.status, st.error)
            assert later
            assert all(x["rerun"] for x in later)
            assert any(x["status"] == StepStatus.COMPLETED for x in later)
            rerun += 1
    assert collected >= 1, seen.in_flight
    assert rerun >= 1, seen.in_flight
    assert any(e.instrument == "furnace-2" for e in orphans)
    record_figures(
        "gateway-link-cut",
        {"cut_s": round(cut_s, 1), "collected": collected, "rerun_in_flight": rerun, **figures},
    )


# ------------------------------------------------------------------ a delayed submit

LATE_CUT_S = 3.0
"""How long the link stays down after the client gave up on its submit, in seconds: long
enough that TCP's next retransmission of the submit comes after the cancel."""


def test_a_submit_delayed_by_a_cut_link_does_not_run_after_its_cancel(
    tmp_path: Path, lab_pcs: list[LabPC]
) -> None:
    """A submit written just after the link went down waits in this host's TCP stack. The
    client gives up on it, and cancels it once the link is back (as the controller cancels
    a request it gave up on when the instrument answers again); the cancel finds nothing.
    Then TCP delivers the old submit: the gateway must record it cancelled, not run it."""
    keys = make_keys(tmp_path / "keys")
    pc = lab_pcs[0]
    lab = tmp_path / "pc1.toml"
    lab.write_text(
        f"""
[[instruments]]
name = "station-1"
kind = "station"
address = "tcp://{pc.ip}:{PORTS[0]}"
curve.server_secret_key = "{keys.secret("pc1")}"
curve.allowed_clients = "{keys.allowed}"
[instruments.simulated]
world = "branin"
duration_s = 0.2
"""
    )
    journal_dir = tmp_path / "journals"
    ready(pc, start_gateway(pc, lab, journal_dir))
    curve = CurveClientKeys.load(keys.secret("controller"), keys.public("pc1"))
    rid = "late-1"

    async def go() -> RequestState:
        async with InstrumentClient(
            f"tcp://{pc.ip}:{PORTS[0]}", name="station-1", timeout_s=1.0, curve=curve
        ) as client:
            await client.describe()  # the connection is up
            must(ip("link", "set", pc.host_if, "down"))
            try:
                with pytest.raises(InstrumentTimeoutError):
                    await client.submit(rid, "measure", {"x1": 1.0, "x2": 2.0})
                await asyncio.sleep(LATE_CUT_S)
            finally:
                must(ip("link", "set", pc.host_if, "up"))
            # give up on it; the first call after the cut may meet a socket the cut broke
            for _ in range(10):
                try:
                    await client.cancel(rid)
                except InstrumentError as exc:
                    if exc.code == UNKNOWN_REQUEST:
                        break
                    continue
                raise AssertionError("the submit arrived before the cancel")
            else:
                raise AssertionError("the cancel was never answered")
            # the delayed copy arrives when TCP sends it again
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    return await client.status(rid, wait_s=1.0)
                except InstrumentError as exc:
                    if exc.code != UNKNOWN_REQUEST:
                        raise
                await asyncio.sleep(0.2)
            raise AssertionError("the delayed submit never arrived")

    state = asyncio.run(go())
    assert state.state is RequestStatus.CANCELLED, state
    assert state.started_at is None
    lines = journal(journal_dir / "station-1.jsonl")
    assert [j["state"] for j in lines if j["request_id"] == rid] == ["cancelled"]
