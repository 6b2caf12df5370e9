"""Atomic, fair grants of instruments and shared resources to experiment steps.

A step of an A-Lab style workflow needs an instrument of its kind and, often, more: the
robot arm that loads the crucible, and the crucible itself, which the experiment holds from
its first step to its last (Szymanski et al., Nature 624, 86-91, 2023). The
:class:`ResourceManager` decides which waiting steps may start now. Its rules, and why no
experiment starves and none deadlocks (``docs/resources.md`` gives the argument in full):

- **All or nothing.** A step gets its instrument and one unit of every resource it needs
  at once, or nothing; it never holds some while it waits for the rest.
- **Oldest first, with conservative backfilling.** Waiting steps are considered in order
  of priority: steps of experiments that already hold their sample container first, then
  experiments waiting to be admitted; within each group the oldest experiment (lowest id)
  first. A step that cannot be granted *reserves* whatever it needs that is free now, so a
  younger step is granted only if it takes nothing an older waiting step needs (a younger
  step that needs other things runs beside it: backfilling). The oldest waiting step is
  therefore granted as soon as the holders of what it needs finish their steps.
- **The container is the only thing held across steps,** and it is taken together with the
  first step (admission: a new experiment starts only when a container unit is free). An
  experiment that holds a container only ever waits for instruments and step resources,
  which are released when each step ends, and it goes before every experiment not yet
  admitted, so there is no cycle of experiments waiting for each other.

The manager is plain Python and knows nothing of the event loop: the controller tells it
which instruments are idle and asks it for a :class:`Plan`.

**Across campaigns.** Instruments and resources a campaign shares with others through a lab
(:mod:`models.lab`) are granted by the same rules, with the lab's view (a
:class:`~controller.lab.LabGrants`) deciding what of them is free: a unit held by another
campaign's live grant is not, and free units that campaigns waiting longer (or with a
higher priority) have a claim on are reserved for them, as an older experiment's needs are
within a campaign. A grant takes the step's lab units, with its instrument if that is a lab
instrument, by compare-and-set in one transaction (all or nothing); a take that loses a race
takes nothing and the step waits for the next plan.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from models.errors import CampaignStateError
from models.resources import ResourceSpec
from models.tables import utcnow

if TYPE_CHECKING:
    from controller.lab import LabGrants

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """A step that waits to start.

    Attributes:
        experiment_id: Its experiment (lower ids are older).
        kind: The instrument kind it runs on.
        needs: The resources it holds while it runs (one unit of each).
    """

    experiment_id: int
    kind: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class KindState:
    """The instruments of one kind as the scheduler sees them.

    Attributes:
        idle: Instruments of the kind that may take a step now.
        busy: The experiments whose steps run on the others that are in use.
        unavailable: Instruments quarantined, silent or out of service.
        elsewhere: Lab instruments of the kind held by other campaigns or down in the
            lab, in words (``"station-2, held by campaign B"``).
    """

    idle: int
    busy: tuple[int, ...] = ()
    unavailable: int = 0
    elsewhere: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """What a granted step holds.

    Attributes:
        request: The step.
        units: The unit of each resource it needs, by resource name.
        container: The container unit it was admitted with (``None`` if the experiment
            already held one, or the campaign has no sample container).
    """

    request: Request
    units: Mapping[str, str]
    container: str | None = None


@dataclass
class Plan:
    """Which waiting steps may start now, and why the others wait.

    Attributes:
        grants: The steps that may start, in priority order.
        waiting: For every other step's experiment, what it waits for, in words.
    """

    grants: list[Request] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)


class ResourceManager:
    """Keeps who holds which resource unit and decides which steps start.

    Args:
        resources: The campaign's ``[[resources]]``.
        container: The resource that holds each experiment's sample (``None``: none).
        lab: The lab the campaign shares instruments and resources with (``None``: none).

    Raises:
        CampaignStateError: If ``container`` is not one of ``resources``.
    """

    def __init__(
        self,
        resources: Sequence[ResourceSpec],
        container: str | None = None,
        lab: LabGrants | None = None,
    ) -> None:
        self.units: dict[str, list[str]] = {r.name: r.unit_names for r in resources}
        if container is not None and container not in self.units:
            raise CampaignStateError(f"sample_container: unknown resource {container!r}")
        self.container = container
        self._pool_of = {u: name for name, units in self.units.items() for u in units}
        self._holder: dict[str, int] = {}
        self._step: dict[int, list[str]] = {}
        self._containers: dict[int, str] = {}
        self.lab = lab
        self._lab_step: dict[int, list[str]] = {}  # lab units of each running step
        self._since: dict[Request, datetime] = {}  # when each waiting lab request arrived

    # ------------------------------------------------------------------ state

    def free(self, resource: str) -> list[str]:
        """The units of ``resource`` nobody holds, in declaration order."""
        return [u for u in self.units[resource] if u not in self._holder]

    def holders(self, resource: str) -> list[int]:
        """The experiments holding units of ``resource``, by unit order."""
        return [self._holder[u] for u in self.units[resource] if u in self._holder]

    def held(self) -> dict[str, int]:
        """Every unit held now, with the experiment holding it."""
        return dict(self._holder)

    def container_of(self, experiment_id: int) -> str | None:
        """The container unit the experiment holds, if any."""
        return self._containers.get(experiment_id)

    def needs_container(self, experiment_id: int) -> bool:
        """Whether the experiment must be admitted (take a container) with its next step."""
        return self.container is not None and experiment_id not in self._containers

    def priority(self, request: Request) -> tuple[int, int]:
        """Sort key of a waiting step: admitted experiments first, then oldest first."""
        return (1 if self.needs_container(request.experiment_id) else 0, request.experiment_id)

    # ------------------------------------------------------------------ planning

    def plan(self, requests: Iterable[Request], kinds: Mapping[str, KindState]) -> Plan:
        """Decide which of the waiting steps start now.

        Args:
            requests: The waiting steps (any order; at most one per experiment).
            kinds: The state of the instruments of each kind the steps run on.

        Returns:
            The steps to grant, in priority order, and the reason each other step waits.
        """
        plan = Plan()
        requests = sorted(requests, key=self.priority)
        since = self._lab_since(requests)
        free = {name: len(self._free_here(name, since)) for name in self.units}
        idle = {k: st.idle for k, st in kinds.items()}
        if self.lab is not None:
            for k in idle:
                if self.lab.shares(f"kind:{k}"):
                    idle[k] = min(idle[k], self.lab.available(f"kind:{k}", since))
        ahead: dict[str, int] = {}  # per pool: the first experiment granted or reserving
        for req in requests:
            needs = Counter(req.needs)
            if self.needs_container(req.experiment_id):
                assert self.container is not None
                needs[self.container] += 1
            why: list[str] = []
            if idle.get(req.kind, 0) < 1:
                why.append(self._kind_reason(req.kind, kinds.get(req.kind), ahead, since))
            for name, n in needs.items():
                if free.get(name, 0) < n:
                    why.append(self._resource_reason(name, ahead, since))
            ahead.setdefault(f"kind:{req.kind}", req.experiment_id)
            for name in needs:
                ahead.setdefault(name, req.experiment_id)
            if not why:
                plan.grants.append(req)
                idle[req.kind] -= 1
                for name, n in needs.items():
                    free[name] -= n
                continue
            plan.waiting[req.experiment_id] = "; ".join(why)
            # Reserve what it needs that is free now: nothing younger may take it.
            idle[req.kind] = max(0, idle.get(req.kind, 0) - 1)
            for name, n in needs.items():
                free[name] = max(0, free.get(name, 0) - n)
        if self.lab is not None:
            self._record_lab_waits(requests, plan, since)
        return plan

    # ------------------------------------------------------------------ the lab's share

    def _lab_pools(self, req: Request) -> set[str]:
        """The lab pools a request takes from (none without a lab)."""
        if self.lab is None:
            return set()
        pools = {f"kind:{req.kind}", *req.needs}
        if self.needs_container(req.experiment_id) and self.container is not None:
            pools.add(self.container)
        return {p for p in pools if self.lab.shares(p)}

    def _lab_since(self, requests: Sequence[Request]) -> datetime | None:
        """Since when this campaign's oldest waiting lab request has waited (and refresh
        the view of the lab)."""
        if self.lab is None:
            return None
        self.lab.refresh()
        now = utcnow()
        lab_requests = [r for r in requests if self._lab_pools(r)]
        self._since = {r: self._since.get(r, now) for r in lab_requests}
        return min(self._since.values(), default=None)

    def _record_lab_waits(
        self, requests: Sequence[Request], plan: Plan, since: datetime | None
    ) -> None:
        assert self.lab is not None
        waiting = [r for r in requests if r.experiment_id in plan.waiting]
        pools: set[str] = set()
        for r in waiting:
            pools |= self._lab_pools(r)
        first = min((self._since[r] for r in waiting if r in self._since), default=since)
        try:
            self.lab.wait_on(pools, first)
        except Exception:  # the claim is renewed at the next plan
            logger.exception("could not record the lab units this campaign waits for")

    def _free_here(self, name: str, since: datetime | None) -> list[str]:
        """Units of ``name`` this campaign may take now (lab claims ahead counted)."""
        free = self.free(name)
        if self.lab is None or not self.lab.shares(name):
            return free
        free = [u for u in free if self.lab.unit_free(u)]
        return free[: self.lab.available(name, since)]

    # ------------------------------------------------------------------ reasons

    def _kind_reason(
        self,
        kind: str,
        st: KindState | None,
        ahead: Mapping[str, int],
        since: datetime | None = None,
    ) -> str:
        pool = f"kind:{kind}"
        if self.lab is not None and self.lab.shares(pool):
            reserved = self.lab.reserved_reason(pool, since)
            if reserved is not None and (st is None or st.idle > 0):
                return f"instrument kind {kind}: {reserved}"
        if st is not None and st.idle > 0:
            return f"instrument kind {kind}: reserved for older exp {ahead[f'kind:{kind}']}"
        others = list(st.elsewhere) if st is not None else []
        if st is None or not st.busy:
            if others:
                return f"instrument kind {kind}: {'; '.join(others)}"
            down = st.unavailable if st is not None else 0
            return f"instrument kind {kind}: none available ({down} out of service or silent)"
        running = ", ".join([f"exp {e}" for e in st.busy] + others)
        return f"instrument kind {kind}: all {len(st.busy) + len(others)} busy ({running})"

    def _resource_reason(
        self, name: str, ahead: Mapping[str, int], since: datetime | None = None
    ) -> str:
        shared = self.lab is not None and self.lab.shares(name)
        if shared:
            assert self.lab is not None
            reserved = self.lab.reserved_reason(name, since)
            if reserved is not None:
                return f"resource {name} {reserved}"
        if self._free_here(name, since):
            return f"resource {name} reserved for older exp {ahead[name]}"
        held = [f"exp {e}" for e in dict.fromkeys(self.holders(name))]
        if shared:
            assert self.lab is not None
            held += self.lab.elsewhere(name)
        if name == self.container and not shared:
            return f"{name}: none free"
        return f"resource {name} held by {', '.join(held)}" if held else f"{name}: none free"

    # ------------------------------------------------------------------ grants

    def grant(
        self, request: Request, instrument: str | None = None, *, staged: bool = False
    ) -> Grant:
        """Take the units a step needs (and its container, if it is being admitted).

        Args:
            request: The step.
            instrument: The instrument it runs on; a lab instrument is granted together
                with the step's lab units.
            staged: Take the step's lab units in the transaction that writes the step
                (:meth:`controller.lab.LabGrants.stage`), not now: units the campaign's
                ended steps are giving back pass straight to it there.

        Raises:
            CampaignStateError: If a unit is not free (the plan was not followed), or the
                experiment already holds step resources; nothing is taken then.
            GrantConflictError: If another campaign holds one of the lab units (it took it
                since the lab was last read); nothing is taken then.
        """
        exp = request.experiment_id
        if exp in self._step:
            raise CampaignStateError(f"experiment {exp} already holds {self._step[exp]}")
        wanted = list(request.needs)
        admit = self.needs_container(exp)
        if admit:
            assert self.container is not None
            wanted.append(self.container)
        taken: dict[str, str] = {}
        picked: list[str] = []
        for name in wanted:
            if name not in self.units:
                raise CampaignStateError(f"needs: unknown resource {name!r}")
            free = [u for u in self.free(name) if u not in picked]
            if self.lab is not None and self.lab.shares(name):
                free = [u for u in free if self.lab.unit_free(u)]
            if not free:
                raise CampaignStateError(f"resource {name}: no unit free for experiment {exp}")
            picked.append(free[0])
            taken[name] = free[0]
        container = taken.pop(self.container) if admit and self.container else None
        lab_units: list[str] = []
        if self.lab is not None:
            if instrument is not None and instrument in self.lab.instruments:
                lab_units.append(instrument)
            lab_units += [u for u in picked if self.lab.shares(self._pool_of[u])]
            if staged:
                self.lab.stage(lab_units, exp)
            else:
                self.lab.take(lab_units, exp)  # all or nothing, or raise before anything is held
        for unit in picked:
            self._holder[unit] = exp
        if container is not None:
            self._containers[exp] = container
        self._step[exp] = list(taken.values())
        self._lab_step[exp] = [u for u in lab_units if u != container]
        self._since.pop(request, None)
        return Grant(request, taken, container)

    def release_step(self, experiment_id: int, *, hand_over: bool = False) -> list[str]:
        """Give back the units the experiment's step held (not its container).

        Args:
            experiment_id: The experiment.
            hand_over: Let the next plan hand the step's lab units to another step of the
                campaign (:meth:`controller.lab.LabGrants.give_back`); ``False``: release
                them now.
        """
        units = self._step.pop(experiment_id, [])
        for unit in units:
            self._holder.pop(unit, None)
        if self.lab is not None:
            held = self.lab.unstage(experiment_id, self._lab_step.pop(experiment_id, []))
            if hand_over:
                self.lab.give_back(held)
            else:
                self.lab.release(held)
        return units

    def release_container(self, experiment_id: int) -> str | None:
        """Give back the experiment's container unit (its experiment has ended)."""
        unit = self._containers.pop(experiment_id, None)
        if unit is not None:
            self._holder.pop(unit, None)
            if self.lab is not None and self.container and self.lab.shares(self.container):
                self.lab.release([unit])
        return unit

    def release(self, experiment_id: int) -> None:
        """Give back everything the experiment holds."""
        self.release_step(experiment_id)
        self.release_container(experiment_id)

    # ------------------------------------------------------------------ recovery

    def adopt_container(self, experiment_id: int, unit: str) -> bool:
        """Record that the experiment holds container ``unit`` (rebuilt from the store).

        Returns:
            Whether it was recorded (``False``: not a unit of the container resource, or
            held by another experiment; the experiment will be admitted again).
        """
        if self.container is None or self._pool_of.get(unit) != self.container:
            logger.warning("experiment %d: %r is not a container unit", experiment_id, unit)
            return False
        if self._holder.get(unit, experiment_id) != experiment_id:
            logger.warning(
                "experiment %d: container %s is held by experiment %d",
                experiment_id,
                unit,
                self._holder[unit],
            )
            return False
        self._holder[unit] = experiment_id
        self._containers[experiment_id] = unit
        return True

    def adopt_step(self, experiment_id: int, needs: Sequence[str]) -> list[str]:
        """Record that a step found running after a restart holds its resources.

        Its units were granted before the restart, so free ones are there; should one not
        be (the campaign file changed), the step runs without it and a warning is logged.

        Returns:
            The units recorded.
        """
        self.release_step(experiment_id)
        units: list[str] = []
        for name in needs:
            free = [u for u in self.free(name) if u not in units] if name in self.units else []
            if not free:
                logger.warning("experiment %d: no %s unit left to adopt", experiment_id, name)
                continue
            units.append(free[0])
            self._holder[free[0]] = experiment_id
        self._step[experiment_id] = units
        return units

    def adopt_lab(self, held: Mapping[str, int | None], resumed: Iterable[int]) -> list[str]:
        """Keep the lab grants of steps found running and of containers held; free the rest.

        Called after :meth:`adopt_step` and :meth:`adopt_container` with the grants an
        earlier controller of the campaign left (:meth:`controller.lab.LabGrants.adopt`).

        Returns:
            The lab units given back.
        """
        if self.lab is None:
            return []
        running = set(resumed)
        keep: list[str] = []
        for unit, exp in held.items():
            if exp is None:
                continue
            if self._containers.get(exp) == unit:
                keep.append(unit)
                continue
            if exp not in running:
                continue
            pool = self._pool_of.get(unit)
            local = self._step.get(exp, [])
            if pool is not None and unit not in local:
                # hold the unit the lab granted, not the one adopt_step picked
                for i, other in enumerate(local):
                    if self._pool_of.get(other) == pool and unit not in self._holder:
                        self._holder.pop(other, None)
                        local[i] = unit
                        self._holder[unit] = exp
                        break
            self._lab_step.setdefault(exp, []).append(unit)
            keep.append(unit)
        drop = [u for u in held if u not in keep]
        self.lab.release(drop)
        return drop
