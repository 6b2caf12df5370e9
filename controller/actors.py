"""Ray actors: where ``ray.remote`` is applied, and the local Ray instance is started.

A campaign runs as one async :class:`CampaignActor` (a
:class:`~controller.loop.CampaignController` in its own worker process); its planner runs
in another actor (:class:`~controller.planning.RayPlanner`), so model fitting never blocks
dispatching. The actor takes no CPU of its own from Ray's accounting: it mostly waits on
sockets. On a cluster it runs on the node of the process that started it
(:func:`start_campaign_actor`): the instrument servers that process hosts listen there, and
the controller is not restarted by Ray (a restarted ``sdlab run`` resumes it from the
store); the planner actor goes wherever its placement asks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from controller.loop import CampaignController, ControllerOptions

logger = logging.getLogger(__name__)


class _CampaignActorImpl:
    """The actor body: a controller plus the calls the runner and operators make."""

    def __init__(
        self,
        db_url: str,
        campaign_name: str,
        endpoints: Mapping[str, str],
        options: ControllerOptions,
    ) -> None:
        self._ctl = CampaignController(db_url, campaign_name, endpoints, options)

    async def run(self) -> dict[str, Any]:
        return await self._ctl.run()

    async def progress(self) -> dict[str, Any]:
        return self._ctl.progress()

    async def pause(self, actor: str = "operator") -> None:
        await self._ctl.pause(actor)

    async def resume(self, actor: str = "operator") -> None:
        await self._ctl.resume(actor)

    async def abort(self, actor: str = "operator") -> None:
        await self._ctl.abort(actor)


CampaignActor = ray.remote(num_cpus=0, max_restarts=0)(_CampaignActorImpl)


def start_campaign_actor(
    db_url: str,
    campaign_name: str,
    endpoints: Mapping[str, str],
    options: ControllerOptions,
) -> Any:
    """Start the campaign's actor on this process's Ray node (Ray must be initialised).

    Pinned, not merely preferred: the endpoints of locally hosted instrument servers are
    loopback addresses of this machine.

    Returns:
        The actor handle.
    """
    here = ray.get_runtime_context().get_node_id()
    logger.info("campaign %s: controller actor on node %s", campaign_name, here[:12])
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    return CampaignActor.options(scheduling_strategy=strategy).remote(
        db_url, campaign_name, endpoints, options
    )


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process.

    Args:
        address: ``None`` starts a local instance bound to loopback; ``"auto"`` or
            ``"HOST:PORT"`` joins an existing cluster.
        num_cpus: CPUs a local instance offers (default: all).
    """
    if ray.is_initialized():
        return
    # Quiet, loopback-only local instance: a lab PC needs no dashboard port open.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
