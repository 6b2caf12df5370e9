"""Simulated A-Lab stations: powder dosing, box furnaces, X-ray diffraction with phase ID.

Each is a :class:`~sim.drivers.SimulatedDriver` over the ``alab`` world
(:mod:`sim.alab.world`); ``spec.options`` are the world's options (``cache_dir``, ``seed``)
plus the driver's own, listed below. Each instrument process rebuilds the (deterministic)
reaction outcome from the recipe it is given, so the stations share no state. Noise comes
from a generator seeded like the objective station's (``spec.seed`` or the instrument's
name), so the ``k``-th run of an instrument always gets the same draw.

* ``alab-dosing``, action ``dose_and_mix`` (``target``, ``precursors``): weighs out the
  precursors in the amounts that make ``target_mass_g`` (option, default 1 g) of target
  (:meth:`~sim.alab.world.AlabWorld.balance`) and mixes them. Output ``mass_g``, the powder
  dosed, plus Gaussian noise of ``noise_std`` g. A recipe that cannot be balanced fails
  (``InstrumentError`` ``unbalanced``).
* ``alab-furnace``, action ``heat`` (``target``, ``precursors``, ``temperature_c``,
  ``dwell_h``): heats the sample; sleeps ``dwell_h * time_scale`` seconds (option
  ``time_scale``, seconds per hour of dwell, default 1) without blocking the server, so
  several furnaces run side by side. Output ``max_temperature_c``: the set point plus an
  overshoot of Gaussian noise ``noise_std`` degC.
* ``alab-xrd``, action ``measure_xrd`` (``target``, ``precursors``, ``temperature_c``):
  the powder pattern of what the recipe made (weight fractions from
  :meth:`~sim.alab.world.AlabWorld.react`, each phase with its hidden strain), per-mass
  reference patterns of :mod:`instruments.xrd` broadened by ``fwhm_deg`` on a grid from
  ``two_theta_min`` to ``two_theta_max`` in ``step_deg`` steps, scaled so the strongest
  peak has ``peak_counts`` counts, over a background of ``background_counts``, with
  Poisson counting noise (``peak_counts = 0``: noise-free) and Gaussian noise of
  ``noise_std`` counts. Then :func:`instruments.xrd.identify_phases` fits it with the
  candidate phases of the recipe's chemical system (every phase of the world made of the
  target's and precursors' elements). Outputs ``pattern`` (``[two_theta_deg,
  intensity]``), ``target_yield`` (the target's weight fraction *as identified*), ``rwp``
  (%) and ``wf_<formula>`` for every phase of the world (0 outside the chemical system).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from pymatgen.core import Composition

from instruments.driver import ActionSpec, OutputSpec, ParameterLimit, register_driver
from instruments.xrd import ReferencePhase, identify_phases, mixture_pattern, reference_phase
from models.errors import InstrumentError, InvalidCampaignError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.alab.world import TEMPERATURE_RANGE_C, AlabWorld, split_precursors
from sim.drivers import SimulatedDriver
from sim.noise import seed_from_name

logger = logging.getLogger(__name__)

__all__ = ["DosingDriver", "FurnaceDriver", "XRDDriver"]


class _AlabDriver(SimulatedDriver):
    """Shared set-up: the world from the options, a seeded noise generator."""

    version = "1"
    own_options: Mapping[str, float] = {}

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: AlabWorld | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec)
        if spec.world != "alab":
            raise InvalidCampaignError(None, [("world", f"{self.driver_name} needs 'alab'")])
        world_opts = {k: v for k, v in spec.options.items() if k not in self.own_options}
        self.own: dict[str, float] = {}
        for key, default in self.own_options.items():
            value = spec.options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidCampaignError(
                    None, [(f"options.{key}", f"expected a number >= 0, got {value!r}")]
                )
            self.own[key] = float(value)
        try:
            self.world = world if world is not None else AlabWorld(**world_opts)
        except TypeError as exc:
            raise InvalidCampaignError(None, [("options", str(exc))]) from exc
        seed = spec.seed if spec.seed is not None else seed_from_name(name)
        self.rng = np.random.default_rng(seed)
        self.noise_std = spec.noise_std
        self.runs = 0

    def _recipe_parameters(self, temperature: bool) -> list[ParameterLimit]:
        params = [
            ParameterLimit(name="target", type="string"),
            ParameterLimit(name="precursors", type="string"),
        ]
        if temperature:
            lo, hi = TEMPERATURE_RANGE_C
            params.append(ParameterLimit(name="temperature_c", minimum=lo, maximum=hi, unit="degC"))
        return params

    def _balance(
        self, action: str, expected: str, parameters: Mapping[str, Any]
    ) -> dict[str, float]:
        """Check the action and the recipe; the balanced amounts (mol per mol target)."""
        if action != expected:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        self.runs += 1
        target, precursors = parameters.get("target"), parameters.get("precursors")
        if not isinstance(target, str) or target not in self.world.phases():
            raise InstrumentError(self.name, "unknown_target", f"target {target!r}")
        try:
            amounts = self.world.balance(target, precursors)  # type: ignore[arg-type]
        except ValueError as exc:  # ParameterLimitError: malformed precursors
            raise InstrumentError(self.name, "bad_precursors", str(exc)) from exc
        if amounts is None:
            raise InstrumentError(
                self.name,
                "unbalanced",
                f"precursors {precursors!r} cannot be balanced to {target} (O2 open)",
            )
        return amounts

    def _draw(self, scale: float) -> float:
        return float(self.rng.normal(0.0, scale)) if scale > 0 else 0.0


@register_driver("alab-dosing")
class DosingDriver(_AlabDriver):
    """Doses and mixes the precursors of a recipe (module docstring)."""

    own_options = {"target_mass_g": 1.0}

    def actions(self) -> list[ActionSpec]:
        """The ``dose_and_mix`` action."""
        return [
            ActionSpec(
                name="dose_and_mix",
                parameters=self._recipe_parameters(temperature=False),
                outputs=[OutputSpec(name="mass_g", unit="g")],
                timeout_s=120.0,
                retry_safe=False,
                description="Weigh out balanced precursor amounts and mix them in a crucible.",
            )
        ]

    def dose(self, target: str, precursors: str) -> dict[str, float]:
        """Grams of each precursor for ``target_mass_g`` of target (no noise).

        Raises:
            InstrumentError: ``unbalanced`` etc. (see :meth:`run`).
        """
        amounts = self._balance(
            "dose_and_mix", "dose_and_mix", {"target": target, "precursors": precursors}
        )
        moles = self.own["target_mass_g"] / Composition(target).weight
        return {p: float(moles * x * Composition(p).weight) for p, x in amounts.items()}

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Dose the recipe; fails ``unbalanced`` when it cannot make the target."""
        if action != "dose_and_mix":
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        grams = self.dose(parameters.get("target"), parameters.get("precursors"))  # type: ignore[arg-type]
        await asyncio.sleep(self.spec.duration_s)
        mass = sum(grams.values()) + self._draw(self.noise_std)
        return [Measurement(name="mass_g", value=float(mass), unit="g")]


