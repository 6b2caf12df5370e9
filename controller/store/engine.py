"""Engines, schema migrations, sessions and transactions of the experiment store.

SQLite is the embedded default and PostgreSQL (through psycopg 3) the production database.
SQLite connections are tuned for one writer and concurrent readers: WAL journal,
``synchronous=NORMAL``, foreign keys enforced and a 30 s busy timeout. pysqlite's own
transaction handling is switched off in favour of an explicit ``BEGIN`` (the recipe of the
SQLAlchemy SQLite dialect docs), so DDL, and therefore each migration, is transactional and
savepoints work.

A transaction that may write begins with ``BEGIN IMMEDIATE``: it takes SQLite's write lock
up front, waiting up to the busy timeout for another writer to finish. A plain (deferred)
``BEGIN`` would start as a reader and try to upgrade at its first write; when another
connection has written since the transaction's snapshot, SQLite cannot upgrade it and
answers ``database is locked`` at once, whatever the busy timeout (the busy handler is not
called for an upgrade that could deadlock). Controllers and the dashboard read then write in
one transaction all the time, so every :func:`transaction` is a writer unless its caller
says ``read_only=True``; read-only ones keep the deferred ``BEGIN`` and never wait in WAL
mode.

The schema is created and upgraded only by Alembic (:func:`migrate`); the migration scripts
live inside this package, so an installed sdlab migrates its database from any working
directory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from models.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Alembic's script location, inside the installed package."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite connection waits for a lock before giving up, in milliseconds."""

WRITES = "sdlab_writes"
"""Connection execution option: ``False`` for a transaction that only reads."""

BUSY_TIMEOUT_MS = "sdlab_busy_timeout_ms"
"""Connection execution option: how long this transaction waits for a lock (milliseconds)."""


def _normalise_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the psycopg 3 driver for PostgreSQL URLs without one."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """``url`` as text with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str | URL, *, immediate_writes: bool = True, **kwargs: Any) -> Engine:
    """Create an engine for the store's database.

    Args:
        url: A SQLAlchemy database URL: ``sqlite:///path/to/sdlab.db`` (``sqlite://`` for an
            in-memory database shared by every session of the engine), or
            ``postgresql://user:password@host/db`` (``postgresql://`` and ``postgres://``
            are mapped to the psycopg 3 driver, ``postgresql+psycopg://``).
        immediate_writes: SQLite only: begin transactions that may write with ``BEGIN
            IMMEDIATE`` (the default). ``False`` restores deferred transactions, which fail
            with ``database is locked`` under concurrent writers; it exists only so that
            ``benchmarks/dashboard_load.py`` can compare the two.
        **kwargs: Passed on to :func:`sqlalchemy.create_engine`.

    Returns:
        The engine. Nothing is connected yet; :func:`migrate` is the first to connect.

    Raises:
        StoreError: If ``url`` is not a database URL.
    """
    parsed = _normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        if _is_sqlite_memory(parsed):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _tune_sqlite(engine, immediate_writes)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(parsed, **kwargs)
    return engine


def _tune_sqlite(engine: Engine, immediate_writes: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) decide when transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        timeout_ms = int(options.get(BUSY_TIMEOUT_MS, SQLITE_BUSY_TIMEOUT_MS))
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {timeout_ms}")
        writes = bool(options.get(WRITES, True))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes and immediate_writes else "BEGIN")


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations inside this package.

    The configuration carries no database URL; :func:`migrate` hands Alembic an open
    connection through ``config.attributes["connection"]``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    """The newest schema revision this sdlab version knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StoreError("no schema migrations found")
    return head


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The schema revision(s) recorded in the database; empty before the first migration."""
    return tuple(MigrationContext.configure(connection).get_current_heads())


def migrate(engine: Engine) -> None:
    """Bring the database schema up to date (``alembic upgrade head``), in one transaction.

    Running it on an up-to-date database does nothing.

    Args:
        engine: Engine from :func:`make_engine`.

    Raises:
        StoreError: If the database cannot be reached, records a schema revision this sdlab
            version does not know (it was migrated by a newer sdlab), or a migration fails.
            The message names the URL, with its password masked.
    """
    where = safe_url(engine.url)
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in script.walk_revisions()}
    try:
        with engine.begin() as connection:
            present = current_revisions(connection)
            unknown = [rev for rev in present if rev not in known]
            if unknown:
                raise StoreError(
                    f"database {where} is at schema revision {', '.join(unknown)}, which this "
                    f"sdlab version does not know (newest known: {script.get_current_head()}); "
                    "it was probably migrated by a newer sdlab"
                )
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except StoreError:
        raise
    except CommandError as exc:
        raise StoreError(f"cannot migrate database {where}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach or migrate database {where}: {exc}") from exc
    logger.info("database %s is at schema revision %s", where, script.get_current_head())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    Objects stay usable after their transaction commits (``expire_on_commit=False``), so a
    row returned from a :func:`transaction` block can be read after the block.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(
    factory: sessionmaker[Session],
    *,
    read_only: bool = False,
    lock_timeout_s: float | None = None,
) -> Iterator[Session]:
    """A session inside one transaction: committed when the block ends, rolled back on error.

    Args:
        factory: A factory from :func:`session_factory`.
        read_only: The block only reads. On SQLite it then starts as a reader (deferred
            ``BEGIN``) and never waits for a writer; every other transaction takes the write
            lock when it begins (``BEGIN IMMEDIATE``), so that it cannot fail half-way with
            ``database is locked``. A read-only block that writes anyway raises
            :class:`~models.errors.StoreError` before anything is committed.
        lock_timeout_s: Wait at most this long for a lock (SQLite's busy timeout, or
            PostgreSQL's ``lock_timeout``) instead of the default 30 s (SQLite) or forever
            (PostgreSQL); for best-effort writes that must not hold up a request.

    Yields:
        The session; pass it to the functions of :mod:`controller.store.repo`.

    Raises:
        StoreError: If a read-only block changed something.
    """
    options: dict[str, Any] = {}
    if read_only:
        options[WRITES] = False
    if lock_timeout_s is not None:
        options[BUSY_TIMEOUT_MS] = max(1, int(lock_timeout_s * 1000))
    with factory() as session, session.begin():
        if options:
            conn = session.connection(execution_options=options)
            if lock_timeout_s is not None and conn.dialect.name == "postgresql":
                ms = options[BUSY_TIMEOUT_MS]
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
        if read_only:
            event.listen(session, "before_flush", _refuse_flush)
        yield session


def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    raise StoreError("a read-only transaction tried to write; nothing was committed")
