"""The experiment store: the campaign's source of truth in SQLite or PostgreSQL.

Typical use::

    engine = make_engine("sqlite:///sdlab.db")
    migrate(engine)                      # alembic upgrade head; safe to run every start
    factory = session_factory(engine)
    with transaction(factory) as s:      # commits, or rolls back on error
        campaign = create_campaign(s, spec, seed=0, max_experiments=50)

The functions of :mod:`controller.store.repo` receive a session and never open one.
"""

from __future__ import annotations

from controller.store import audit, hooks
from controller.store.commands import (
    COMMANDS,
    finish_command,
    list_instruments,
    pending_commands,
    submit_command,
    upsert_instrument,
)
from controller.store.engine import (
    alembic_config,
    current_revisions,
    head_revision,
    make_engine,
    migrate,
    safe_url,
    session_factory,
    transaction,
)
from controller.store.queries import PENDING_EXPERIMENT
from controller.store.repo import (
    add_decision,
    add_event,
    add_experiment,
    add_measurements,
    add_step,
    count_by_status,
    create_campaign,
    events,
    experiments_in_status,
    export_rows,
    get_campaign,
    list_campaigns,
    observations,
    pending_parameters,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    steps_in_status,
)
from models.errors import StoreError

hooks.install()

__all__ = [
    "COMMANDS",
    "PENDING_EXPERIMENT",
    "StoreError",
    "add_decision",
    "add_event",
    "add_experiment",
    "add_measurements",
    "add_step",
    "alembic_config",
    "audit",
    "count_by_status",
    "create_campaign",
    "current_revisions",
    "events",
    "experiments_in_status",
    "export_rows",
    "finish_command",
    "get_campaign",
    "head_revision",
    "list_campaigns",
    "list_instruments",
    "make_engine",
    "migrate",
    "observations",
    "pending_commands",
    "pending_parameters",
    "safe_url",
    "session_factory",
    "set_campaign_status",
    "set_experiment_status",
    "set_step_status",
    "steps_in_status",
    "submit_command",
    "transaction",
    "upsert_instrument",
]
