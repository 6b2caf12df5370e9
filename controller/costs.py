"""What experiments cost, and the ``budget.max_cost`` ledger.

An instrument's action may declare a cost per run and a cost per unit of some of its
parameters (:class:`~instruments.driver.ActionSpec` ``cost`` and ``cost_per``, see
:mod:`models.costs`); a campaign's workflow step may override them. One experiment costs
the sum of its steps' costs, computed when it is proposed (from its parameters, the steps'
fixed values and the instruments' descriptions) and recorded with the decision that
proposed it, under ``details["experiment_costs"]``. The spent cost is the sum over
completed and pending experiments, so a restarted controller recomputes it from the store
(:func:`controller.store.queries.cost_spent`). Failed and abandoned experiments do not
count.

The cost-aware stopping rule is that of cost-constrained multi-fidelity Bayesian
optimisation (Wu, J. et al. (2019). Practical Multi-fidelity Bayesian Optimization for
Hyperparameter Tuning. UAI 35): an experiment is queued only if the cost already spent plus
its own stays within ``max_cost``; the first proposal that would pass it ends the campaign
(COMPLETED, "cost budget reached").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from instruments.driver import ActionSpec, InstrumentDescription
from models.campaign import CampaignSpec, WorkflowStep
from models.costs import affine_cost
from models.errors import InvalidCampaignError
from models.params import ParamValue

logger = logging.getLogger(__name__)


def declared_action(
    step: WorkflowStep,
    descriptions: Mapping[str, InstrumentDescription | None],
    kinds: Mapping[str, str],
) -> ActionSpec | None:
    """The action ``step`` runs, as the first described instrument of its kind declares it.

    Args:
        step: The workflow step.
        descriptions: Each instrument's description (``None`` while unreachable).
        kinds: Each instrument's kind.
    """
    for name, desc in descriptions.items():
        if desc is None or kinds.get(name) != step.kind:
            continue
        try:
            return desc.action(step.action)
        except KeyError:
            continue
    return None


def step_cost(
    step: WorkflowStep, action: ActionSpec | None, point: Mapping[str, ParamValue]
) -> float:
    """What one run of ``step`` costs for the experiment at ``point``.

    The step's own ``cost``/``cost_per`` win over the action's declaration; with neither,
    the step costs nothing.

    Raises:
        InvalidCampaignError: If a parameter the cost depends on is missing or not a number
            (key path ``workflow.cost_per.<name>``).
    """
    if step.cost is not None or step.cost_per is not None:
        fixed = step.cost if step.cost is not None else (action.cost if action else 0.0)
        per = step.cost_per if step.cost_per is not None else {}
    elif action is not None:
        fixed, per = action.cost, action.cost_per
    else:
        return 0.0
    values: dict[str, object] = {**step.fixed, **point}
    try:
        return affine_cost(fixed, per, values)
    except ValueError as exc:
        raise InvalidCampaignError(None, [("workflow.cost_per", str(exc))]) from exc


def experiment_cost(
    spec: CampaignSpec,
    descriptions: Mapping[str, InstrumentDescription | None],
    point: Mapping[str, ParamValue],
) -> float:
    """The cost of one experiment at ``point``: the sum of its workflow steps' costs.

    Raises:
        InvalidCampaignError: As :func:`step_cost`.
    """
    kinds = {i.name: i.kind for i in spec.instruments}
    return sum(
        step_cost(step, declared_action(step, descriptions, kinds), point) for step in spec.workflow
    )


class CostLedger:
    """The campaign's spent cost against ``budget.max_cost``.

    Args:
        max_cost: The cost budget, or ``None`` for none.
        completed: Cost of the experiments already completed (from the store).
        pending: Recorded cost of each experiment not yet finished, by id (from the store).
    """

    def __init__(
        self,
        max_cost: float | None,
        completed: float = 0.0,
        pending: Mapping[int, float] | None = None,
    ) -> None:
        self.max_cost = max_cost
        self.completed = completed
        self._costs: dict[int, float] = dict(pending or {})

    def spent(self, in_flight: Iterable[int]) -> float:
        """Cost of the completed experiments plus those of ``in_flight`` (ids)."""
        return self.completed + sum(self._costs.get(i, 0.0) for i in in_flight)

    def allows(self, total: float) -> bool:
        """Whether spending ``total`` in all stays within the budget."""
        return self.max_cost is None or total <= self.max_cost * (1 + 1e-12)

    def record(self, experiment_id: int, cost: float) -> None:
        """Remember the cost of an experiment just queued."""
        self._costs[experiment_id] = cost

    def finish(self, experiment_id: int, completed: bool) -> None:
        """An experiment left flight: its cost stays spent only if it completed."""
        cost = self._costs.pop(experiment_id, 0.0)
        if completed:
            self.completed += cost
