"""Transactions of the store under concurrent writers: no ``database is locked`` half-way.

SQLite refuses to upgrade a deferred (reader) transaction to a writer when another
connection wrote since its snapshot, and does so at once, whatever the busy timeout. Every
transaction that may write therefore begins with ``BEGIN IMMEDIATE``; read-only ones stay
readers. These tests run real threads against one database file (and PostgreSQL).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.api.auth import note_use
from controller.store import add_event, make_engine, migrate, session_factory, transaction
from models.errors import StoreError
from models.tables import ApiTokenRow, EventRow
from tests.controller.api_store import make_users


def _read_then_write(factory: sessionmaker[Session], n: int, errors: list[str]) -> None:
    for i in range(n):
        try:
            with transaction(factory) as s:
                s.scalar(select(func.count()).select_from(EventRow))  # read first ...
                add_event(s, "test.write", f"write {i}")  # ... then write
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")


def test_concurrent_read_then_write_transactions_all_commit(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    errors: list[str] = []
    threads = [
        threading.Thread(target=_read_then_write, args=(factory, 30, errors)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with transaction(factory, read_only=True) as s:
        written = s.scalar(
            select(func.count()).select_from(EventRow).where(EventRow.kind == "test.write")
        )
    engine.dispose()
    assert errors == []
    assert written == 6 * 30


def test_a_read_only_transaction_refuses_to_write(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with pytest.raises(StoreError, match="read-only"), transaction(factory, read_only=True) as s:
        add_event(s, "test.write", "must not land")
    with transaction(factory, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(EventRow)) == 0
    engine.dispose()


def test_readers_go_on_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    factory = session_factory(engine)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        with transaction(factory, read_only=True) as s:
            assert s.scalar(select(func.count()).select_from(EventRow)) == 0
        with (
            pytest.raises(Exception, match="locked"),
            transaction(factory, lock_timeout_s=0.05) as s,
        ):
            add_event(s, "test.write", "waits for the lock, briefly")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    engine.dispose()


def test_recording_a_token_use_never_fails_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    factory = session_factory(engine)
    token = make_users(factory, 1000)["viewer"]
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING, logger="controller.api.auth"):
            note_use(factory, token)  # returns although the database is locked
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "token use not recorded" in caplog.text
    note_use(factory, token)  # the lock is gone: now it is recorded
    with transaction(factory, read_only=True) as s:
        used = s.scalars(select(ApiTokenRow.last_used_at)).all()
    assert sum(u is not None for u in used) == 1
    engine.dispose()
