"""The hash-chained audit record (controller/store/audit.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from controller.cli import cli
from controller.store import (
    add_event,
    audit,
    finish_command,
    set_campaign_status,
    submit_command,
    transaction,
)
from models.status import CampaignStatus
from models.tables import AuditEntryRow, CampaignRow, EventRow

ROOT = Path(__file__).parents[2]


def entries(factory: sessionmaker[Session]) -> list[AuditEntryRow]:
    with transaction(factory) as s:
        return list(s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq)))


def verdict(factory: sessionmaker[Session]) -> audit.Verdict:
    with transaction(factory) as s:
        return audit.verify(s)


def write_some(factory: sessionmaker[Session], campaign_id: int, n: int = 4) -> None:
    for i in range(n):
        with transaction(factory) as s:
            add_event(s, "test.note", f"note {i}", campaign_id=campaign_id, data={"i": i})


def tamper(engine: Engine, *statements: str) -> None:
    """Run ``statements`` as someone with the rights to drop the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER audit_entries_append_only ON audit_entries"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
            conn.execute(text("DROP TRIGGER audit_entries_no_delete"))
        for sql in statements:
            conn.execute(text(sql))


def test_events_and_commands_are_chained_with_who_when_what_and_why(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        row = s.get_one(CampaignRow, campaign_id)
        set_campaign_status(s, row, CampaignStatus.RUNNING, actor="cli:ada", reason="go")
    with transaction(factory) as s:
        cmd = submit_command(
            s, campaign_id, "approve", {"experiments": [3, 4]}, actor="operator:grace"
        )
        add_event(s, "command.requested", "grace asked", campaign_id=campaign_id, actor=cmd.actor)
    with transaction(factory) as s:
        submit_command(
            s, campaign_id, "reject", {"experiments": [5], "reason": "too hot"}, actor="op:lin"
        )
    with transaction(factory) as s:
        finish_command(s, s.get_one(type(cmd), cmd.id), applied=True, result="approved")

    chain = entries(factory)
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    by_action = {e.action: e for e in chain}
    created = by_action["campaign.created"]
    assert created.prev_hash == audit.GENESIS
    running = by_action["campaign.running"]
    assert (running.actor, running.old_value, running.new_value, running.reason) == (
        "cli:ada",
        '"CREATED"',
        '"RUNNING"',
        "go",
    )
    assert datetime.fromisoformat(running.recorded_at).utcoffset() is not None
    approve = by_action["command.approve"]
    assert (approve.actor, approve.meaning, approve.command_id) == (
        "operator:grace",
        "approved for execution",
        cmd.id,
    )
    assert approve.new_value == '{"args":{"experiments":[3,4]},"command":"approve"}'
    reject = by_action["command.reject"]
    assert (reject.actor, reject.meaning, reject.reason) == (
        "op:lin",
        "rejected: not to be executed",
        "too hot",
    )
    with transaction(factory) as s:  # every event is in the record, once
        event_ids = set(s.scalars(select(EventRow.id)))
    assert sorted(e.event_id for e in chain if e.event_id is not None) == sorted(event_ids)
    for e in chain[1:]:
        assert e.prev_hash == chain[e.seq - 2].hash
    result = verdict(factory)
    assert result.intact
    assert (result.entries, result.head_hash) == (len(chain), chain[-1].hash)


def test_what_is_rolled_back_leaves_no_entry(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    before = len(entries(factory))

    def fails() -> None:
        with transaction(factory) as s:
            add_event(s, "test.lost", "rolled back", campaign_id=campaign_id)
            s.flush()
            raise RuntimeError("after the event was written")

    with pytest.raises(RuntimeError):
        fails()
    with transaction(factory) as s:
        savepoint = s.begin_nested()
        add_event(s, "test.lost", "savepoint rolled back", campaign_id=campaign_id)
        s.flush()
        savepoint.rollback()
        audit.record(
            s, "manual.result", "y entered by hand", actor="operator:ada", new_value={"y": 1.5}
        )
    chain = entries(factory)
    assert [e.action for e in chain[before:]] == ["manual.result"]
    assert chain[-1].new_value == '{"y":1.5}'
    assert verdict(factory).intact


def test_the_database_refuses_to_change_or_delete_an_entry(
    engine: Engine, factory: sessionmaker[Session], campaign_id: int
) -> None:
    for sql in ("UPDATE audit_entries SET reason = 'x'", "DELETE FROM audit_entries"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    assert verdict(factory).intact


@pytest.mark.parametrize(
    ("statements", "broken_at", "words"),
    [
        (["UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 3"], 3, "edited"),
        (["UPDATE audit_entries SET actor = 'someone' WHERE seq = 2"], 2, "edited"),
        (["DELETE FROM audit_entries WHERE seq = 2"], 3, "entry 2 before it is missing"),
        (
            [  # entries 2 and 3 swap places
                "UPDATE audit_entries SET seq = -1 WHERE seq = 2",
                "UPDATE audit_entries SET seq = 2 WHERE seq = 3",
                "UPDATE audit_entries SET seq = 3 WHERE seq = -1",
            ],
            2,
            "does not follow entry 1",
        ),
        (["DELETE FROM audit_entries WHERE seq >= 4"], 4, "removed from its end"),
    ],
    ids=["reason-edited", "actor-edited", "deleted", "reordered", "tail-cut"],
)
def test_tampering_is_caught_naming_the_first_broken_entry(
    engine: Engine,
    factory: sessionmaker[Session],
    campaign_id: int,
    statements: list[str],
    broken_at: int,
    words: str,
) -> None:
    write_some(factory, campaign_id)  # entries 1 (campaign.created) to 5
    assert verdict(factory).intact
    tamper(engine, *statements)
    result = verdict(factory)
    assert (result.broken_at, result.intact) == (broken_at, False)
    assert words in str(result.problem)


def test_sdlab_audit_verify_exits_0_intact_and_1_broken(
    db_url: str, engine: Engine, factory: sessionmaker[Session], campaign_id: int
) -> None:
    write_some(factory, campaign_id, 2)
    ok = CliRunner().invoke(cli, ["audit", "verify", "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert "intact: 3 entries" in ok.output
    tamper(engine, "UPDATE audit_entries SET message = 'rewritten' WHERE seq = 2")
    broken = CliRunner().invoke(cli, ["audit", "verify", "--db", db_url])
    assert broken.exit_code == 1
    assert "BROKEN at entry 2" in broken.output


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from controller.store import add_event, make_engine, session_factory, transaction

    url, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    factory = session_factory(make_engine(url))
    Path(f"{go}.{tag}").touch()
    while not go.exists():
        time.sleep(0.01)
    for i in range(n):
        with transaction(factory) as s:
            add_event(s, "test.concurrent", f"{tag} {i}", data={"writer": tag, "i": i})
    """
)


def test_concurrent_appends_from_two_processes_keep_one_chain(
    db_url: str, factory: sessionmaker[Session], campaign_id: int, tmp_path: Path
) -> None:
    n = 40
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, tag, str(n), str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.{tag}").exists() for tag in ("a", "b")):
            assert time.monotonic() < deadline, "the writers did not start"
            assert all(w.poll() is None for w in writers), [w.stderr for w in writers]
            time.sleep(0.05)
        go.touch()  # both start appending at once
        for w in writers:
            _, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    chain = entries(factory)
    appended = [e for e in chain if e.action == "test.concurrent"]
    assert len(appended) == 2 * n
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    result = verdict(factory)
    assert result.intact, result
    assert result.entries == len(chain)
