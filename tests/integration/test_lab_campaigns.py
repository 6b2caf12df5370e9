"""Two campaigns, each run by its own ``sdlab run`` process, share one lab on PostgreSQL.

The lab file declares three simulated stations and a robot arm; one ``sdlab instruments
serve`` process hosts the stations for both campaigns. Every step needs a station and the
arm, granted across the two controllers through the store.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.store import make_engine, session_factory, transaction
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, ExperimentRow, LabUnitRow, utcnow
from tests.conftest import _postgres_schema_url, postgres_test_url
from tests.integration.lab_harness import (
    apply_lab,
    finish,
    kill_tree,
    lab_steps,
    run_campaign,
    serve_lab,
    write_campaign,
    write_lab,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUDGET = 4


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (the test is skipped when no server answers)."""
    yield from _postgres_schema_url(postgres_test_url())


@pytest.fixture
def lab_servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The lab file, its stations served by one gateway process for every campaign."""
    lab = write_lab(tmp_path, getattr(request, "param", 2))
    with serve_lab(lab, tmp_path):
        yield lab


def _apply(lab: Path, db: str, cwd: Path) -> None:
    assert "unit arm-1 (arm) added" in apply_lab(lab, db, cwd)


def _campaign(directory: Path, name: str, seed: int) -> Path:
    return write_campaign(directory, name, seed, budget=BUDGET)


def _campaigns(db: str) -> dict[str, tuple[CampaignStatus, int]]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            out = {}
            for c in s.scalars(select(CampaignRow)):
                done = s.scalars(
                    select(ExperimentRow.id).where(
                        ExperimentRow.campaign_id == c.id,
                        ExperimentRow.status == ExperimentStatus.COMPLETED,
                    )
                ).all()
                out[c.name] = (CampaignStatus(c.status), len(done))
            return out
    finally:
        engine.dispose()


def _grants(db: str) -> dict[str, str | None]:
    """Each lab unit's campaign under a live grant (``None``: free)."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            now = utcnow()
            names: dict[int | None, str] = {
                cid: name for cid, name in s.execute(select(CampaignRow.id, CampaignRow.name))
            }
            return {
                u.unit: names.get(u.campaign_id)
                if u.holder is not None and u.expires_at is not None and u.expires_at > now
                else None
                for u in s.scalars(select(LabUnitRow))
            }
    finally:
        engine.dispose()


def assert_no_instrument_ran_two_steps_at_once(db: str) -> dict[str, set[str]]:
    """Check the recorded step times; returns which campaigns used each instrument."""
    by_instrument: dict[str, list[tuple[datetime, datetime | None, str]]] = {}
    for inst, campaign, status, started, finished in lab_steps(db):
        if started is None:
            continue
        assert finished is not None or status != StepStatus.COMPLETED
        by_instrument.setdefault(str(inst), []).append((started, finished, campaign))
    for inst, spans in by_instrument.items():
        spans.sort(key=lambda s: s[0])
        for (_s0, f0, c0), (s1, _, c1) in itertools.pairwise(spans):
            assert f0 is not None, f"{inst}: a step of {c0} never ended before {c1} started"
            assert f0 <= s1, f"{inst}: a step of {c1} started at {s1} while {c0} ran until {f0}"
    return {inst: {c for _, _, c in spans} for inst, spans in by_instrument.items()}


def test_two_controllers_share_three_lab_stations_and_an_arm(
    tmp_path: Path, pg_url: str, ray_address: str, lab_servers: Path
) -> None:
    _apply(lab_servers, pg_url, tmp_path)
    runs = [
        run_campaign(_campaign(tmp_path, name, seed), pg_url, ray_address, tmp_path)
        for name, seed in (("campaign-a", 1), ("campaign-b", 2))
    ]
    for proc in runs:
        finish(proc)
    assert _campaigns(pg_url) == {
        "campaign-a": (CampaignStatus.COMPLETED, BUDGET),
        "campaign-b": (CampaignStatus.COMPLETED, BUDGET),
    }
    users = assert_no_instrument_ran_two_steps_at_once(pg_url)
    assert set(users) <= {"station-1", "station-2", "station-3"}
    assert set().union(*users.values()) == {"campaign-a", "campaign-b"}
    assert set(_grants(pg_url).values()) == {None}, "every grant was given back"


@pytest.mark.parametrize("lab_servers", [1], indirect=True)  # one arm: A's must come back
def test_a_killed_controllers_grants_return_after_its_lease_and_the_other_campaign_completes(
    tmp_path: Path, pg_url: str, ray_address: str, lab_servers: Path
) -> None:
    _apply(lab_servers, pg_url, tmp_path)
    a = run_campaign(_campaign(tmp_path, "campaign-a", 1), pg_url, None, tmp_path, 4.0)
    b = run_campaign(_campaign(tmp_path, "campaign-b", 2), pg_url, ray_address, tmp_path)
    deadline = time.monotonic() + 150
    while "campaign-a" not in _grants(pg_url).values():  # wait until A holds the arm
        assert a.poll() is None, a.communicate()[0]
        assert time.monotonic() < deadline, "campaign-a never held a lab unit"
        time.sleep(0.05)
    kill_tree(a)
    held = {u: c for u, c in _grants(pg_url).items() if c is not None}
    assert held.get("arm-1") == "campaign-a", held  # the dead controller's grant stays ...
    finish(b)  # ... until its lease expires; then the arm returns to the lab and B gets it
    status = _campaigns(pg_url)
    assert status["campaign-b"] == (CampaignStatus.COMPLETED, BUDGET)
    assert status["campaign-a"][1] < BUDGET
    # what A held and B did not need returns when A's last renewal (at most one lease
    # before the kill) runs out: nothing renews it after the kill
    deadline = time.monotonic() + 3 * 4.0
    while set(_grants(pg_url).values()) != {None}:
        assert time.monotonic() < deadline, f"still held after 3 leases: {_grants(pg_url)}"
        time.sleep(0.1)
    assert_no_instrument_ran_two_steps_at_once(pg_url)
