"""Fixtures of the controller tests: a migrated store with one campaign in it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.api.settings import ApiSettings
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from models.campaign import CampaignSpec
from tests.controller.api_store import (
    Populated,
    RecordingLauncher,
    dash_settings,
    make_users,
    populate,
)


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


# ------------------------------------------------------------------ dashboard (controller/api)


@dataclass
class Dashboard:
    """A dashboard app on a populated store, its test client and a token per role."""

    client: TestClient
    factory: sessionmaker[Session]
    tokens: dict[str, str]
    store: Populated
    launcher: RecordingLauncher
    settings: ApiSettings


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dashboard]:
    from controller.api.app import create_app

    settings = dash_settings(tmp_path)
    launcher = RecordingLauncher(settings)
    app = create_app(settings, launcher=launcher)
    factory = app.state.factory
    tokens = make_users(factory, settings.kdf_iterations)
    store = populate(factory)
    with TestClient(app) as client:
        yield Dashboard(client, factory, tokens, store, launcher, settings)
