"""The controller's working records: a step ready to run, an instrument slot, settings,
and :class:`Lifecycle`, what the parts of the controller see of it."""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from instruments.client import InstrumentClient
from instruments.driver import InstrumentDescription
from instruments.security import CurveClientKeys
from models.params import ParamValue
from models.status import CampaignStatus, InstrumentState, StepStatus

if TYPE_CHECKING:
    from controller.alarms import Alarms
    from controller.estop import EmergencyStop
    from controller.health import HealthMonitor
    from controller.leasing import CampaignLease
    from controller.planning import PlannerClient
    from controller.safety import SafetyGate
    from controller.scheduling import Dispatcher
    from models.campaign import CampaignSpec


@dataclass
class Work:
    """One step of one experiment, ready for an instrument.

    Attributes:
        experiment_id: The experiment.
        index: Position of the step in the workflow.
        point: The experiment's parameters.
        attempt: Attempt number of the step (1 unless re-run).
        rerun: Whether this attempt re-runs a step whose fate was lost.
        step_id: An already-written step to send again (never accepted) or adopt.
        request_id: That step's request id.
        adopt: The instrument already has the request: wait for it, do not submit.
        step_status: The step's status in the store (RUNNING once written; QUEUED for a
            step written by an older controller and never sent).
        reason: Why a re-run runs again (written with its ``step.rerun`` event).
    """

    experiment_id: int
    index: int
    point: dict[str, ParamValue]
    attempt: int = 1
    rerun: bool = False
    step_id: int | None = None
    request_id: str | None = None
    adopt: bool = False
    step_status: StepStatus = StepStatus.RUNNING
    reason: str | None = None


@dataclass
class InstrumentSlot:
    """The controller's view of one instrument.

    Attributes:
        busy: One of our steps is running on it.
        in_service: An operator has not taken it out of service.
        silent: It has missed its heartbeats (or never answered): its state is UNKNOWN.
        faults: Consecutive faults (the circuit breaker opens at the campaign's
            ``reliability.quarantine_after``).
        quarantined_until: ``time.monotonic()`` at which a quarantine ends, if quarantined.
        last_seen: ``time.monotonic()`` of its last answer.
        reason: Why it is not available, for the operator.
        orphans: Requests given up on whose cancel was never answered: cancelled again as
            soon as the instrument answers, so a hung action does not block it for ever.
        resume: Steps recovery found on it, to finish before anything else.
        curve: The CURVE keys its links use (``None``: plaintext, loopback only).
        insecure: Plaintext to a non-loopback address was explicitly allowed.
    """

    name: str
    kind: str
    address: str
    client: InstrumentClient
    description: InstrumentDescription | None = None
    busy: bool = False
    in_service: bool = True
    silent: bool = True
    faults: int = 0
    quarantined_until: float | None = None
    last_seen: float | None = None
    reason: str | None = None
    orphans: set[str] = field(default_factory=set)
    curve: CurveClientKeys | None = None
    insecure: bool = False
    resume: deque[Work] = field(default_factory=deque)

    @property
    def state(self) -> InstrumentState:
        """What the dashboard shows: only an instrument that answers is IDLE or BUSY."""
        if not self.in_service:
            return InstrumentState.OUT_OF_SERVICE
        if self.quarantined_until is not None:
            return InstrumentState.QUARANTINED
        if self.silent or self.description is None:
            return InstrumentState.UNKNOWN
        return InstrumentState.BUSY if self.busy else InstrumentState.IDLE

    @property
    def available(self) -> bool:
        """Whether new steps may be sent to it."""
        return self.state in (InstrumentState.IDLE, InstrumentState.BUSY)


@dataclass
class ControllerOptions:
    """Settings of one controller run.

    Attributes:
        use_ray_planner: Host the planner in a Ray actor (else a worker thread).
        connect_timeout_s: How long to keep trying to reach the instruments at start.
        rpc_timeout_s: Time allowed for one protocol round trip.
        submit_wait_s: How long a submit waits for the result in the same round trip.
        max_planner_errors: Consecutive planner failures before the campaign fails.
        lease_s: Lifetime of the controller's lease on its campaign, renewed every
            ``lease_s / 6`` seconds; another controller may take the campaign over this long
            after this one stopped renewing (see :mod:`controller.store.lease`).
        lab_poll_s: How often a campaign whose steps wait for lab units looks whether
            another campaign took or freed one, in seconds (one small query each time); on
            PostgreSQL only while it cannot listen for the lab's notifications.
    """

    use_ray_planner: bool = True
    connect_timeout_s: float = 60.0
    rpc_timeout_s: float = 10.0
    submit_wait_s: float = 1.0
    max_planner_errors: int = 3
    lease_s: float = 30.0
    lab_poll_s: float = 0.02


class Lifecycle(Protocol):
    """What the intake, the step runner, recovery and the dispatcher see of the campaign
    controller: its configuration, its collaborators and its lifecycle. They read these;
    the in-flight state is the :class:`~controller.book.Book`'s, the writes the
    :class:`~controller.writer.Writer`'s."""

    spec: CampaignSpec
    options: ControllerOptions
    name: str
    campaign_id: int
    uid: str
    budget: int
    max_failures: int
    instruments: dict[str, InstrumentSlot]
    gate: SafetyGate | None
    planner: PlannerClient | None
    health: HealthMonitor | None
    alarms: Alarms
    lease: CampaignLease
    dispatch: Dispatcher
    estop: EmergencyStop
    paused: bool
    final: CampaignStatus | None

    def stop(self, status: CampaignStatus, reason: str) -> None:
        """Start nothing new; the campaign ends ``status`` once nothing is in flight."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (from any thread)."""

    async def notify(self) -> None:
        """Wake the workers."""

    def may_start_new(self) -> bool:
        """Whether new experiments may be started."""
