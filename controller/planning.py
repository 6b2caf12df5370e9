"""Planner hosting: planning runs beside dispatching, never in front of it.

The campaign's event loop never calls a planner directly. It talks to a
:class:`PlannerClient`: either a Ray actor (:class:`RayPlanner`, the default, so a heavy model
can sit on a GPU node of the cluster) or a single worker thread (:class:`ThreadPlanner`, for
tests and one-process use). Both run ``tell`` and ``ask`` in submission order, so a
proposal always sees every result told before it was asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import ray

from models.campaign import CampaignSpec
from models.params import ParamValue
from models.records import Decision, Observation
from planners.base import Planner, make_planner

logger = logging.getLogger(__name__)


def build_planner(spec: CampaignSpec, seed: int) -> Planner:
    """Construct the campaign's planner (validates its name and options).

    Raises:
        RegistryError: For an unknown planner name.
        InvalidCampaignError: For invalid planner options.
    """
    import planners  # noqa: F401 - registers the built-in planners

    return make_planner(
        spec.planner.name,
        spec.space,
        list(spec.objectives),
        seed=seed,
        options=dict(spec.planner.options),
    )


class PlannerClient(Protocol):
    """What the campaign loop needs from a planner, asynchronously."""

    async def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> Decision:
        """Ask for ``n`` proposals given the pending experiments."""
        ...

    async def tell(self, observations: Sequence[Observation]) -> None:
        """Teach the planner finished experiments."""
        ...

    async def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        """Teach the planner a related campaign's finished experiments."""
        ...

    def close(self) -> None:
        """Release the planner's resources."""
        ...


class ThreadPlanner:
    """Runs a planner on one worker thread, in call order.

    Args:
        planner: The planner to host.
    """

    def __init__(self, planner: Planner) -> None:
        self._planner = planner
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner")

    async def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._planner.ask, n, list(pending))

    async def tell(self, observations: Sequence[Observation]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._planner.tell, list(observations))

    async def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._planner.tell_related, task, list(observations))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class PlannerHost:
    """The object a Ray planner actor holds: a planner built from the campaign spec."""

    def __init__(self, spec_json: Mapping[str, Any], seed: int) -> None:
        self._planner = build_planner(CampaignSpec.model_validate(dict(spec_json)), seed)

    def ask(self, n: int, pending: list[Mapping[str, ParamValue]]) -> Decision:
        """See :meth:`planners.base.Planner.ask`."""
        return self._planner.ask(n, pending)

    def tell(self, observations: list[Observation]) -> int:
        """See :meth:`planners.base.Planner.tell`; returns the number of observations held."""
        self._planner.tell(observations)
        return len(self._planner.observations)

    def tell_related(self, task: str, observations: list[Observation]) -> int:
        """See :meth:`planners.base.Planner.tell_related`; returns the task's points held."""
        self._planner.tell_related(task, observations)
        return len(self._planner.related.get(task, ()))


class RayPlanner:
    """A planner in its own Ray actor (on a GPU when the cluster has one).

    Ray runs an actor's tasks from one caller in submission order, so ``tell`` may be fired
    without waiting and a later ``ask`` still sees it.

    Args:
        spec: The campaign (the actor rebuilds the planner from it).
        seed: The campaign seed.
    """

    def __init__(self, spec: CampaignSpec, seed: int) -> None:
        gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
        actor_cls: Any = ray.remote(PlannerHost)
        self._actor: Any = actor_cls.options(num_cpus=1, num_gpus=1 if gpus >= 1 else 0).remote(
            spec.model_dump(mode="json"), seed
        )

    async def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> Decision:
        decision: Decision = await self._actor.ask.remote(n, list(pending))
        return decision

    async def tell(self, observations: Sequence[Observation]) -> None:
        self._actor.tell.remote(list(observations))

    async def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        await self._actor.tell_related.remote(task, list(observations))

    def close(self) -> None:
        ray.kill(self._actor)
