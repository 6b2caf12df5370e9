"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

# sila2 compiles its framework's .proto into protobuf's default pool when it is imported;
# with protobuf's upb backend that fails ("duplicate file name SiLAFramework.proto") once
# ray's protobuf modules are loaded. A gateway process that hosts a SiLA 2 driver never
# imports ray; the test session, which imports both, imports sila2 first.
with contextlib.suppress(ImportError):
    import sila2.framework  # noqa: F401

# =====================================================================================
# Threads: one torch (and BLAS/OpenMP) thread in every test process, so that a test's
# numbers do not depend on which tests ran before it in the same process (a module that set
# the thread count changed the float reductions of those after it), and two test workers on
# two cores do not oversubscribe them.
# =====================================================================================


@pytest.fixture(autouse=True, scope="session")
def _one_compute_thread() -> Iterator[None]:
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # OpenMP/BLAS too (histogram gradient boosting, SVR)
        yield
    torch.set_num_threads(before)


# =====================================================================================
# Store: database URLs (controller/store). ``db_url`` runs a test on SQLite and, when a
# server answers, on PostgreSQL (marked ``postgres``; deselect with ``-m 'not postgres'``).
# =====================================================================================

POSTGRES_URL_ENV = "SDLAB_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_POSTGRES_PROBLEMS: dict[str, str | None] = {}


def postgres_test_url() -> str:
    """The PostgreSQL server tests use: ``$SDLAB_TEST_POSTGRES_URL`` or the local default."""
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def _libpq_url(url: str) -> str:
    """``url`` as libpq understands it (without a SQLAlchemy ``+driver`` suffix)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def _masked(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def _postgres_problem(url: str) -> str | None:
    """Why the server at ``url`` cannot be used (``None`` if it answers); probed once."""
    if url not in _POSTGRES_PROBLEMS:
        try:
            import psycopg

            with psycopg.connect(_libpq_url(url), connect_timeout=2, autocommit=True):
                pass
            _POSTGRES_PROBLEMS[url] = None
        except Exception as exc:
            _POSTGRES_PROBLEMS[url] = f"{type(exc).__name__}: {str(exc).strip()}"
    return _POSTGRES_PROBLEMS[url]


def _postgres_schema_url(url: str) -> Iterator[str]:
    """A URL whose connections see a fresh, empty schema; the schema is dropped afterwards."""
    import psycopg

    problem = _postgres_problem(url)
    if problem is not None:
        pytest.skip(
            f"PostgreSQL not reachable at {_masked(url)} (set {POSTGRES_URL_ENV}): {problem}"
        )
    schema = f"sdlab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(url), connect_timeout=2, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(_libpq_url(url), connect_timeout=2, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'sdlab.db'}"
    else:
        yield from _postgres_schema_url(postgres_test_url())


# =====================================================================================
# Ray: one local instance per test session, shared by every test that needs it.
# =====================================================================================


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """Start one local Ray instance for the session; yields its address for subprocesses."""
    import ray

    from controller.actors import ensure_ray

    ensure_ray(num_cpus=2)
    yield str(ray.get_runtime_context().gcs_address)
    ray.shutdown()


# =====================================================================================
# Order and grouping for the test workers (``make test``: ``-n 2 --dist loadgroup
# --no-loadscope-reorder``). The end-to-end modules (marked slow, minutes each) go to the
# workers first, the longest first, and each of their tests is handed out on its own, so
# that the two cases of one module (SQLite and PostgreSQL, embedded and external servers)
# run on both workers at once rather than one after the other on one. Every other module
# stays whole on one worker (an ``xdist_group`` per module), so its module fixtures are
# built once; the short modules fill the gaps beside the long tests.
# =====================================================================================

_LONGEST_FIRST = (
    "test_stress.py",
    "test_crash_recovery.py",
    "test_fault_campaign.py",
    "test_driver_kit.py",
    "test_alab_campaign.py",
    "test_ray_cluster.py",
    "test_lab_campaigns.py",
    "test_discovery.py",
)
"""Slow modules that took a minute or more per test (two workers, idle machine); their
tests are handed out first, in this order."""


def _rank(item: pytest.Item, slow_modules: set[object]) -> tuple[int, int]:
    if item.path not in slow_modules:
        return (2, 0)
    name = item.path.name
    if name in _LONGEST_FIRST:
        return (0, _LONGEST_FIRST.index(name))
    return (1, 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_modules: set[object] = {
        item.path for item in items if item.get_closest_marker("slow") is not None
    }
    items.sort(key=lambda item: _rank(item, slow_modules))  # stable: file order kept
    for item in items:
        if item.path not in slow_modules and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(str(item.path)))
