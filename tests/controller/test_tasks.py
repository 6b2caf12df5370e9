"""Tasks of manual instruments in the store, on the command line and on the page."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.cli import cli
from controller.store import make_engine, migrate, session_factory, transaction
from controller.store.tasks import TaskInputError, check_values, open_task
from models.status import TaskStatus
from models.tables import EventRow, TaskRow
from tests.controller.api_store import bearer
from tests.controller.conftest import Dashboard

OUTPUTS = [
    {"name": "mass_g", "type": "number", "minimum": 0, "maximum": 200, "unit": "g"},
    {"name": "count", "type": "integer", "minimum": 1, "maximum": None, "unit": ""},
]


def _open(factory: sessionmaker[Session], request_id: str = "c1-1-0-1") -> int:
    with transaction(factory) as s:
        return open_task(
            s,
            request_id,
            instrument="bench",
            action="weigh",
            instructions="Weigh sample 3.",
            parameters={"sample": 3},
            outputs=OUTPUTS,
            timeout_s=600,
        ).id


@pytest.fixture
def store(db_url: str) -> tuple[str, sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    return db_url, session_factory(engine)


def test_values_are_checked_against_the_declared_outputs_naming_the_field() -> None:
    assert check_values(OUTPUTS, {"mass_g": "12.5", "count": 2}) == {"mass_g": 12.5, "count": 2}
    bad = [
        ({"mass_g": 201, "count": 1}, "values.mass_g", "above the maximum"),
        ({"mass_g": -1, "count": 1}, "values.mass_g", "below the minimum"),
        ({"mass_g": "a lot", "count": 1}, "values.mass_g", "expected a number"),
        ({"mass_g": "nan", "count": 1}, "values.mass_g", "finite"),
        ({"mass_g": 1, "count": 1.5}, "values.count", "integer"),
        ({"mass_g": 1}, "values.count", "required"),
        ({"mass_g": 1, "count": 1, "colour": 2}, "values.colour", "not an output"),
        ({"mass_g": True, "count": 1}, "values.mass_g", "expected a number"),
    ]
    for values, field, words in bad:
        with pytest.raises(TaskInputError) as err:
            check_values(OUTPUTS, values)
        assert err.value.field == field
        assert words in str(err.value)


def test_a_restarted_server_finds_its_task_by_request_id(
    store: tuple[str, sessionmaker[Session]],
) -> None:
    _, factory = store
    first = _open(factory)
    assert _open(factory) == first
    with transaction(factory) as s:
        assert len(s.scalars(select(TaskRow)).all()) == 1


def test_the_cli_lists_claims_enters_and_fails_tasks(
    store: tuple[str, sessionmaker[Session]],
) -> None:
    db_url, factory = store
    task_id = _open(factory)
    other = _open(factory, "c1-2-0-1")
    run = CliRunner().invoke
    res = run(cli, ["tasks", "list", "--db", db_url])
    assert res.exit_code == 0, res.output
    assert f"{task_id}\tOPEN\tbench\tweigh" in res.output
    assert "Weigh sample 3." in res.output
    assert "mass_g (number in [0, 200]) g" in res.output
    res = run(cli, ["tasks", "done", "--db", db_url, str(task_id), "mass_g=3"])
    assert res.exit_code == 1  # not claimed yet
    assert run(cli, ["tasks", "claim", "--db", db_url, str(task_id)]).exit_code == 0
    res = run(cli, ["tasks", "done", "--db", db_url, str(task_id), "mass_g=300", "count=1"])
    assert res.exit_code == 1
    assert "values.mass_g" in res.output
    res = run(cli, ["tasks", "done", "--db", db_url, str(task_id), "mass_g=3.25", "count=4"])
    assert res.exit_code == 0, res.output
    assert "DONE" in res.output
    res = run(cli, ["tasks", "fail", "--db", db_url, str(other), "--reason", "no balance"])
    assert res.exit_code == 0, res.output
    assert "no open task" in run(cli, ["tasks", "list", "--db", db_url]).output
    with transaction(factory) as s:
        rows = {r.id: r for r in s.scalars(select(TaskRow))}
        assert rows[task_id].status == TaskStatus.DONE
        assert rows[task_id].values == {"mass_g": 3.25, "count": 4.0}
        assert rows[task_id].finished_by is not None
        assert rows[task_id].finished_by.startswith("cli:")
        assert (rows[other].status, rows[other].reason) == (TaskStatus.FAILED, "no balance")
        kinds = s.scalars(select(EventRow.kind).order_by(EventRow.id)).all()
        assert kinds == ["task.opened", "task.opened", "task.claimed", "task.done", "task.failed"]


def test_the_tasks_page_shows_open_tasks_with_a_form_each(dash: Dashboard) -> None:
    task_id = _open(dash.factory)
    op = bearer(dash.tokens["operator"])
    page = dash.client.get("/tasks", headers=op)
    assert page.status_code == 200
    assert f'action="/tasks/{task_id}/claim"' in page.text
    assert "Weigh sample 3." in page.text
    res = dash.client.post(f"/tasks/{task_id}/claim", headers=op, follow_redirects=False)
    assert res.status_code == 303
    page = dash.client.get("/tasks", headers=op)
    assert re.search(r'name="mass_g" type="number" required\s+step="any"', page.text)
    res = dash.client.post(
        f"/tasks/{task_id}/done", headers=op, data={"mass_g": "999", "count": "1"}
    )
    assert res.status_code == 422  # the page again, naming the field
    assert "values.mass_g" in res.text
    assert f'action="/tasks/{task_id}/done"' in res.text
    res = dash.client.post(
        f"/tasks/{task_id}/done",
        headers=op,
        data={"mass_g": "9", "count": "1"},
        follow_redirects=False,
    )
    assert (res.status_code, res.headers["location"]) == (303, f"/tasks?changed={task_id}")
    res = dash.client.get(res.headers["location"], headers=op)
    assert f"task {task_id}: DONE" in res.text
    assert "No open task." in res.text
    viewer = dash.client.post(
        f"/tasks/{task_id}/fail", headers=bearer(dash.tokens["viewer"]), data={"reason": "x"}
    )
    assert viewer.status_code == 403


def test_the_tasks_page_shows_no_text_from_its_address(dash: Dashboard) -> None:
    op = bearer(dash.tokens["operator"])
    page = dash.client.get("/tasks?message=Call+0800+now&error=Your+session+expired", headers=op)
    assert page.status_code == 200
    assert "0800" not in page.text
    assert "session expired" not in page.text
    assert dash.client.get("/tasks?changed=abc", headers=op).status_code == 422
