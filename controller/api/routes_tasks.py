"""Tasks of ``manual`` instruments: the JSON API and the operator's page.

``GET /api/tasks`` lists them (viewer); an operator claims one
(``POST /api/tasks/{id}/claim``), enters its outputs (``POST /api/tasks/{id}/done``
``{"values": {...}}``, checked against the declared types and limits: a bad value is
answered 422 naming the field, ``values.<output>``) or marks it failed
(``POST /api/tasks/{id}/fail`` ``{"reason": ...}``). The ``manual`` driver waiting on the
task sees the answer within its poll interval (:mod:`controller.manual`).

``/tasks`` is the same, server-rendered: one form per open task, posted with the session's
CSRF token like the other forms; the answer is a redirect back to the page with a message.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from controller.api.auth import DbSession, factory_of, operator, viewer
from controller.api.pages import PageUser, _render
from controller.api.users import Principal, Role
from controller.store import transaction
from controller.store.tasks import (
    OPEN_TASKS,
    TaskInputError,
    claim_task,
    complete_task,
    deadline_passed,
    fail_task,
    get_task,
    list_tasks,
)
from models.errors import IllegalTransitionError, StoreError
from models.status import TaskStatus
from models.tables import TaskRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["tasks"])
pages = APIRouter(include_in_schema=False)

Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]
TaskId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class DoneBody(BaseModel):
    """The outputs an operator entered, by name."""

    values: dict[str, float | int | str | None] = Field(max_length=200)


class FailBody(BaseModel):
    """Why the task could not be done."""

    reason: str = Field(min_length=1, max_length=2000)


def task_view(row: TaskRow) -> dict[str, Any]:
    """A task as the API and the page show it."""
    return {
        "id": row.id,
        "request_id": row.request_id,
        "instrument": row.instrument,
        "action": row.action,
        "instructions": row.instructions,
        "parameters": row.parameters,
        "outputs": row.outputs,
        "status": TaskStatus(row.status).value,
        "claimed_by": row.claimed_by,
        "claimed_at": row.claimed_at.isoformat() if row.claimed_at else None,
        "values": row.values,
        "reason": row.reason,
        "finished_by": row.finished_by,
        "created_at": row.created_at.isoformat(),
        "deadline_at": row.deadline_at.isoformat() if row.deadline_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "overdue": deadline_passed(row),
    }


def _statuses(status: str | None) -> list[TaskStatus] | None:
    if status is None or status == "open":
        return list(OPEN_TASKS)
    if status == "all":
        return None
    try:
        return [TaskStatus(status.upper())]
    except ValueError:
        raise HTTPException(
            422, f"status: expected open, all or one of {[t.value for t in TaskStatus]}"
        ) from None


WRITE_TRIES = 5
"""How many times a task change is tried when SQLite refuses it as busy."""


def _change(s: Session, task_id: int, what: str, who: Principal, form: dict[str, Any]) -> TaskRow:
    if what == "claim":
        return claim_task(s, task_id, who.actor)
    if what == "done":
        return complete_task(s, task_id, who.actor, form)
    return fail_task(s, task_id, who.actor, str(form.get("reason") or ""))


def _apply(
    request: Request, task_id: int, what: str, who: Principal, form: dict[str, Any]
) -> dict[str, Any]:
    """Claim, complete or fail a task in a transaction of its own; store errors become HTTP
    answers.

    SQLite refuses a transaction that read and then writes while another connection
    committed in between (``database is locked`` at once, no busy wait); the controller and
    the manual driver write the same store, so the change is tried again from the start.
    """
    try:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                with transaction(factory_of(request)) as s:
                    return task_view(_change(s, task_id, what, who, form))
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_TRIES:
                    raise
                logger.info("task %d %s: store busy, trying again", task_id, what)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover
    except TaskInputError as exc:
        raise HTTPException(422, {"message": str(exc), "field": exc.field}) from exc
    except IllegalTransitionError as exc:
        raise HTTPException(409, str(exc)) from exc
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from exc


# ------------------------------------------------------------------------------- API


@router.get("/tasks", summary="List tasks of manual instruments")
def tasks(
    s: DbSession, _: Viewer, status: str | None = None, instrument: str | None = None
) -> list[dict[str, Any]]:
    """Open tasks (OPEN or CLAIMED) by default; ``status=all`` or one status."""
    return [task_view(r) for r in list_tasks(s, _statuses(status), instrument)]


@router.get("/tasks/{task_id}", summary="One task")
def task(task_id: TaskId, s: DbSession, _: Viewer) -> dict[str, Any]:
    """A task with its instructions, parameters, declared outputs and who did what."""
    try:
        return task_view(get_task(s, task_id))
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post("/tasks/{task_id}/claim", summary="Claim a task")
def claim(task_id: TaskId, request: Request, who: Operator) -> dict[str, Any]:
    """Take an OPEN task (409 if someone else has it or it is finished)."""
    return _apply(request, task_id, "claim", who, {})


@router.post("/tasks/{task_id}/done", summary="Enter a task's outputs")
def done(task_id: TaskId, body: DoneBody, request: Request, who: Operator) -> dict[str, Any]:
    """Enter the outputs of a CLAIMED task; a bad value is 422 naming ``values.<name>``."""
    return _apply(request, task_id, "done", who, dict(body.values))


@router.post("/tasks/{task_id}/fail", summary="Mark a task failed")
def fail(task_id: TaskId, body: FailBody, request: Request, who: Operator) -> dict[str, Any]:
    """The task could not be done; the step fails with the reason."""
    return _apply(request, task_id, "fail", who, {"reason": body.reason})


# ------------------------------------------------------------------------------- page


@pages.get("/tasks", response_class=HTMLResponse)
def tasks_page(
    request: Request,
    who: PageUser,
    changed: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Open tasks, each with its instructions, parameters and a form for its outputs.

    ``changed`` (set by the redirect after a form's post) names a task whose new state the
    page reports; the words are the server's, read from the store, never from the query.
    """
    return _tasks(request, who, changed=changed)


def _tasks(
    request: Request,
    who: PageUser,
    *,
    changed: int | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    message = None
    with transaction(factory_of(request)) as s:
        rows = [task_view(r) for r in list_tasks(s)]
        if changed is not None:
            try:
                row = task_view(get_task(s, changed))
                message = f"task {row['id']}: {row['status']}"
            except StoreError:
                message = None
    page = _render(request, "tasks.html", who, tasks=rows, message=message, error=error)
    page.status_code = status
    return page


@pages.post("/tasks/{task_id}/{what}")
async def task_form(task_id: TaskId, what: str, request: Request, who: PageUser) -> Response:
    """A task form's post (claim, done with one field per output, fail with a reason)."""
    if what not in ("claim", "done", "fail"):
        raise HTTPException(404, f"no task action {what!r}")
    if not who.role.allows(Role.OPERATOR):
        raise HTTPException(403, "operator role required")
    form = {
        k: v for k, v in (await request.form()).items() if k != "csrf_token" and isinstance(v, str)
    }
    try:
        row = await run_in_threadpool(_apply, request, task_id, what, who, form)
    except HTTPException as exc:
        # the page again, with the refusal in the server's words (never through the URL)
        detail = exc.detail["message"] if isinstance(exc.detail, dict) else exc.detail
        return await run_in_threadpool(
            _tasks, request, who, error=str(detail), status=exc.status_code
        )
    return RedirectResponse(f"/tasks?changed={row['id']}", status_code=303)
