"""Planner hosting: planning runs beside dispatching, never in front of it.

The campaign's event loop never calls a planner directly. It talks to a
:class:`PlannerClient`: either a Ray actor (:class:`RayPlanner`, the default, so a heavy model
can sit on a GPU node of the cluster) or a single worker thread (:class:`ThreadPlanner`, for
tests and one-process use). Both run ``tell`` and ``ask`` in submission order, so a
proposal always sees every result told before it was asked for.

The Ray actor is placed by the campaign's ``[planner.placement]``
(:class:`~models.placement.PlannerPlacement`) and survives the loss of its node: Ray starts
it again elsewhere (``max_restarts``), its constructor (:class:`PlannerHost`) reads what the
planner knew back from the store, with the same function a restarted controller uses
(:func:`~controller.store.queries.observations`), and :class:`RayPlanner` sends each call
again once the actor is back (Ray fault-tolerance docs, "Actor fault tolerance").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from sqlalchemy.engine import make_url

from controller.store import add_event, make_engine, observations, session_factory, transaction
from controller.store.queries import related_observations
from models.campaign import CampaignSpec
from models.errors import PlannerUnavailableError
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


@dataclass(frozen=True)
class StoreRef:
    """Where a planner actor reads its campaign's history back from.

    Attributes:
        db_url: SQLAlchemy URL of the store (every node that may run the planner must reach
            it: a PostgreSQL server, or a SQLite file on a shared disk).
        campaign_id: The campaign.
    """

    db_url: str
    campaign_id: int

    @classmethod
    def for_campaign(cls, db_url: str, campaign_id: int) -> StoreRef | None:
        """A reference to the campaign's store, or ``None`` for an in-memory SQLite store
        (no other process can read it: the actor then starts empty and is taught by the
        controller alone)."""
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            return None
        return cls(db_url, campaign_id)


class PlannerHost:
    """The object a Ray planner actor holds: a planner built from the campaign spec.

    With a ``store`` the constructor teaches the planner everything the store says it has
    learned so far (related campaigns first, then what
    :func:`~controller.store.queries.known_observations` says the campaign's planner knows),
    as a restarted controller does: Ray restarts an actor by calling its constructor again,
    so an actor rebuilt on another node after its node died knows what the lost one knew.
    An observation it already holds (same experiment, same values) is not taught twice, so
    the controller's own ``tell`` of the same history, or of a result it sent again after
    the restart, changes nothing. Each start is recorded as a ``planner.started`` event
    with the Ray node it runs on.

    Args:
        spec_json: The campaign spec, as JSON.
        seed: The campaign seed.
        store: Where to read the history from (``None``: start empty).
    """

    def __init__(
        self, spec_json: Mapping[str, Any], seed: int, store: StoreRef | None = None
    ) -> None:
        spec = CampaignSpec.model_validate(dict(spec_json))
        self._planner = build_planner(spec, seed)
        self._held: dict[tuple[str | None, int], list[Observation]] = {}
        if store is not None:
            self._rebuild(spec, store)

    def _rebuild(self, spec: CampaignSpec, store: StoreRef) -> None:
        t0 = time.perf_counter()
        engine = make_engine(store.db_url)
        try:
            sessions = session_factory(engine)
            with transaction(sessions, read_only=True) as s:
                related = related_observations(
                    s, spec.planner.options.get("related_campaigns", []), list(spec.objectives)
                )
                history = observations(s, store.campaign_id, list(spec.objectives))
            for task, told in related.items():
                self.tell_related(task, told)
            self.tell(history)
            where = _where()
            with transaction(sessions) as s:
                add_event(
                    s,
                    "planner.started",
                    f"planner {spec.planner.name} "
                    f"{'restarted' if where.get('restarted') else 'started'} on node "
                    f"{where.get('node_id', '?')[:12]} ({where.get('node_ip', 'no Ray')}) with "
                    f"{len(history)} observations from the store",
                    campaign_id=store.campaign_id,
                    data={
                        **where,
                        "observations": len(history),
                        "related": {k: len(v) for k, v in related.items()},
                        "rebuild_s": time.perf_counter() - t0,
                    },
                    actor="planner",
                )
        finally:
            engine.dispose()
        logger.info(
            "planner of campaign %d rebuilt from the store: %d observations",
            store.campaign_id,
            len(history),
        )

    def _new(self, task: str | None, observations: Sequence[Observation]) -> list[Observation]:
        """The observations not already held (an observation without an id always is new)."""
        out: list[Observation] = []
        for obs in observations:
            if obs.experiment_id is None:
                out.append(obs)
                continue
            held = self._held.setdefault((task, obs.experiment_id), [])
            if obs not in held:
                held.append(obs)
                out.append(obs)
        return out

    def ask(self, n: int, pending: list[Mapping[str, ParamValue]]) -> Decision:
        """See :meth:`planners.base.Planner.ask`."""
        return self._planner.ask(n, pending)

    def tell(self, observations: list[Observation]) -> int:
        """See :meth:`planners.base.Planner.tell`; returns the number of observations held."""
        new = self._new(None, observations)
        if new:
            self._planner.tell(new)
        return len(self._planner.observations)

    def tell_related(self, task: str, observations: list[Observation]) -> int:
        """See :meth:`planners.base.Planner.tell_related`; returns the task's points held."""
        new = self._new(task, observations)
        if new:
            self._planner.tell_related(task, new)
        return len(self._planner.related.get(task, ()))

    def where(self) -> dict[str, Any]:
        """The Ray node the actor runs on (see :func:`_where`)."""
        return _where()


def _where() -> dict[str, Any]:
    """The Ray node this process runs on, and whether its actor was restarted.

    Returns:
        ``node_id``, ``node_ip``, ``pid``, ``restarted`` and the actor's ``resources``;
        empty outside Ray.
    """
    if not ray.is_initialized():
        return {}
    ctx = ray.get_runtime_context()
    out: dict[str, Any] = {"node_id": ctx.get_node_id(), "pid": os.getpid()}
    try:
        out["node_ip"] = ray.util.get_node_ip_address()
        out["restarted"] = bool(ctx.was_current_actor_reconstructed)
        out["resources"] = dict(ctx.get_assigned_resources())
    except (AssertionError, RuntimeError):  # not inside an actor
        out["restarted"] = False
    return out


ACTOR_GONE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
"""What a call to an actor raises while its process or node is lost (and maybe restarting)."""


class RayPlanner:
    """A planner in its own Ray actor, placed by the campaign's ``[planner.placement]``.

    Ray runs an actor's tasks from one caller in submission order. ``tell`` waits until the
    actor's planner has taken the observations and raises what the planner raised, as
    :meth:`ThreadPlanner.tell` does. When the actor's process or node
    dies, Ray starts it again (``placement.max_restarts``) on a node that offers its
    resources, and the new actor rebuilds its planner from the store (:class:`PlannerHost`).
    Meanwhile a call fails with one of :data:`ACTOR_GONE`; ``ask`` and ``tell_related`` are
    sent again until the actor answers or ``placement.restart_timeout_s`` passes, and each
    ``tell`` the lost actor never acknowledged is sent again before the next ``ask`` (the
    new actor ignores what it already read from the store). Nothing the planner returns is
    written before it returns, so a lost ``ask`` leaves no trace in the store.

    Args:
        spec: The campaign (the actor rebuilds the planner from it).
        seed: The campaign seed.
        store: Where a (re)started actor reads the campaign's history back from.
    """

    def __init__(self, spec: CampaignSpec, seed: int, store: StoreRef | None = None) -> None:
        placement = spec.planner.placement
        offered = ray.cluster_resources() if ray.is_initialized() else {}
        gpus = offered.get("GPU", 0)
        self._placement = placement
        missing = {k: v for k, v in placement.resources.items() if offered.get(k, 0) < v}
        if missing:
            logger.warning(
                "campaign %s: no node offers the planner's resources %s yet; the planner "
                "waits until one joins the cluster",
                spec.campaign.name,
                missing,
            )
        actor_cls: Any = ray.remote(PlannerHost)
        self._actor: Any = actor_cls.options(
            num_cpus=placement.num_cpus,
            num_gpus=placement.gpus(gpus),
            resources=dict(placement.resources),
            max_restarts=placement.max_restarts,
        ).remote(spec.model_dump(mode="json"), seed, store)
        self._unacked: list[tuple[Any, list[Observation]]] = []
        self.retries = 0
        """Calls sent again because the actor was lost (for the operator and tests)."""

    async def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> Decision:
        decision: Decision = await self._call("ask", n, list(pending))
        return decision

    async def tell(self, observations: Sequence[Observation]) -> None:
        """Tell the actor's planner, and wait until it has taken the observations.

        Raises:
            Exception: What the planner's ``tell`` raised (e.g.
                :class:`~models.errors.PlannerError`), as :meth:`ThreadPlanner.tell` raises
                it. A tell the lost actor never took is sent again before the next call.
        """
        told = list(observations)
        await self._settle_tells()
        ref = self._actor.tell.remote(told)
        try:
            await ref
        except ACTOR_GONE:
            self._unacked.append((ref, told))  # settled (sent again) before the next call
        except ray.exceptions.RayTaskError as exc:
            raise _cause(exc) from None

    async def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        await self._call("tell_related", task, list(observations))

    async def where(self) -> dict[str, Any]:
        """The node the actor runs on now (waits for a restart like any call)."""
        out: dict[str, Any] = await self._call("where")
        return out

    def close(self) -> None:
        ray.kill(self._actor)

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the actor, sending the call (and lost tells) again while it restarts.

        Raises:
            PlannerUnavailableError: If the actor did not answer within
                ``placement.restart_timeout_s`` (at once with ``max_restarts = 0``, or when
                its constructor failed).
        """
        t0 = time.monotonic()
        attempts = 0
        delay_s = 0.1
        while True:
            attempts += 1
            try:
                await self._settle_tells()
                return await getattr(self._actor, method).remote(*args)
            except ACTOR_GONE as exc:
                waited = time.monotonic() - t0
                # A constructor that raised (the store unreachable from the planner's node)
                # is not retried by Ray: neither is the call.
                gone_for_good = self._placement.max_restarts == 0 or bool(
                    getattr(exc, "actor_init_failed", False)
                )
                if gone_for_good or waited > self._placement.restart_timeout_s:
                    raise PlannerUnavailableError(
                        method, waited, attempts, f"{type(exc).__name__}: {exc}"
                    ) from exc
                self.retries += 1
                logger.warning(
                    "planner actor lost (%s); sending %s again in %.1f s (attempt %d)",
                    type(exc).__name__,
                    method,
                    delay_s,
                    attempts + 1,
                )
                await asyncio.sleep(delay_s)
                delay_s = min(2.0, delay_s * 2)

    async def _settle_tells(self) -> None:
        """Wait for the tells the lost actor never took; send them again.

        A resent tell is settled before the next call after it. A resent tell that failed
        for another reason (a planner that refused the observation) is logged and dropped:
        the call it was resent before is not the one that told it.
        """
        unacked, self._unacked = self._unacked, []
        lost: list[list[Observation]] = []
        for ref, told in unacked:
            try:
                await ref
            except ACTOR_GONE:
                lost.append(told)
            except Exception:
                logger.exception("planner tell of %d observations failed", len(told))
        for told in lost:
            self._unacked.append((self._actor.tell.remote(told), told))
        if lost:
            self.retries += len(lost)
            logger.warning("%d tells the lost planner actor never took sent again", len(lost))


def _cause(exc: ray.exceptions.RayTaskError) -> BaseException:
    """The exception the actor's method raised (what the same call raises in a thread)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
