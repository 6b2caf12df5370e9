"""A simulated box furnace: a long heat-and-measure action, and a safe state that ramps down.

``sim-furnace`` measures a :class:`~sim.worlds.World` like the objective station does (its
action ``measure`` takes the world's inputs and returns its outputs plus noise), but models
the furnace around it: while an action runs the heater is on and the furnace holds its set
point for ``duration_s`` seconds. Cancelling the action (a ``cancel`` message) stops the
action but leaves the heater as it is, as a real controller's "stop program" often does;
only :meth:`SimulatedFurnaceDriver.safe_state` (the emergency stop) turns the heater off
and ramps the furnace down to ambient at ``cooling_c_per_s``. :attr:`state` says which.

Options (``[instruments.simulated.options]``), besides the world's own:

* ``setpoint_c`` (default 850): the temperature held while an action runs, degC;
* ``ambient_c`` (default 25): where it cools to, degC;
* ``cooling_c_per_s`` (default 10): how fast it cools once the heater is off, degC/s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from instruments.driver import register_driver
from models.errors import InvalidCampaignError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.drivers import ObjectiveStationDriver
from sim.worlds import World

logger = logging.getLogger(__name__)

__all__ = ["SimulatedFurnaceDriver"]

FurnaceMode = Literal["cold", "heating", "ramping_down"]

_OWN_OPTIONS = {"setpoint_c": 850.0, "ambient_c": 25.0, "cooling_c_per_s": 10.0}


@register_driver("sim-furnace")
class SimulatedFurnaceDriver(ObjectiveStationDriver):
    """A furnace that heats while it measures and ramps down on an emergency stop.

    Args:
        name: The instrument's name.
        spec: As for the objective station; ``spec.options`` may also hold the furnace's
            own options (module docstring).
        world: A ready world to measure (for tests).
        simulated: Always true (the gateway passes it to every driver it builds).

    Raises:
        InvalidCampaignError: An own option that is not a number (key ``options.<key>``),
            or the objective station's errors.
    """

    version = "1"

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: World | None = None,
        simulated: bool = True,
    ) -> None:
        own: dict[str, float] = {}
        for key, default in _OWN_OPTIONS.items():
            value = spec.options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidCampaignError(
                    None, [(f"options.{key}", f"expected a number, got {value!r}")]
                )
            own[key] = float(value)
        if own["cooling_c_per_s"] <= 0:
            raise InvalidCampaignError(None, [("options.cooling_c_per_s", "must be > 0")])
        world_options = {k: v for k, v in spec.options.items() if k not in _OWN_OPTIONS}
        super().__init__(
            name,
            spec.model_copy(update={"options": world_options}),
            world=world,
            simulated=simulated,
        )
        self.spec = spec
        self.setpoint_c = own["setpoint_c"]
        self.ambient_c = own["ambient_c"]
        self.cooling_c_per_s = own["cooling_c_per_s"]
        self.mode: FurnaceMode = "cold"
        self._ramp_from_c = self.ambient_c
        self._ramp_at = time.monotonic()
        self.safe_states = 0
        """How many times :meth:`safe_state` ran."""
        self.last_safe_state: str | None = None
        """What the last :meth:`safe_state` said it did."""

    @property
    def heater_on(self) -> bool:
        """Whether the heater is on."""
        return self.mode == "heating"

    @property
    def temperature_c(self) -> float:
        """The furnace's temperature now, in degC."""
        if self.mode == "heating":
            return self.setpoint_c
        if self.mode == "cold":
            return self.ambient_c
        cooled = self.cooling_c_per_s * (time.monotonic() - self._ramp_at)
        return max(self.ambient_c, self._ramp_from_c - cooled)

    @property
    def state(self) -> dict[str, Any]:
        """What the furnace's panel would show: mode, heater, temperature."""
        return {
            "mode": self.mode,
            "heater_on": self.heater_on,
            "temperature_c": round(self.temperature_c, 3),
            "setpoint_c": self.setpoint_c if self.heater_on else self.ambient_c,
        }

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Heat to the set point, hold it while measuring the world, then cool naturally.

        A cancelled run leaves the heater on (see the module docstring).
        """
        self.mode = "heating"
        measurements = await super().run(action, parameters)
        self._ramp_down()
        return measurements

    def _ramp_down(self) -> None:
        self._ramp_from_c = self.temperature_c
        self._ramp_at = time.monotonic()
        self.mode = "ramping_down" if self._ramp_from_c > self.ambient_c else "cold"

    async def safe_state(self) -> str:
        """Heater off; ramp down to ambient. Returns what was done."""
        was = self.temperature_c
        self._ramp_down()
        self.safe_states += 1
        self.last_safe_state = (
            f"heater off: ramping down from {was:.0f} degC to {self.ambient_c:.0f} degC "
            f"at {self.cooling_c_per_s:g} degC/s"
            if self.mode == "ramping_down"
            else f"heater off: already at ambient ({self.ambient_c:.0f} degC)"
        )
        logger.warning("furnace %s: %s", self.name, self.last_safe_state)
        return self.last_safe_state
