"""Which ready step an instrument takes next, what it holds, and why the others wait.

Each instrument of a campaign has a worker (see :mod:`controller.loop`). When it is free it
asks the :class:`Dispatcher`, which turns every step ready to run into a
:class:`~controller.resources.Request`, lets the
:class:`~controller.resources.ResourceManager` plan (oldest experiment first, all or
nothing, conservative backfilling: see :mod:`controller.resources` and
``docs/resources.md``) and hands the worker the first step granted for its kind. The
dispatcher also keeps the samples' containers across the experiment's steps, writes the
sample's moves with each step, and keeps, for every experiment that waits, what it waits for
(in the controller's progress, and in the store's ``experiments.waiting_for`` for the
dashboard).

With a lab, the lab units of a step that ended pass to the next step the same plan grants
if it needs them, in the transaction that writes that step (:meth:`Dispatcher.grant_write`,
see :mod:`controller.lab`), and what no step inherits is released at once. A controller
whose steps wait for lab units is woken by a PostgreSQL notification when another campaign
frees one (:mod:`controller.store.lab_notify`), and on SQLite looks at the lab's grants
every ``lab_poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from controller.book import Book
from controller.lab import LabGrants
from controller.resources import KindState, Request, ResourceManager
from controller.store.lab import GrantConflictError
from controller.store.samples import (
    SampleNow,
    active_samples,
    clear_waiting,
    finish_sample,
    move_sample,
    set_waiting,
)
from controller.work import InstrumentSlot, Lifecycle, Work
from controller.writer import Writer
from models.status import ENDED_EXPERIMENT, ExperimentStatus

logger = logging.getLogger(__name__)

WAITING_FLUSH_S = 0.25
"""How long changes of waiting reasons gather before they are written to the store."""

LAB_POLL_S = 0.25
"""How often, at least, a campaign whose steps wait plans them again (the lab's waits and
instrument states change without a grant changing, and a notification can be missed while
the listening connection is down)."""


class Dispatcher:
    """Grants ready steps to free instruments for one campaign controller.

    Args:
        ctl: The controller (its instruments, lease and lifecycle).
        book: The campaign's in-flight state (its ready steps).
        writer: The campaign's writer.
    """

    def __init__(self, ctl: Lifecycle, book: Book, writer: Writer) -> None:
        self.ctl = ctl
        self.book = book
        self.writer = writer
        spec = ctl.spec
        self.lab: LabGrants | None = None
        if spec.lab is not None:
            self.lab = LabGrants(
                writer.sessions, spec, ctl.campaign_id, ctl.lease.me.holder, ctl.lease.ttl_s
            )
        self.manager = ResourceManager(spec.resources, spec.sample_container, self.lab)
        self.needs = [tuple(step.needs) for step in spec.workflow]
        self.waiting: dict[int, str] = {}
        self._written: dict[int, str] = {}
        self._flush_due = False
        self._running: dict[str, int] = {}  # instrument name -> experiment id
        # each in-flight experiment's sample as last written (saves a query per step)
        self._samples: dict[int, SampleNow] = {}

    # ------------------------------------------------------------------ start-up

    async def restore(self) -> None:
        """Rebuild who holds which container from the store (after recovery has run).

        A sample still in use whose experiment is in flight keeps its container; one whose
        experiment is not (recovery left it INTERRUPTED) is put back in storage. Steps that
        recovery found on their instruments keep the resources they need, before any new
        step is granted.
        """
        ctl = self.ctl
        for slot in ctl.instruments.values():
            for work in slot.resume:
                self.manager.adopt_step(work.experiment_id, self.needs[work.index])
        in_flight = set(self.book.in_flight)

        def write(s: Session) -> None:
            clear_waiting(s, ctl.campaign_id)
            for exp_id, label, container in active_samples(s, ctl.campaign_id):
                if exp_id not in in_flight:
                    finish_sample(s, ctl.campaign_id, exp_id, ExperimentStatus.INTERRUPTED)
                elif container is not None and container == self.manager.container:
                    self.manager.adopt_container(exp_id, label)

        await self.writer.run(write)
        if self.lab is not None:
            resumed = [w.experiment_id for slot in ctl.instruments.values() for w in slot.resume]
            dropped = self.manager.adopt_lab(self.lab.adopt(), resumed)
            if dropped:
                logger.info("campaign %s: gave back lab units %s", ctl.name, dropped)

    # ------------------------------------------------------------------ grants

    def _kinds(self) -> dict[str, KindState]:
        by_kind: dict[str, list[InstrumentSlot]] = {}
        for slot in self.ctl.instruments.values():
            by_kind.setdefault(slot.kind, []).append(slot)
        out: dict[str, KindState] = {}
        for kind, slots in by_kind.items():
            idle = sum(
                1
                for s in slots
                if s.available and not s.busy and not s.resume and self._lab_free(s)
            )
            busy = tuple(self._running[s.name] for s in slots if s.busy and s.name in self._running)
            down = sum(1 for s in slots if not s.available)
            elsewhere: tuple[str, ...] = ()
            if self.lab is not None and self.lab.shares(f"kind:{kind}"):
                elsewhere = tuple(self.lab.elsewhere(f"kind:{kind}"))
            out[kind] = KindState(idle, busy, down, elsewhere)
        return out

    def _lab_free(self, slot: InstrumentSlot) -> bool:
        """Whether the lab lets us send to ``slot`` (always, if it is not a lab instrument)."""
        if self.lab is None or slot.name not in self.lab.instruments:
            return True
        return self.lab.unit_free(slot.name)

    def take(self, slot: InstrumentSlot) -> Work | None:
        """The step ``slot`` runs next, with its resources granted; ``None``: none now.

        Steps that recovery found on the instrument come first (they hold what they held
        before the restart). Called with the controller's condition held.
        """
        ctl = self.ctl
        if slot.resume:
            work = slot.resume.popleft()  # its resources were adopted by restore()
            self._started(slot, work)
            return work
        ready: dict[int, Work] = {}
        requests: list[Request] = []
        for kind, work in self.book.ready_steps():
            ready[work.experiment_id] = work
            requests.append(Request(work.experiment_id, kind, self.needs[work.index]))
        waiting: dict[int, str] = dict.fromkeys(self.book.awaiting, "operator approval")
        taken: Work | None = None
        if ctl.paused:
            waiting.update(dict.fromkeys(ready, "paused"))
            if self.lab is not None:  # a paused campaign claims nothing of the lab
                self.lab.wait_on([], None)
        else:
            if self.lab is not None:
                self.lab.refresh()
            plan = self.manager.plan(requests, self._kinds())
            waiting.update(plan.waiting)
            if slot.available and not slot.busy and self._lab_free(slot):
                for req in plan.grants:
                    if req.kind == slot.kind:
                        try:
                            self.manager.grant(
                                req, instrument=slot.name, staged=self.lab is not None
                            )
                        except GrantConflictError as exc:  # another campaign was quicker
                            waiting[req.experiment_id] = str(exc)
                            break
                        taken = ready[req.experiment_id]
                        self.book.unqueue(taken)
                        self._started(slot, taken)
                        break
            for req in plan.grants:
                if taken is None or req.experiment_id != taken.experiment_id:
                    waiting[req.experiment_id] = f"a free instrument of kind {req.kind} to pick it"
        if self.lab is not None:
            self.lab.settle()  # what no step of this plan inherited goes back to the lab now
        self._set_waiting(waiting)
        return taken

    # ------------------------------------------------------------------ the step's write

    def grant_write(self, work: Work) -> Callable[[Session], None] | None:
        """What the step's transaction runs first to pass it the lab units it inherits from
        a step that ended (``None``: none). It raises
        :class:`~controller.store.lab.GrantConflictError` if another campaign holds one."""
        return None if self.lab is None else self.lab.staged_write(work.experiment_id)

    def granted(self, work: Work) -> None:
        """The step's transaction took the lab units it inherits."""
        if self.lab is not None:
            self.lab.committed(work.experiment_id)

    def grant_lost(self, work: Work, exc: GrantConflictError) -> None:
        """The step lost a unit it inherited (this controller's grant had expired and
        another campaign took it): nothing was written. The step is ready again (first in
        line); the worker's :meth:`step_done` gives back what it holds."""
        self.book.queue(work, first=True)
        self.waiting[work.experiment_id] = str(exc)
        self._schedule_flush()
        logger.info("campaign %s: experiment %d waits: %s", self.ctl.name, work.experiment_id, exc)

    # ------------------------------------------------------------------ waking

    async def poll_lab(self) -> None:
        """While steps wait, wake the workers when another campaign frees a lab unit, and
        at least every :data:`LAB_POLL_S` for what no grant shows.

        On PostgreSQL the lab's notifications wake us (:class:`LabListener
        <controller.store.lab_notify.LabListener>`); on SQLite, or while the listening
        connection is down, the lab's grants are read every ``lab_poll_s`` (one small
        query) instead.
        """
        lab = self.lab
        assert lab is not None
        poll_s = min(self.ctl.options.lab_poll_s, LAB_POLL_S)
        try:
            listener = lab.listener()
        except Exception as exc:  # polling works without it
            logger.warning("campaign %s: no lab notifications: %s", self.ctl.name, exc)
            listener = None
        task = asyncio.create_task(listener.run()) if listener is not None else None
        woke = time.monotonic()
        try:
            while True:
                notified = False
                if listener is not None and listener.listening:
                    left = max(0.0, LAB_POLL_S - (time.monotonic() - woke))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(listener.woken.wait(), left)
                    notified = listener.woken.is_set()
                    listener.woken.clear()
                else:
                    await asyncio.sleep(poll_s)
                if not self.waiting or self.ctl.paused:
                    continue
                if notified:
                    lab.stale()
                elif not (
                    (listener is not None and listener.listening)
                    or lab.grants_changed()
                    or time.monotonic() - woke >= LAB_POLL_S
                ):
                    continue
                woke = time.monotonic()
                await self.ctl.notify()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def lab_state(self, s: Session, slot: InstrumentSlot) -> None:
        """Record a lab instrument's service state for every campaign (in ``s``)."""
        if self.lab is not None and slot.name in self.lab.instruments:
            self.lab.record_slot(s, slot)

    def _started(self, slot: InstrumentSlot, work: Work) -> None:
        slot.busy = True
        self._running[slot.name] = work.experiment_id

    def step_done(self, slot: InstrumentSlot, work: Work) -> None:
        """The step ran (whatever came of it): its instrument and resources are free.

        Its lab units are handed to the step the next plan grants, if it needs them, and
        released otherwise (at the latest once the loop runs again)."""
        if self._running.get(slot.name) == work.experiment_id:
            del self._running[slot.name]
        self.manager.release_step(work.experiment_id, hand_over=self.lab is not None)
        if self.lab is not None:
            try:
                asyncio.get_running_loop().call_soon(self.lab.settle)
            except RuntimeError:  # no loop (a unit test): release now
                self.lab.settle()

    def record_start(self, s: Session, slot: InstrumentSlot, work: Work) -> None:
        """Write the sample's move to the step's instrument (in the step's transaction)."""
        unit = self.manager.container_of(work.experiment_id)
        label = unit if unit is not None else f"sample-{work.experiment_id}"
        container = self.manager.container if unit is not None else None
        self._samples[work.experiment_id] = move_sample(
            s,
            self.ctl.campaign_id,
            work.experiment_id,
            to=slot.name,
            step=work.index,
            action=self.ctl.spec.workflow[work.index].action,
            label=label,
            container=container,
            now=self._samples.get(work.experiment_id),
        )

    def record_end(self, s: Session, experiment_id: int, status: ExperimentStatus) -> None:
        """Put the sample back in storage if the experiment ended (in its transaction)."""
        if status in ENDED_EXPERIMENT:
            now = self._samples.pop(experiment_id, None)
            finish_sample(s, self.ctl.campaign_id, experiment_id, status, now)

    def forget(self, experiment_id: int) -> None:
        """The experiment is no longer in flight: its container is free again."""
        self.manager.release_container(experiment_id)
        self._samples.pop(experiment_id, None)
        if self.waiting.pop(experiment_id, None) is not None:
            self._schedule_flush()

    # ------------------------------------------------------------------ waiting reasons

    def _set_waiting(self, waiting: dict[int, str]) -> None:
        if waiting != self.waiting:
            self.waiting = waiting
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_due:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): the store is written at the next change
        self._flush_due = True
        self.ctl.spawn(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(WAITING_FLUSH_S)
        self._flush_due = False
        await self.flush()

    async def flush(self) -> None:
        """Write the waiting reasons that changed since the last write."""
        now = dict(self.waiting)
        changes: dict[int, str | None] = {
            e: why for e, why in now.items() if self._written.get(e) != why
        }
        changes.update({e: None for e in self._written if e not in now})
        if not changes or self.ctl.lease.lost is not None:
            return
        try:
            await self.writer.run(lambda s: set_waiting(s, changes))
        except Exception:  # a reason not written is shown late, never lost for good
            logger.exception("campaign %s: could not write waiting reasons", self.ctl.name)
            return
        self._written = now
