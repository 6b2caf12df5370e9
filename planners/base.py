"""The planner contract and the planner registry.

A planner turns what a campaign has learned so far (:class:`~models.records.Observation` s,
given with :meth:`Planner.tell`) and the experiments still running (``pending``) into the
next experiments to run (a :class:`~models.records.Decision`, from :meth:`Planner.ask`).

Adding a planner is a subclass, a ``@register_planner("name")`` decorator and a test file::

    @register_planner("my-planner")
    class MyPlanner(Planner):
        version = "1"

        class Options(PlannerOptions):
            batch_limit: int = 4

        def ask(self, n, pending=()):
            ...

Options come from the campaign's ``[planner.options]`` table. Each planner declares them as a
pydantic model (``Options``, extra keys forbidden); an unknown or invalid option raises
:class:`~models.errors.InvalidCampaignError` whose problem names the key path
``planner.options.<key>``.

Determinism: every random choice a planner makes in one ``ask`` is derived from
:meth:`Planner.decision_seed`, a function of the campaign seed, the number of observations,
the number of pending experiments and how often this planner instance was already asked in
exactly that state (``repeat``, normally 0). A planner rebuilt from the store therefore
replays the decisions the store records. Planners that draw from torch's global generator do
so inside :func:`surrogates.seeding.seeded`, which runs seeded sections of different threads
one after the other, so that two planners deciding at once in one process cannot draw from
each other's sequences.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from models.errors import InvalidCampaignError, ParameterLimitError, PlannerError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from models.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "Planner",
    "PlannerOptions",
    "make_planner",
    "planner_names",
    "register_planner",
]


_BUILTIN_PLANNERS = {
    "random": "planners.random",
    "sobol": "planners.random",
    "bo": "planners.bo",
    "qlognei": "planners.bo",
    "qlognehvi": "planners.bo",
    "uncertainty": "planners.active",
    "boundary": "planners.boundary",
    "sara": "planners.sara",
    "discovery": "planners.discovery",
    "mfbo": "planners.multifidelity",
    "alab": "planners.alab",
    "screening": "planners.screening",
}
"""The built-in planners: name -> the module whose import registers it, imported on the
first lookup of that name (so a campaign of random points never imports BoTorch)."""


class PlannerOptions(BaseModel):
    """Base of every planner's options model: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _option_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic validation error into ``(key_path, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        path = f"planner.options.{loc}" if loc else "planner.options"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append((path, msg))
    return problems


