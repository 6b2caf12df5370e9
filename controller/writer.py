"""The one writer of a running campaign: every write of the loop and of recovery.

A :class:`Writer` runs each transaction of the controller, one after another, on a thread
of its own, awaited from the event loop (:meth:`Writer.run`): a slow database round trip
(PostgreSQL on another host) holds up the coroutine that waits for that write, never the
workers of the other instruments. One thread keeps the writes in the order they were
asked for, and a read made through the writer (:meth:`Writer.read`) sees every write asked
for before it.

The session-level operations (:meth:`Writer.move`, :meth:`Writer.start_step`,
:meth:`Writer.end_step`, :meth:`Writer.decision`, :meth:`Writer.event`) are the only way
the loop and recovery change a campaign's records. They write in SQLAlchemy Core
(:mod:`controller.store.hot`: few statements, status compare-and-set) and leave one set of
events whoever calls them: every experiment move off the routine path appends
``experiment.<status>`` (see :func:`controller.store.hot.move_experiment`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from controller.store import add_event, transaction
from controller.store.hot import finish_step, insert_decision, move_experiment, start_step
from controller.work import Work
from instruments.client import RequestState
from models.errors import StoreError
from models.params import ParamValue
from models.records import Decision, Proposal
from models.status import ExperimentStatus, StepStatus
from models.tables import EventRow

__all__ = ["Writer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Writer:
    """Runs a campaign's transactions in order, off the event loop.

    Args:
        sessions: Session factory of the store.
        campaign_id: The campaign written (events name it).
        threaded: Run transactions on the writer's thread (``False``: on the caller's
            thread, as :meth:`now` does; for tools that have no event loop to keep free).
    """

    def __init__(
        self, sessions: sessionmaker[Session], campaign_id: int, *, threaded: bool = True
    ) -> None:
        self.sessions = sessions
        self.campaign_id = campaign_id
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{campaign_id}")
            if threaded
            else None
        )
        self.fenced: str | None = None

    # ------------------------------------------------------------------ transactions

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one transaction on the writer's thread and return what it
        returns (committed when ``fn`` returns, rolled back if it raises).

        ``fn`` runs while the loop goes on: it must touch only what its experiment owns
        (the book's entries of that experiment), never the ready queues. A write once
        asked for is made even if the caller is cancelled while it waits (as a write on
        the loop itself would have been): cancelling a controller's tasks at its end
        loses no result, no command's outcome.
        """
        if self._pool is None:
            return self.now(fn)
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._pool, self.now, fn))

    async def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a read-only transaction on the writer's thread, after
        every write asked for before it."""
        if self._pool is None:
            return self._read_now(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._read_now, fn)

    def now(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one transaction on the caller's thread (start-up, and
        code without an event loop).

        Raises:
            StoreError: If the writer was fenced (nothing is written).
        """
        if self.fenced is not None:
            raise StoreError(f"campaign {self.campaign_id}: not written: {self.fenced}")
        with transaction(self.sessions) as s:
            return fn(s)

    def fence(self, reason: str) -> None:
        """Write nothing more (another controller holds the campaign now): every write
        asked for from now on, and those still waiting for the writer's thread, raise
        :class:`~models.errors.StoreError`. Reads still run."""
        self.fenced = reason

    def _read_now(self, fn: Callable[[Session], T]) -> T:
        with transaction(self.sessions, read_only=True) as s:
            return fn(s)

    def close(self) -> None:
        """Wait for the writes asked for, then stop the writer's thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ writes

    def event(
        self,
        s: Session,
        kind: str,
        message: str,
        *,
        experiment_id: int | None = None,
        instrument: str | None = None,
        data: Mapping[str, Any] | None = None,
        actor: str = "controller",
    ) -> EventRow:
        """Append an event of the campaign (see :func:`controller.store.repo.add_event`)."""
        return add_event(
            s,
            kind,
            message,
            campaign_id=self.campaign_id,
            experiment_id=experiment_id,
            instrument=instrument,
            data=data,
            actor=actor,
        )

    def move(
        self,
        s: Session,
        experiment_id: int,
        current: ExperimentStatus,
        target: ExperimentStatus,
        reason: str | None = None,
        *,
        infeasible: bool = False,
        actor: str = "controller",
    ) -> ExperimentStatus:
        """Move an experiment from ``current`` to ``target`` (compare-and-set); returns
        ``target`` (see :func:`controller.store.hot.move_experiment`)."""
        return move_experiment(
            s,
            experiment_id,
            current,
            target,
            reason=reason,
            infeasible=infeasible,
            campaign_id=self.campaign_id,
            actor=actor,
        )

    def start_step(self, s: Session, work: Work, *, kind: str, action: str, **fields: Any) -> int:
        """Write a step as RUNNING before it is sent; returns its id (see
        :func:`controller.store.hot.start_step`)."""
        return start_step(
            s,
            work.experiment_id,
            index=work.index,
            kind=kind,
            action=action,
            attempt=work.attempt,
            rerun=work.rerun,
            **fields,
        )

    def end_step(
        self,
        s: Session,
        work: Work,
        status: StepStatus,
        *,
        error: str | None = None,
        state: RequestState | None = None,
    ) -> None:
        """Write how a step ended (compare-and-set from the status it was written with),
        with the instrument's timestamps and, for a completed step, its measurements."""
        assert work.step_id is not None
        finish_step(
            s,
            work.step_id,
            work.experiment_id,
            status,
            current=work.step_status,
            error=error,
            started_at=state.started_at if state else None,
            finished_at=state.finished_at if state else None,
            measurements=state.measurements if state and status == StepStatus.COMPLETED else (),
        )

    def decision(
        self,
        s: Session,
        decision: Decision,
        accepted: Sequence[tuple[int, Proposal, Mapping[str, ParamValue]]],
        refused: Sequence[tuple[int, Proposal, str]],
        *,
        hold: bool = False,
        infeasible: Collection[int] = (),
    ) -> tuple[int, dict[int, int]]:
        """Write a decision and its experiments (see
        :func:`controller.store.hot.insert_decision`)."""
        return insert_decision(
            s, self.campaign_id, decision, accepted, refused, hold=hold, infeasible=infeasible
        )
