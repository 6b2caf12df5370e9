"""A dashboard test store: a campaign in several states, users of every role, an app."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from controller.api.runs import RunLauncher
from controller.api.settings import ApiSettings
from controller.api.users import add_user
from controller.store import (
    add_decision,
    add_experiment,
    add_measurements,
    add_step,
    create_campaign,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    transaction,
    upsert_instrument,
)
from models.campaign import CampaignSpec
from models.records import Decision, Measurement, Proposal
from models.status import CampaignStatus, ExperimentStatus, InstrumentState, StepStatus
from models.tables import utcnow

ROLES = ("viewer", "operator", "admin")


def approval_spec(name: str = "approval", objectives: int = 2) -> CampaignSpec:
    """A two-parameter campaign that needs operator approval."""
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": name, "seed": 1},
            "parameters": [
                {"type": "continuous", "name": "x1", "lower": 0.0, "upper": 1.0},
                {"type": "continuous", "name": "x2", "lower": 0.0, "upper": 1.0},
            ],
            "objectives": [
                {"name": "y", "direction": "maximize"},
                {"name": "cost", "direction": "minimize"},
            ][:objectives],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:5601"}
            ],
            "planner": {"name": "random"},
            "budget": {"max_experiments": 10},
            "safety": {"require_approval": True},
        }
    )


@dataclass
class Populated:
    """Ids of what :func:`populate` wrote."""

    campaign_id: int
    decision_id: int
    completed: list[int] = field(default_factory=list)
    proposed: int = 0
    interrupted: int = 0
    step_id: int = 0


def populate(factory: sessionmaker[Session]) -> Populated:
    """A RUNNING campaign with a decision, 3 completed, 1 proposed, 1 interrupted experiment."""
    with transaction(factory) as s:
        c = create_campaign(s, approval_spec(), seed=1, max_experiments=10)
        set_campaign_status(s, c, CampaignStatus.RUNNING)
        d = add_decision(
            s,
            c.id,
            Decision(
                proposals=[Proposal({"x1": 0.1, "x2": 0.2})] * 5,
                planner="random",
                version="1",
                seed=1,
                n_train=0,
                seconds=0.01,
            ),
        )
        out = Populated(campaign_id=c.id, decision_id=d.id)
        t0 = utcnow() - timedelta(seconds=60)
        for i, (y, cost) in enumerate([(1.0, 3.0), (2.0, 2.0), (0.5, 1.0)]):
            e = add_experiment(s, c.id, {"x1": 0.1 * i, "x2": 0.5}, decision_id=d.id)
            set_experiment_status(s, e, ExperimentStatus.QUEUED)
            st = add_step(
                s, e, index=0, kind="station", action="measure", parameters={}, request_id=f"r{i}"
            )
            set_experiment_status(s, e, ExperimentStatus.RUNNING)
            set_step_status(s, st, StepStatus.RUNNING, instrument="station-1")
            set_step_status(
                s,
                st,
                StepStatus.COMPLETED,
                started_at=t0 + timedelta(seconds=10 * i),
                finished_at=t0 + timedelta(seconds=10 * i + 5),
            )
            add_measurements(s, st, [Measurement("y", y), Measurement("cost", cost)])
            set_experiment_status(s, e, ExperimentStatus.COMPLETED)
            out.completed.append(e.id)
            out.step_id = st.id
        out.proposed = add_experiment(s, c.id, {"x1": 0.9, "x2": 0.9}, decision_id=d.id).id
        e = add_experiment(s, c.id, {"x1": 0.7, "x2": 0.1}, decision_id=d.id)
        set_experiment_status(s, e, ExperimentStatus.QUEUED)
        set_experiment_status(s, e, ExperimentStatus.INTERRUPTED, reason="controller restarted")
        out.interrupted = e.id
        upsert_instrument(
            s,
            c.id,
            "station-1",
            kind="station",
            address="tcp://127.0.0.1:5601",
            state=InstrumentState.IDLE,
            last_seen_at=utcnow(),
        )
    return out


def make_users(factory: sessionmaker[Session], iterations: int) -> dict[str, str]:
    """One user per role (named after it); returns role -> API token."""
    tokens: dict[str, str] = {}
    with transaction(factory) as s:
        for role in ROLES:
            _, tokens[role] = add_user(
                s, role, role, iterations=iterations, password=f"{role}-password"
            )
    return tokens


def bearer(token: str) -> dict[str, str]:
    """The header that authenticates a script."""
    return {"Authorization": f"Bearer {token}"}


class RecordingLauncher(RunLauncher):
    """Records the campaigns it is asked to start instead of running them."""

    def __init__(self, settings: ApiSettings) -> None:
        super().__init__(settings)
        self.started: list[str] = []

    def start(self, name: str) -> int:
        path = self.settings.campaigns_dir / f"{name}.toml"
        if not path.is_file():
            return super().start(name)  # raises: not uploaded
        self.started.append(name)
        return 4242


def dash_settings(tmp_path: Path, **overrides: Any) -> ApiSettings:
    """Settings for a throw-away SQLite store, with cheap hashes and fast polling."""
    values: dict[str, Any] = {
        "db_url": f"sqlite:///{tmp_path / 'dash.db'}",
        "data_dir": tmp_path / "data",
        "kdf_iterations": 1000,
        "stream_poll_s": 0.05,
    }
    values.update(overrides)
    return ApiSettings(**values)