class Planner(ABC):
    """Base class of every planner.

    Subclasses set ``name`` (via :func:`register_planner`) and ``version``, declare their
    options as a nested ``Options`` model and implement :meth:`ask`.

    Attributes:
        space: The search space proposals must lie in.
        objectives: The campaign's objectives, in campaign order.
        seed: The campaign seed every decision's randomness derives from.
        options: The validated options (an instance of the class's ``Options`` model).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Options: ClassVar[type[PlannerOptions]] = PlannerOptions

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Create a planner.

        Args:
            space: The search space.
            objectives: The objectives (at least one, distinct names).
            seed: Non-negative campaign seed.
            **options: Planner-specific options (see the class's ``Options`` model).

        Raises:
            InvalidCampaignError: If an option is unknown or invalid (key path
                ``planner.options.<key>``).
            PlannerError: If the objectives or the seed are unusable.
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PlannerError(f"seed must be a non-negative integer, got {seed!r}")
        if not objectives:
            raise PlannerError("a planner needs at least one objective")
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise PlannerError(f"objective names must be distinct, got {names}")
        try:
            self.options = type(self).Options.model_validate(options)
        except ValidationError as exc:
            raise InvalidCampaignError(None, _option_problems(exc)) from exc
        self.space = space
        self.objectives: tuple[Objective, ...] = tuple(objectives)
        self.seed = seed
        self._observations: list[Observation] = []
        self._related: dict[str, list[Observation]] = {}
        self._asks_by_state: dict[tuple[int, int], int] = {}

    @property
    def observations(self) -> tuple[Observation, ...]:
        """Every observation told so far, in the order told (failed ones included)."""
        return tuple(self._observations)

    def tell(self, observations: Sequence[Observation]) -> None:
        """Add finished experiments to what the planner knows.

        An infeasible observation outside the search space (a proposal the safety gate
        refused because it left the campaign's bounds) is skipped: the planner cannot
        represent the point, and it never proposes outside the space anyway.

        Args:
            observations: New observations; each feasible one's parameters must lie in the
                space.

        Raises:
            PlannerError: If a feasible observation's parameters do not fit the search space.
        """
        checked: list[Observation] = []
        for obs in observations:
            try:
                params = self.space.validate_point(obs.parameters)
            except ParameterLimitError as exc:
                which = f"experiment {obs.experiment_id}" if obs.experiment_id else "observation"
                if not obs.feasible:
                    logger.info(
                        "planner %s: infeasible %s outside the space: %s", self.name, which, exc
                    )
                    continue
                raise PlannerError(f"{which} does not fit the search space: {exc}") from exc
            checked.append(
                Observation(
                    parameters=params,
                    objectives=dict(obs.objectives),
                    feasible=obs.feasible,
                    experiment_id=obs.experiment_id,
                    uncertainties=dict(obs.uncertainties),
                    measurements=dict(obs.measurements),
                )
            )
        self._observations.extend(checked)

    @property
    def related(self) -> dict[str, tuple[Observation, ...]]:
        """What each related task (an earlier campaign) measured, by task name."""
        return {k: tuple(v) for k, v in self._related.items()}

    def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        """Add observations of a related task (another campaign on the same space).

        Planners that model related tasks (the BO planners' ``related_campaigns``) use them;
        the others keep them and ignore them. Only feasible observations inside this
        planner's space are kept: a related campaign may have searched a wider box.

        Args:
            task: The related task's name (the earlier campaign's).
            observations: Its finished experiments.
        """
        kept = []
        for obs in observations:
            if not obs.feasible:
                continue
            try:
                params = self.space.validate_point(obs.parameters)
            except ParameterLimitError:
                continue
            kept.append(Observation(params, dict(obs.objectives), True, obs.experiment_id))
        self._related.setdefault(task, []).extend(kept)

    @abstractmethod
    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose up to ``n`` experiments.

        Args:
            n: Number of proposals wanted (at least 1).
            pending: Parameters of experiments that were proposed earlier and are still
                running; the planner must not propose them again.

        Returns:
            The decision, holding at most ``n`` proposals inside the search space. Most
            planners return exactly ``n``; one that has fewer worth running returns fewer,
            and one that has nothing more to propose returns none, saying why in
            ``details["finished"]``: the controller then completes the campaign once the
            experiments in flight are done.
        """

    def decision_seed(self, n_pending: int) -> tuple[int, int]:
        """The seed of the next decision, and its ``repeat`` count; counts the ask.

        The seed is a hash of (campaign seed, number of observations, ``n_pending``,
        ``repeat``), where ``repeat`` is how many times this instance was already asked in the
        same state (0 in the ordinary ask-dispatch-tell flow, so a rebuilt planner agrees).

        Args:
            n_pending: Number of pending experiments in this ask.

        Returns:
            ``(seed, repeat)``: a 63-bit seed and the repeat count.
        """
        state = (len(self._observations), n_pending)
        repeat = self._asks_by_state.get(state, 0)
        self._asks_by_state[state] = repeat + 1
        seq = np.random.SeedSequence([self.seed, state[0], state[1], repeat])
        return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)), repeat

    def decision(
        self,
        proposals: Sequence[Proposal],
        n_pending: int,
        started: float,
        details: Mapping[str, Any],
        candidate_scores: Sequence[float] = (),
    ) -> Decision:
        """The :class:`Decision` of one ``ask``, with what is needed to replay it.

        Args:
            proposals: The points proposed, best first.
            n_pending: How many pending experiments the planner was told about.
            started: ``time.perf_counter()`` when the ask began.
            details: Planner-specific replay details (phase, hyperparameters, ...).
            candidate_scores: Scores of the candidates considered.
        """
        return Decision(
            proposals=list(proposals),
            planner=self.name,
            version=self.version,
            seed=self.seed,
            n_train=len(self._observations),
            n_pending=n_pending,
            candidate_scores=[float(v) for v in candidate_scores],
            seconds=time.perf_counter() - started,
            details=dict(details),
        )

    def check_ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> None:
        """Check the arguments of :meth:`ask`.

        Raises:
            PlannerError: If ``n`` is not a positive integer.
            ParameterLimitError: If a pending point does not fit the search space.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PlannerError(f"{self.name}: ask needs n >= 1, got {n!r}")
        for point in pending:
            self.space.validate_point(point)


P = TypeVar("P", bound=type[Planner])


def _name_planner(name: str, cls: type[Planner]) -> None:
    cls.name = name


PLANNERS: Registry[Planner] = Registry(
    "planner", _name_planner, group="sdlab.planners", builtins=_BUILTIN_PLANNERS
)
"""Every registered planner class, by name (the built-in ones once looked up)."""


def register_planner(name: str) -> Callable[[P], P]:
    """Class decorator registering a planner under ``name`` (and setting ``cls.name``).

    Args:
        name: The name campaigns use in ``[planner] name = ...``.

    Returns:
        The decorator.

    Raises:
        RegistryError: If ``name`` is already registered (at import time).
    """

    def decorate(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, Planner)):
            raise TypeError(f"@register_planner({name!r}) must decorate a Planner subclass")
        PLANNERS.register(name)(cls)
        return cls

    return decorate


def planner_names() -> list[str]:
    """Names of every registered planner, sorted (the built-in ones included)."""
    return PLANNERS.names()


def get_planner_class(name: str) -> type[Planner]:
    """The planner class registered under ``name``.

    Raises:
        RegistryError: If no planner has that name; the message lists the known names.
    """
    return PLANNERS.get(name)


def make_planner(
    name: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> Planner:
    """Build a registered planner.

    Args:
        name: Registered planner name.
        space: The search space.
        objectives: The campaign's objectives.
        seed: The campaign seed.
        options: The ``[planner.options]`` table.

    Returns:
        The planner, with no observations yet.

    Raises:
        RegistryError: If ``name`` is unknown.
        InvalidCampaignError: If an option is unknown or invalid (``planner.options.<key>``).
        PlannerError: If the planner cannot work with these objectives or this space.
    """
    cls = get_planner_class(name)
    opts = dict(options or {})
    bad = [k for k in opts if not isinstance(k, str)]
    if bad:
        raise InvalidCampaignError(
            None, [("planner.options", f"option names must be strings: {bad}")]
        )
    logger.debug("making planner %s (seed %d, options %s)", name, seed, opts)
    return cls(space, objectives, seed=seed, **opts)
