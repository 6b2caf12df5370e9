"""Simulated instrument drivers.

A simulated driver is a :class:`~instruments.driver.Driver` like any other: an
:class:`~instruments.server.InstrumentServer` hosts it behind the ZeroMQ protocol, checks
every parameter against the limits it declares, and runs its actions one at a time. Instead
of moving hardware it measures a :class:`~sim.worlds.World` and adds noise from a separate
:class:`~sim.noise.NoiseModel`.

Simulated drivers are built from a :class:`~models.campaign.SimulatedInstrumentSpec` (the
``[instruments.simulated]`` table of a campaign or simulation file) with :func:`make_driver`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instruments.driver import DRIVERS, ActionSpec, Driver, get_driver, register_driver
from models.errors import InstrumentError, InvalidCampaignError, RegistryError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.noise import GaussianNoise, NoiseModel, seed_from_name
from sim.worlds import World, get_world

if TYPE_CHECKING:
    from instruments.server import InstrumentServer

logger = logging.getLogger(__name__)

_BUILTIN_DRIVERS = {
    "sara-wafer": "sim.sara",
    "materials-synthesis": "sim.materials.drivers",
    "materials-xrd": "sim.materials.drivers",
    "materials-property": "sim.materials.drivers",
    "alab-dosing": "sim.alab.drivers",
    "alab-furnace": "sim.alab.drivers",
    "alab-xrd": "sim.alab.drivers",
    "sim-furnace": "sim.furnace",
}
"""Further built-in simulated drivers: name -> module, imported on the name's first lookup."""

MEASURE = "measure"
"""Name of the objective station's only action."""


class SimulatedDriver(Driver):
    """Base class of the simulators, built from a simulation spec.

    Their options are the ``[instruments.simulated]`` table
    (:class:`~models.campaign.SimulatedInstrumentSpec`), so a gateway builds them as it
    builds any registered driver. They have no hardware: they always run simulated.

    Args:
        name: The instrument's name.
        spec: The ``simulated`` table of the instrument's entry.
        simulated: Ignored (a simulator is always simulated); accepted as every driver
            accepts it.
    """

    Options = SimulatedInstrumentSpec
    supports_simulation = True

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec | Mapping[str, Any],
        *,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec, simulated=True)
        assert isinstance(self.options, SimulatedInstrumentSpec)
        self.spec: SimulatedInstrumentSpec = self.options

    def make_server(self, address: str, **kwargs: Any) -> InstrumentServer:
        """A server that injects the spec's faults, if it declares any."""
        if self.spec.faults is None:
            return super().make_server(address, **kwargs)
        from sim.faults import FaultyServer, faulty

        journal = kwargs.get("journal_path")
        log_dir = journal.parent if isinstance(journal, Path) else None
        hosted = faulty(self, self.spec.faults, self.spec.duration_s, log_dir)
        return FaultyServer(hosted, address, **kwargs)

    async def safe_state(self) -> str:
        """A simulated station moves nothing and heats nothing: it only says so.

        Drivers that simulate something to make safe (a furnace) override this.
        """
        return f"simulated {self.driver_name}: nothing energised, nothing to make safe"


