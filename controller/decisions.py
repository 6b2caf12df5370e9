"""An operator's decisions on single experiments: approve, reject, resolve.

:class:`OperatorDecisions` applies them for the campaign controller (whose ``approve``,
``reject`` and ``resolve`` the dashboard's commands reach), through the campaign's
:class:`~controller.book.Book` and :class:`~controller.writer.Writer`: the move is written
first, then the book changes, so that while the write is under way the experiment still
counts where it was (an approved one as waiting, for the planner).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from controller.book import Book
from controller.steps import StepRunner
from controller.work import Lifecycle, Work
from controller.writer import Writer
from models.errors import CampaignStateError
from models.status import ExperimentStatus
from models.tables import ExperimentRow


class OperatorDecisions:
    """Approves, rejects and resolves experiments for an operator.

    Args:
        ctl: The controller.
        book: The campaign's in-flight state.
        writer: The campaign's writer.
        steps: The step runner (moves, and what the planner is taught).
    """

    def __init__(self, ctl: Lifecycle, book: Book, writer: Writer, steps: StepRunner) -> None:
        self.ctl = ctl
        self.book = book
        self.writer = writer
        self.steps = steps

    async def approve(self, experiment_ids: list[int], actor: str) -> list[int]:
        """Let experiments that wait for approval run; returns those approved.

        Raises:
            CampaignStateError: If one of them is not waiting for approval (none is approved).
        """
        self._check_awaiting(experiment_ids)
        # They wait for approval until it is written: the planner counts them meanwhile.
        works = [Work(i, 0, self.book.awaiting[i]) for i in experiment_ids]

        def write(s: Session) -> None:
            for work in works:
                self.steps.move(
                    s, work, ExperimentStatus.QUEUED, f"approved by {actor}", actor=actor
                )

        await self.writer.run(write)
        for work in works:
            self.book.queue(self.book.approve(work.experiment_id))
        await self.ctl.notify()
        return experiment_ids

    async def reject(self, experiment_ids: list[int], actor: str, reason: str) -> list[int]:
        """Abandon experiments that wait for approval; the planner learns they are infeasible.

        Raises:
            CampaignStateError: If one of them is not waiting for approval (none is rejected).
        """
        self._check_awaiting(experiment_ids)
        works = [Work(i, 0, self.book.awaiting[i]) for i in experiment_ids]
        why = f"rejected by {actor}: {reason}"

        def write(s: Session) -> None:
            for work in works:
                self.steps.move(
                    s, work, ExperimentStatus.ABANDONED, why, infeasible=True, actor=actor
                )

        await self.writer.run(write)
        for work in works:
            self.steps.forget(work)
        self.book.abandoned += len(experiment_ids)
        await self.steps.teach()
        await self.ctl.notify()
        return experiment_ids

    def _check_awaiting(self, experiment_ids: list[int]) -> None:
        if not experiment_ids:
            raise CampaignStateError("experiments: no experiment named")
        unknown = self.book.is_awaiting(experiment_ids)
        if unknown:
            raise CampaignStateError(f"experiments: {unknown} are not waiting for approval")

    async def resolve(self, experiment_id: int, action: str, actor: str) -> str:
        """An operator's decision on an INTERRUPTED experiment: ``"rerun"`` or ``"fail"``.

        Raises:
            CampaignStateError: If the experiment is not INTERRUPTED in this campaign.
        """

        def read(s: Session) -> tuple[dict[str, Any], int, int]:
            exp = s.get(ExperimentRow, experiment_id)
            if exp is None or exp.campaign_id != self.ctl.campaign_id:
                raise CampaignStateError(f"experiment: no experiment {experiment_id} here")
            if exp.status != ExperimentStatus.INTERRUPTED:
                raise CampaignStateError(
                    f"experiment: {experiment_id} is {exp.status.value}, not INTERRUPTED"
                )
            last = max(exp.steps, key=lambda st: (st.index, st.attempt), default=None)
            index = last.index if last is not None else 0
            attempt = last.attempt + 1 if last is not None else 1
            return dict(exp.parameters), index, attempt

        point, index, attempt = await self.writer.read(read)
        work = Work(
            experiment_id, index, point, attempt, True, reason=f"{actor} decided to run it again"
        )
        rerun = action == "rerun"
        self.book.status[experiment_id] = ExperimentStatus.INTERRUPTED

        def write(s: Session) -> None:
            if rerun:
                why = f"{actor} decided to run it again"
                self.steps.move(s, work, ExperimentStatus.QUEUED, why, actor=actor)
            else:
                why = f"{actor} decided it failed"
                self.steps.move(s, work, ExperimentStatus.FAILED, why, actor=actor)

        await self.writer.run(write)
        if rerun:
            self.book.admit(experiment_id, point)
            self.book.queue(work, first=True)
            await self.ctl.notify()
            return f"experiment {experiment_id} step {index} runs again as attempt {attempt}"
        self.book.status.pop(experiment_id, None)
        self.book.failed += 1
        await self.steps.teach()
        return f"experiment {experiment_id} marked FAILED"
