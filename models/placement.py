"""Where a campaign's planner runs on a Ray cluster, and how it survives losing that node.

The ``[planner.placement]`` table of a campaign file asks Ray for what the planner's actor
needs: CPUs, GPUs, and custom node resources (a ``model_node = 1`` resource that only the
model server of the lab offers, so the planner lands there). Ray places the actor on a node
that has them; when that node dies Ray starts the actor again (up to ``max_restarts``
times) on a node that still has them, and the new actor rebuilds what the planner knew from
the store (Ray fault-tolerance docs, "Actor fault tolerance").

``docs/campaigns.md`` documents the keys, ``docs/deployment.md`` how to start such a
cluster.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

RESOURCE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
"""What a custom Ray resource may be called here."""

RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
"""Ray's own resources: asked for with ``num_cpus``/``num_gpus``, never by name."""

MAX_RESTARTS = 1000
"""Most restarts ``max_restarts`` may allow (``-1`` allows any number)."""

ResourceName = Annotated[str, Field(pattern=RESOURCE_NAME_PATTERN, max_length=128)]
ResourceAmount = Annotated[float, Field(gt=0.0, le=1e9, allow_inf_nan=False)]


class PlannerPlacement(BaseModel):
    """The ``[planner.placement]`` table: what the planner's Ray actor asks for.

    Only :class:`~controller.planning.RayPlanner` reads it; a planner run on a thread of the
    controller (``use_ray_planner = False``) ignores it. It is not part of the campaign's
    hash: moving a resumed campaign's planner to another node changes no result.

    Attributes:
        num_cpus: CPUs the actor holds while it lives.
        num_gpus: GPUs it holds (fractions share one); ``None``: one GPU when the cluster
            has any, none otherwise.
        resources: Custom node resources it needs, by name (e.g. ``{model_node = 1}``):
            the actor runs only on a node started with ``--resources`` offering them.
        max_restarts: How often Ray starts the actor again after its process or node died
            (``-1``: always; ``0``: never, a lost planner fails the campaign's planning).
        restart_timeout_s: How long, in seconds, one planner call waits for a restarted
            actor (a node to be declared dead, another to take the actor) before it counts
            as a planner error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(default=1.0, ge=0.0, le=1e6, allow_inf_nan=False)
    num_gpus: float | None = Field(default=None, ge=0.0, le=1e4, allow_inf_nan=False)
    resources: dict[ResourceName, ResourceAmount] = Field(default_factory=dict)
    max_restarts: int = Field(default=3, ge=-1, le=MAX_RESTARTS)
    restart_timeout_s: float = Field(default=120.0, gt=0.0, le=86_400.0, allow_inf_nan=False)

    @field_validator("resources")
    @classmethod
    def _not_reserved(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name in RESERVED_RESOURCES:
                key = "num_cpus" if name == "CPU" else "num_gpus" if name == "GPU" else None
                hint = f"ask for it with {key}" if key else "Ray sets it itself"
                raise ValueError(f"{name!r} is one of Ray's own resources: {hint}")
        return value

    def gpus(self, cluster_gpus: float) -> float:
        """The GPUs to ask for on a cluster that has ``cluster_gpus`` in all."""
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if cluster_gpus >= 1 else 0.0
