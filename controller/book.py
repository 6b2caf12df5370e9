"""The in-flight state of one campaign, in one object.

A :class:`Book` holds what the running controller carries between two writes: the
experiments in flight and their parameters, those waiting for an operator's approval, the
steps ready to run (one queue per instrument kind), each in-flight experiment's status as
last written (the store's writes are compare-and-set against it) and the measurements of
its earlier steps, the counters of finished experiments, the streak of refused proposals
and the cost ledger. Nothing else changes these: the intake, the step runner, recovery, the
dispatcher and the controller's operator methods call the book's methods.

The book holds no session and writes nothing; it is rebuilt from the store when a
controller starts (the counters and the ledger by :meth:`Book.from_store`, the experiments
in flight by recovery).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy.orm import Session

from controller.costs import CostLedger
from controller.store import count_by_status
from controller.store.queries import experiment_costs
from controller.work import Work
from models.params import ParamValue
from models.records import Measurement
from models.status import PENDING_EXPERIMENT, ExperimentStatus

__all__ = ["Book"]


class Book:
    """What one campaign has in flight, waiting and ready, and what it has finished.

    Args:
        kinds: The instrument kind of each workflow step, in order.
        ledger: The cost ledger (spent and committed costs).
        completed: Experiments COMPLETED so far.
        failed: Experiments FAILED so far.
        abandoned: Experiments ABANDONED so far.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        ledger: CostLedger | None = None,
        *,
        completed: int = 0,
        failed: int = 0,
        abandoned: int = 0,
    ) -> None:
        self.kinds = list(kinds)
        self.ledger = ledger or CostLedger(None)
        self.completed = completed
        self.failed = failed
        self.abandoned = abandoned
        self.in_flight: dict[int, dict[str, ParamValue]] = {}
        self.awaiting: dict[int, dict[str, ParamValue]] = {}
        self.ready: dict[str, deque[Work]] = {kind: deque() for kind in self.kinds}
        self.status: dict[int, ExperimentStatus] = {}
        self.earlier: dict[int, dict[str, float]] = {}
        self.refused_in_a_row = 0

    @classmethod
    def from_store(
        cls, s: Session, campaign_id: int, kinds: Sequence[str], max_cost: float | None
    ) -> Book:
        """The counters and the cost ledger of a campaign, as the store records them.

        The cost spent is recomputed from what the store recorded (see
        :mod:`controller.costs`); the experiments in flight are added by recovery.
        """
        counts = count_by_status(s, campaign_id)
        costs = experiment_costs(s, campaign_id)
        ledger = CostLedger(
            max_cost,
            sum(c for st, c in costs.values() if st == ExperimentStatus.COMPLETED),
            {i: c for i, (st, c) in costs.items() if st in PENDING_EXPERIMENT},
        )
        return cls(
            kinds,
            ledger,
            completed=counts.get(ExperimentStatus.COMPLETED, 0),
            failed=counts.get(ExperimentStatus.FAILED, 0),
            abandoned=counts.get(ExperimentStatus.ABANDONED, 0),
        )

    # ------------------------------------------------------------------ counts

    @property
    def seen(self) -> int:
        """Experiments that ended COMPLETED, FAILED or ABANDONED (what the planner learns
        from changes only when this does)."""
        return self.completed + self.failed + self.abandoned

    def count(self, status: ExperimentStatus, n: int = 1) -> None:
        """Count ``n`` experiments that ended in ``status``."""
        if status == ExperimentStatus.COMPLETED:
            self.completed += n
        elif status == ExperimentStatus.FAILED:
            self.failed += n
        elif status == ExperimentStatus.ABANDONED:
            self.abandoned += n
        else:
            raise ValueError(f"status: {status.value} is not an end an experiment is counted at")

    def spent(self) -> float:
        """Cost spent by completed experiments plus that committed by those in flight."""
        return self.ledger.spent(self.in_flight)

    # ------------------------------------------------------------------ in flight

    def admit(
        self,
        experiment_id: int,
        point: Mapping[str, ParamValue],
        status: ExperimentStatus | None = None,
        cost: float | None = None,
    ) -> None:
        """Carry an experiment in flight.

        Args:
            experiment_id: The experiment.
            point: Its parameters.
            status: Its status as just written (``None``: read from the store when it is
                first moved, after a restart).
            cost: Its cost, committed now (``None``: the ledger already holds it).
        """
        self.in_flight[experiment_id] = dict(point)
        if status is not None:
            self.status[experiment_id] = status
        if cost is not None:
            self.ledger.record(experiment_id, cost)

    def hold(self, experiment_id: int) -> None:
        """An admitted experiment waits for an operator's approval."""
        self.awaiting[experiment_id] = self.in_flight[experiment_id]

    def queue(self, work: Work, *, first: bool = False) -> None:
        """Make a step ready for an instrument of its kind (``first``: ahead of the others,
        for re-runs and retries)."""
        queue = self.ready[self.kinds[work.index]]
        if first:
            queue.appendleft(work)
        else:
            queue.append(work)

    def unqueue(self, work: Work) -> None:
        """A ready step was granted to an instrument."""
        self.ready[self.kinds[work.index]].remove(work)

    def ready_steps(self) -> Iterable[tuple[str, Work]]:
        """Every ready step with its kind, oldest first within a kind."""
        for kind, queue in self.ready.items():
            for work in queue:
                yield kind, work

    def first_queue_length(self) -> int:
        """Steps ready for the workflow's first kind."""
        return len(self.ready[self.kinds[0]])

    def is_awaiting(self, experiment_ids: Iterable[int]) -> list[int]:
        """Those of ``experiment_ids`` that do not wait for approval."""
        return [i for i in experiment_ids if i not in self.awaiting]

    def approve(self, experiment_id: int) -> Work:
        """Take an experiment out of the approval wait; returns its first step (the caller
        queues it once the approval is written)."""
        return Work(experiment_id, 0, self.awaiting.pop(experiment_id))

    def drain(self) -> list[Work]:
        """Take every ready step and every experiment waiting for approval out of the book
        (an abort): they will not run."""
        out = [w for q in self.ready.values() for w in q]
        out += [Work(i, 0, p) for i, p in self.awaiting.items()]
        self.awaiting.clear()
        for q in self.ready.values():
            q.clear()
        return out

    def observe(self, experiment_id: int, measurements: Iterable[Measurement]) -> None:
        """Keep the values a non-final step measured (the objectives may be among them)."""
        earlier = self.earlier.setdefault(experiment_id, {})
        earlier.update({m.name: m.value for m in measurements if m.value is not None})

    def observations(
        self, experiment_id: int, measurements: Iterable[Measurement]
    ) -> dict[str, float]:
        """The values measured for an experiment: its earlier steps', then these."""
        values = dict(self.earlier.get(experiment_id, {}))
        values.update({m.name: m.value for m in measurements if m.value is not None})
        return {k: float(v) for k, v in values.items()}

    def finish(self, experiment_id: int) -> None:
        """The experiment is no longer in flight (its cost is spent if it COMPLETED, else
        released)."""
        done = self.status.get(experiment_id) == ExperimentStatus.COMPLETED
        self.ledger.finish(experiment_id, done)
        self.in_flight.pop(experiment_id, None)
        self.awaiting.pop(experiment_id, None)
        self.status.pop(experiment_id, None)
        self.earlier.pop(experiment_id, None)

    def set_aside(self, experiment_id: int) -> None:
        """The experiment leaves the flight INTERRUPTED, for an operator's decision; the
        ledger keeps its cost (an operator may run it again)."""
        self.in_flight.pop(experiment_id, None)
        self.status.pop(experiment_id, None)
        self.earlier.pop(experiment_id, None)
