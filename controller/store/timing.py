"""Where a campaign's time goes, from what the store recorded.

Three figures answer different questions, and the summary, ``sdlab status`` and the dashboard
show all three side by side:

* **wall time per experiment**: the campaign's elapsed time (its first decision to the last
  experiment that finished, pauses and restarts included) over the experiments that
  finished (completed or failed): what an operator waits per result;
* **planning time per decision**: the median of the planner's own timings (``decisions.seconds``);
* **instrument time per experiment**: the median over finished experiments of the time
  their instruments spent on their steps (each step's ``started_at`` .. ``finished_at``).

What is neither planning nor instrument time is the controller's (queues, database, network)
or waiting for an instrument that another experiment holds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.status import ExperimentStatus
from models.tables import DecisionRow, ExperimentRow, StepRow

__all__ = ["Timing", "timing"]

_FINISHED = (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED)


@dataclass(frozen=True)
class Timing:
    """A campaign's time, split (every figure ``None`` until there is something to time).

    Attributes:
        wall_s_per_experiment: Elapsed wall time over the experiments that finished.
        planning_s_per_decision: Median planner time of one decision.
        planning_s_total: The planner's time over all decisions.
        decisions: How many decisions were recorded.
        instrument_s_per_experiment: Median instrument time of one finished experiment.
        finished: Experiments completed or failed.
    """

    wall_s_per_experiment: float | None
    planning_s_per_decision: float | None
    planning_s_total: float
    decisions: int
    instrument_s_per_experiment: float | None
    finished: int

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON (the dashboard's campaign detail ``timing``), with
        ``text``: :meth:`describe`."""
        return {**asdict(self), "text": self.describe()}

    def describe(self) -> str:
        """One line, e.g. ``"41.2 s wall, 38.9 s planning per decision, 0.03 s instrument"``."""
        parts = []
        if self.wall_s_per_experiment is not None:
            parts.append(f"{_s(self.wall_s_per_experiment)} wall")
        if self.planning_s_per_decision is not None:
            parts.append(f"{_s(self.planning_s_per_decision)} planning per decision")
        if self.instrument_s_per_experiment is not None:
            parts.append(f"{_s(self.instrument_s_per_experiment)} instrument")
        return ", ".join(parts) if parts else "nothing timed yet"


def _s(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def timing(s: Session, campaign_id: int) -> Timing:
    """Split campaign ``campaign_id``'s time into wall, planning and instrument time.

    Args:
        s: An open session.
        campaign_id: The campaign.

    Returns:
        The figures (see the module docstring).
    """
    seconds = list(
        s.scalars(select(DecisionRow.seconds).where(DecisionRow.campaign_id == campaign_id))
    )
    first_decision = s.scalar(
        select(func.min(DecisionRow.created_at)).where(DecisionRow.campaign_id == campaign_id)
    )
    finished_rows = s.execute(
        select(ExperimentRow.id, ExperimentRow.created_at, ExperimentRow.finished_at)
        .where(ExperimentRow.campaign_id == campaign_id)
        .where(ExperimentRow.status.in_([st.value for st in _FINISHED]))
    ).all()
    finished = [(i, c, f) for i, c, f in finished_rows if f is not None]
    wall = None
    if finished:
        starts = [c for _, c, _ in finished]
        start = min([first_decision, *starts]) if first_decision is not None else min(starts)
        end = max(f for _, _, f in finished)
        wall = max((end - start).total_seconds(), 0.0) / len(finished)
    per_experiment: dict[int, float] = defaultdict(float)
    ids = [i for i, _, _ in finished]
    for chunk in range(0, len(ids), 500):
        for exp_id, started, ended in s.execute(
            select(StepRow.experiment_id, StepRow.started_at, StepRow.finished_at).where(
                StepRow.experiment_id.in_(ids[chunk : chunk + 500])
            )
        ):
            if started is not None and ended is not None:
                per_experiment[exp_id] += max((ended - started).total_seconds(), 0.0)
    return Timing(
        wall_s_per_experiment=wall,
        planning_s_per_decision=statistics.median(seconds) if seconds else None,
        planning_s_total=float(sum(seconds)),
        decisions=len(seconds),
        instrument_s_per_experiment=(
            statistics.median(per_experiment.values()) if per_experiment else None
        ),
        finished=len(finished),
    )