@register_driver("alab-furnace")
class FurnaceDriver(_AlabDriver):
    """A box furnace (module docstring)."""

    own_options = {"time_scale": 1.0}

    def actions(self) -> list[ActionSpec]:
        """The ``heat`` action."""
        return [
            ActionSpec(
                name="heat",
                parameters=[
                    *self._recipe_parameters(temperature=True),
                    ParameterLimit(name="dwell_h", minimum=0.0, maximum=48.0, unit="h"),
                ],
                outputs=[OutputSpec(name="max_temperature_c", unit="degC")],
                timeout_s=max(60.0, 60.0 + 48.0 * self.own["time_scale"] * 1.5),
                retry_safe=False,
                description="Heat the sample at temperature_c for dwell_h hours in air.",
            )
        ]

    setpoint_c: float | None = None
    """The temperature the heater is set to, degC (``None``: heater off)."""

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Heat the recipe's sample (the outcome is the world's, read by the XRD)."""
        self._balance(action, "heat", parameters)
        temperature = float(parameters["temperature_c"])
        dwell_h = float(parameters.get("dwell_h", 0.0))
        overshoot = abs(self._draw(self.noise_std))
        self.setpoint_c = temperature
        await asyncio.sleep(dwell_h * self.own["time_scale"] + self.spec.duration_s)
        self.setpoint_c = None  # the program ends with the heater off
        return [Measurement(name="max_temperature_c", value=temperature + overshoot, unit="degC")]

    async def safe_state(self) -> str:
        """Heater off: the furnace ramps down to room temperature."""
        was, self.setpoint_c = self.setpoint_c, None
        if was is None:
            return "heater already off"
        return f"heater off: ramping down from {was:.0f} degC to room temperature"


@register_driver("alab-xrd")
class XRDDriver(_AlabDriver):
    """Powder XRD and phase identification (module docstring)."""

    own_options = {
        "fwhm_deg": 0.15,
        "two_theta_min": 10.0,
        "two_theta_max": 80.0,
        "step_deg": 0.04,
        "peak_counts": 10000.0,
        "background_counts": 100.0,
        "min_fraction": 0.02,
    }

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: AlabWorld | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec, world=world)
        lo, hi, step = self.own["two_theta_min"], self.own["two_theta_max"], self.own["step_deg"]
        if not (0 < lo < hi < 180 and 0 < step < hi - lo and self.own["fwhm_deg"] > 0):
            raise InvalidCampaignError(
                None, [("options.two_theta_min", "need 0 < min < max < 180, step, fwhm > 0")]
            )
        if not self.own["min_fraction"] < 1:
            raise InvalidCampaignError(None, [("options.min_fraction", "expected < 1")])
        self.grid = np.arange(lo, hi + step / 2, step)
        self._references: dict[str, ReferencePhase] = {}

    def actions(self) -> list[ActionSpec]:
        """The ``measure_xrd`` action."""
        return [
            ActionSpec(
                name="measure_xrd",
                parameters=self._recipe_parameters(temperature=True),
                outputs=[
                    OutputSpec(name="pattern", kind="array"),
                    OutputSpec(name="target_yield", unit="fraction"),
                    OutputSpec(name="rwp", unit="%"),
                    *(OutputSpec(name=f"wf_{f}", unit="fraction") for f in self.world.phases()),
                ],
                timeout_s=300.0,
                retry_safe=True,
                description="Powder XRD (Cu K-alpha) with phase identification.",
            )
        ]

    def reference(self, formula: str) -> ReferencePhase:
        """The unstrained reference pattern of a phase of the world (cached)."""
        if formula not in self._references:
            self._references[formula] = reference_phase(formula, self.world.structure(formula))
        return self._references[formula]

    def candidates(self, target: str, precursors: str) -> list[str]:
        """Phases of the recipe's chemical system (the phase-ID candidates)."""
        elements = {
            el.symbol for f in [target, *split_precursors(precursors)] for el in Composition(f)
        }
        return [
            f
            for f in self.world.phases()
            if {el.symbol for el in Composition(f).elements} <= elements
        ]

    def measure(self, target: str, precursors: str, temperature_c: float) -> np.ndarray:
        """A (noisy) pattern of what the recipe made, counts on :attr:`grid`."""
        truth = self.world.react(target, precursors, temperature_c)
        components = [
            (self.reference(f), w, self.world.strain(f)) for f, w in truth.items() if w > 0
        ]
        y = mixture_pattern(components, self.grid, self.own["fwhm_deg"])
        peak = self.own["peak_counts"] or 10000.0
        top = float(y.max())
        y = (y * (peak / top) if top > 0 else y) + self.own["background_counts"]
        if self.own["peak_counts"] > 0:
            y = self.rng.poisson(np.maximum(y, 0.0)).astype(float)
        if self.noise_std > 0:
            y = y + self.rng.normal(0.0, self.noise_std, size=y.shape)
        return np.asarray(y, dtype=float)

    def _run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self._balance(action, "measure_xrd", parameters)
        target, precursors = str(parameters["target"]), str(parameters["precursors"])
        measured = self.measure(target, precursors, float(parameters["temperature_c"]))
        refs = [self.reference(f) for f in self.candidates(target, precursors)]
        fit = identify_phases(
            self.grid,
            measured,
            refs,
            fwhm_deg=self.own["fwhm_deg"],
            min_fraction=self.own["min_fraction"],
        )
        out = [
            Measurement(
                name="pattern", array=[self.grid.round(4).tolist(), measured.round(2).tolist()]
            ),
            Measurement(
                name="target_yield",
                value=fit.weight_fractions.get(target, 0.0),
                unit="fraction",
            ),
            Measurement(name="rwp", value=fit.rwp_percent, unit="%"),
        ]
        out.extend(
            Measurement(name=f"wf_{f}", value=fit.weight_fractions.get(f, 0.0), unit="fraction")
            for f in self.world.phases()
        )
        return out

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Measure and identify what the recipe made (module docstring)."""
        out = await asyncio.to_thread(self._run, action, parameters)
        await asyncio.sleep(self.spec.duration_s)
        return out