@register_driver("objective-station")
class ObjectiveStationDriver(SimulatedDriver):
    """A station that measures a world's outputs at the given inputs.

    It offers one action, ``"measure"``, whose parameters are the world's inputs (limits
    equal to the world's bounds) and whose outputs are the world's outputs. Each run waits
    ``duration_s`` (without blocking the event loop) and returns the truth plus Gaussian
    noise of ``noise_std``, reported as the measurement's uncertainty. The noise is drawn
    when the run starts, from a generator seeded with ``spec.seed`` (or a seed derived from
    the instrument name), so the ``k``-th run of an instrument always gets the same draw.

    The driver checks nothing itself: the server refuses parameters outside the declared
    limits before :meth:`run` is called. Recording what ran is the server journal's job.

    Args:
        name: The instrument's name.
        spec: World, noise, duration, seed and the declared cost (``spec.cost``,
            ``spec.cost_per``); ``spec.options`` are passed to the world (e.g.
            ``{"output": "yield"}`` renames the output).
        world: A ready world to measure instead of building ``spec.world`` (for tests).

    Raises:
        InvalidCampaignError: If ``spec.world`` is not a registered world (key path
            ``world``), ``spec.options`` holds an unknown or bad world option
            (key path ``options.<key>``), or ``spec.cost_per`` names no world input
            (``cost_per.<key>``).
    """

    version = "1"

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec | Mapping[str, Any],
        *,
        world: World | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec)
        spec = self.spec
        if world is None:
            try:
                world = get_world(spec.world, **spec.options)
            except RegistryError as exc:
                raise InvalidCampaignError(None, [("world", str(exc))]) from exc
        self.world: World = world
        seed = spec.seed if spec.seed is not None else seed_from_name(name)
        self.noise: NoiseModel = GaussianNoise(spec.noise_std, seed)
        self.duration_s = spec.duration_s
        outputs = self.world.outputs()
        self._units = {o.name: o.unit for o in outputs}
        parameters = self.world.parameters()
        known = {p.name for p in parameters}
        bad = [
            (f"cost_per.{k}", f"world {self.world.name!r} has no input {k!r}")
            for k in spec.cost_per
            if k not in known
        ]
        if bad:
            raise InvalidCampaignError(None, bad)
        self._action = ActionSpec(
            name=MEASURE,
            parameters=parameters,
            outputs=outputs,
            timeout_s=max(10.0, 10.0 * spec.duration_s),
            retry_safe=True,
            description=(
                f"Measure world {self.world.name!r} (noise std {spec.noise_std:g}, "
                f"{spec.duration_s:g} s per measurement)."
            ),
            cost=spec.cost,
            cost_per=dict(spec.cost_per),
        )
        self.runs = 0
        """Number of runs started so far."""

    def actions(self) -> list[ActionSpec]:
        """The single ``"measure"`` action."""
        return [self._action]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Measure the world at ``parameters``.

        Args:
            action: Must be ``"measure"``.
            parameters: A value for every world input (already checked by the server).

        Returns:
            One scalar measurement per world output: truth plus noise, with the noise
            std as its uncertainty.

        Raises:
            InstrumentError: ``unknown_action`` for any action but ``"measure"``.
        """
        if action != MEASURE:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        self.runs += 1
        values = self.noise.apply(self.world.evaluate_true(parameters))
        if self.duration_s > 0:
            await asyncio.sleep(self.duration_s)
        return [
            Measurement(
                name=k,
                value=v,
                uncertainty=self._uncertainty(k, parameters),
                unit=self._units.get(k, ""),
            )
            for k, v in values.items()
        ]

    def _uncertainty(self, output: str, parameters: Mapping[str, Any]) -> float | None:
        """The instrument's own noise std; without noise, what the world knows of its
        truth's uncertainty (a table's replicate spread), if anything."""
        own = self.noise.uncertainty(output)
        if own:
            return own
        known = self.world.uncertainty(output, parameters)
        return known if known is not None else own


def load_builtin_drivers() -> None:
    """Declare sdlab's simulated drivers in the driver registry, so that they are found.

    Nothing is imported here: a lookup imports only the module of the driver it looks up
    (:meth:`models.registry.Registry.declare`), and listing the drivers imports them all.
    The ``sdlab.drivers`` entry points of an installed sdlab name them too; this finds them
    from a source checkout whose installed metadata predates those entry points.
    """
    DRIVERS.declare(_BUILTIN_DRIVERS)


def make_driver(name: str, spec: SimulatedInstrumentSpec) -> Driver:
    """Build the simulated driver ``spec.driver`` for the instrument ``name``.

    Args:
        name: The instrument's name.
        spec: Its ``simulated`` table.

    Returns:
        The driver, ready to be hosted by an instrument server.

    Raises:
        InvalidCampaignError: If ``spec.driver`` or ``spec.world`` is not registered, the
            driver is not a simulated one, or an option is bad. Key paths are relative to
            the ``simulated`` table (``driver``, ``world``, ``options.<key>``).
    """
    load_builtin_drivers()
    try:
        cls = get_driver(spec.driver)
    except RegistryError as exc:
        raise InvalidCampaignError(None, [("driver", str(exc))]) from exc
    if not issubclass(cls, SimulatedDriver):
        raise InvalidCampaignError(
            None, [("driver", f"driver {spec.driver!r} is not a simulated driver")]
        )
    try:
        return cls(name, spec)
    except RegistryError as exc:
        raise InvalidCampaignError(None, [("world", str(exc))]) from exc
