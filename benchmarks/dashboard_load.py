"""Dashboard under load: parallel clients against ``sdlab serve`` while controllers write.

A real ``sdlab serve`` (uvicorn, its own process) on a fresh store, two writer processes
that write as controllers do (through the store's own functions, in ``transaction()``
blocks that read and then write: commands applied, experiments and steps recorded,
instrument heartbeats, event-log entries), and ``clients`` threads that each send
``requests`` mixed requests on loopback: logins through the form, token reads (campaign
list and detail, events, charts, a command's status), operator commands (pause / resume)
and a short live stream. Every answer's status and latency is kept per route.

The same load runs twice on SQLite, first with the old deferred transactions (``sdlab
serve --sqlite-deferred``, and the writers' engines likewise) and then with ``BEGIN
IMMEDIATE`` for writers, and once on PostgreSQL when ``--postgres URL`` is given. It prints
one table per run: requests, 5xx answers, p50 and p95 latency per route.

Usage:  python benchmarks/dashboard_load.py [--clients 8] [--requests 500]
            [--postgres postgresql://postgres@127.0.0.1:5432/test]
        python benchmarks/dashboard_load.py writer DB_URL CAMPAIGN_ID SECONDS [--deferred]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from controller.api.users import add_user
from controller.store import (
    add_event,
    add_experiment,
    add_step,
    create_campaign,
    finish_command,
    make_engine,
    migrate,
    pending_commands,
    session_factory,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    transaction,
    upsert_instrument,
)
from models.campaign import CampaignSpec
from models.status import CampaignStatus, ExperimentStatus, InstrumentState, StepStatus
from models.tables import CampaignRow

ROOT = Path(__file__).resolve().parents[1]

PASSWORD = "load-test-password"
"""Password of every user of the load test."""


def campaign_spec(name: str) -> CampaignSpec:
    """A one-parameter campaign for the writers to fill."""
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": name, "seed": 1},
            "parameters": [{"type": "continuous", "name": "x", "lower": 0.0, "upper": 1.0}],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:5601"}
            ],
            "planner": {"name": "random"},
            "budget": {"max_experiments": 10**6},
        }
    )


# --------------------------------------------------------------------------- writers


def write_like_a_controller(db_url: str, campaign_id: int, seconds: float, deferred: bool) -> int:
    """Write to the store as a controller's loop does, for ``seconds``; returns the passes.

    Each pass applies the pending commands, records a finished experiment with its step,
    and a heartbeat of its instrument, each in a read-then-write transaction.
    """
    engine = make_engine(db_url, immediate_writes=not deferred)
    factory = session_factory(engine)
    rng = random.Random(os.getpid())
    end = time.monotonic() + seconds
    passes = 0
    while time.monotonic() < end:
        with transaction(factory) as s:
            campaign = s.get(CampaignRow, campaign_id)
            assert campaign is not None
            for cmd in pending_commands(s, campaign_id):
                target = {"pause": CampaignStatus.PAUSED, "resume": CampaignStatus.RUNNING}
                wanted = target.get(cmd.command)
                if wanted is not None and campaign.status != wanted:
                    set_campaign_status(s, campaign, wanted, actor=cmd.actor)
                    finish_command(s, cmd, applied=True, result=f"campaign {wanted.value}")
                else:
                    finish_command(s, cmd, applied=False, result="nothing to do")
        with transaction(factory) as s:
            e = add_experiment(s, campaign_id, {"x": rng.random()}, status=ExperimentStatus.QUEUED)
            set_experiment_status(s, e, ExperimentStatus.RUNNING)
            step = add_step(
                s, e, index=0, kind="station", action="measure", parameters={}, request_id=str(e.id)
            )
            set_step_status(s, step, StepStatus.RUNNING, instrument="station-1")
            set_step_status(s, step, StepStatus.COMPLETED)
            set_experiment_status(s, e, ExperimentStatus.COMPLETED)
            add_event(s, "experiment.completed", f"experiment {e.id}", campaign_id=campaign_id)
        with transaction(factory) as s:
            upsert_instrument(
                s,
                campaign_id,
                "station-1",
                kind="station",
                address="tcp://127.0.0.1:5601",
                state=InstrumentState.IDLE,
            )
        passes += 1
        time.sleep(0.01)
    engine.dispose()
    return passes


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextlib.contextmanager
def serve(db_url: str, data_dir: Path, deferred: bool) -> Iterator[str]:
    """``sdlab serve`` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "controller.cli", "serve", "--db", db_url, "--port", str(port)]
    cmd += ["--data-dir", str(data_dir)] + (["--sqlite-deferred"] if deferred else [])
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sdlab serve exited: {(data_dir / 'serve.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > end:
                raise RuntimeError("sdlab serve did not answer /health within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- clients


@dataclass
class Tally:
    """Answers per route: status codes and latencies (seconds)."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses.setdefault(route, []).append(status)
            self.latencies.setdefault(route, []).append(seconds)

    def server_errors(self) -> int:
        """Answers 500 and above, over every route, plus connections the server dropped."""
        bad = sum(1 for codes in self.statuses.values() for c in codes if c >= 500)
        return bad + len(self.errors)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _client(base: str, tokens: dict[str, str], cid: int, n: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    api = httpx.Client(base_url=base, timeout=60)
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    view = {"Authorization": f"Bearer {tokens['viewer']}"}
    command_id = 1

    def timed(route: str, method: str, url: str, **kw: object) -> httpx.Response:
        t0 = time.perf_counter()
        r = api.request(method, url, **kw)  # type: ignore[arg-type]
        tally.add(route, r.status_code, time.perf_counter() - t0)
        return r

    for _ in range(n):
        pick = rng.random()
        try:
            if pick < 0.08:
                form = api.get("/login")
                token = _CSRF.search(form.text)
                data = {"name": "operator", "secret": PASSWORD}
                data["csrf_token"] = token.group(1) if token else ""
                timed("POST /login", "POST", "/login", data=data)
                api.cookies.clear()
            elif pick < 0.20:
                what = "pause" if rng.random() < 0.5 else "resume"
                r = timed(f"POST {what}", "POST", f"/api/campaigns/{cid}/{what}", headers=op)
                if r.status_code == 202:
                    command_id = int(r.json()["command_id"])
            elif pick < 0.25:
                t0 = time.perf_counter()
                url = f"/api/campaigns/{cid}/stream?max_s=1"
                with api.stream("GET", url, headers=view) as r:
                    for _chunk in r.iter_bytes():
                        pass
                tally.add("GET stream", r.status_code, time.perf_counter() - t0)
            elif pick < 0.45:
                timed("GET campaigns", "GET", "/api/campaigns", headers=view)
            elif pick < 0.65:
                timed("GET campaign", "GET", f"/api/campaigns/{cid}", headers=view)
            elif pick < 0.80:
                timed("GET events", "GET", f"/api/events?campaign_id={cid}", headers=view)
            elif pick < 0.90:
                timed("GET charts", "GET", f"/api/campaigns/{cid}/charts", headers=view)
            else:
                timed("GET command", "GET", f"/api/commands/{command_id}", headers=op)
        except httpx.HTTPError as exc:  # a dropped connection counts as a failure
            with tally.lock:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
    api.close()


def prepare(db_url: str) -> tuple[int, dict[str, str]]:
    """Migrate the store, add one user per role and a RUNNING campaign."""
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    tokens: dict[str, str] = {}
    with transaction(factory) as s:
        for role in ("viewer", "operator", "admin"):
            _, tokens[role] = add_user(s, role, role, iterations=200_000, password=PASSWORD)
        c = create_campaign(s, campaign_spec("load"), seed=1, max_experiments=10**6)
        set_campaign_status(s, c, CampaignStatus.RUNNING)
        cid = c.id
    with transaction(factory, read_only=True) as s:
        assert s.scalar(select(CampaignRow.id).where(CampaignRow.id == cid)) == cid
    engine.dispose()
    return cid, tokens


def run_load(
    db_url: str, data_dir: Path, *, clients: int, requests: int, deferred: bool = False
) -> Tally:
    """Run the load once: server, two writers, ``clients`` x ``requests`` requests."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cid, tokens = prepare(db_url)
    tally = Tally()
    with serve(db_url, data_dir, deferred) as base:
        writer = [sys.executable, str(Path(__file__).resolve()), "writer", db_url, str(cid)]
        writers = [
            subprocess.Popen(
                [*writer, "600", *(["--deferred"] if deferred else [])],
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=(data_dir / f"writer{i}.log").open("wb"),
            )
            for i in range(2)
        ]
        try:
            threads = [
                threading.Thread(target=_client, args=(base, tokens, cid, requests, i, tally))
                for i in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in writers:
                w.terminate()
            for w in writers:
                w.wait(timeout=30)
    return tally


def report(title: str, tally: Tally) -> None:
    """Print one table: requests, 5xx, p50 and p95 latency per route."""
    print(f"\n{title}")
    print(f"{'route':<16}{'requests':>9}{'5xx':>6}{'p50 ms':>9}{'p95 ms':>9}")
    for route in sorted(tally.statuses):
        codes = tally.statuses[route]
        lat = sorted(tally.latencies[route])
        p50 = statistics.median(lat) * 1000
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000
        bad = sum(c >= 500 for c in codes)
        print(f"{route:<16}{len(codes):>9}{bad:>6}{p50:>9.1f}{p95:>9.1f}")
    print(f"{'all':<16}{sum(map(len, tally.statuses.values())):>9}{tally.server_errors():>6}")
    if tally.errors:
        print(f"  {len(tally.errors)} requests lost their connection, e.g. {tally.errors[0]}")


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "writer":
        w = argparse.ArgumentParser(prog="dashboard_load.py writer")
        w.add_argument("db_url")
        w.add_argument("campaign_id", type=int)
        w.add_argument("seconds", type=float)
        w.add_argument("--deferred", action="store_true")
        o = w.parse_args(args[1:])
        write_like_a_controller(o.db_url, o.campaign_id, o.seconds, o.deferred)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--postgres", default=None, help="also run on this PostgreSQL database")
    o = p.parse_args(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for deferred in (True, False):
            label = "deferred BEGIN (before)" if deferred else "BEGIN IMMEDIATE (after)"
            url = f"sqlite:///{root / ('deferred' if deferred else 'immediate')}.db"
            t = run_load(
                url, root / label[:8], clients=o.clients, requests=o.requests, deferred=deferred
            )
            report(f"SQLite, {label}: {o.clients} clients x {o.requests} requests", t)
        if o.postgres:
            with fresh_schema(o.postgres) as url:
                t = run_load(url, root / "pg", clients=o.clients, requests=o.requests)
            report(f"PostgreSQL: {o.clients} clients x {o.requests} requests", t)
    return 0


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """``url`` with a new, empty schema as its search path; the schema is dropped after."""
    import psycopg

    libpq = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    schema = f"sdlab_load_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    sys.exit(main())
