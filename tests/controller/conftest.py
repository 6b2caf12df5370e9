"""Fixtures of the controller tests: a migrated store with one campaign in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from models.campaign import CampaignSpec


def make_spec(name: str = "demo", params: tuple[str, ...] = ("x1", "x2")) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": name, "seed": 3},
            "parameters": [
                *({"type": "continuous", "name": p, "lower": 0.0, "upper": 1.0} for p in params),
                {"type": "categorical", "name": "solvent", "choices": ["water", "ethanol"]},
            ],
            "objectives": [
                {"name": "y", "direction": "maximize"},
                {"name": "cost", "direction": "minimize"},
            ],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:5601"}
            ],
            "planner": {"name": "random"},
            "budget": {"max_experiments": 10},
        }
    )


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def campaign_id(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as s:
        return create_campaign(s, make_spec(), seed=3, max_experiments=10).id
