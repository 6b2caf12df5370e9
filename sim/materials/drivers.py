"""Simulated instruments of a materials lab: synthesis, X-ray diffraction, property.

Each is a :class:`~sim.drivers.SimulatedDriver` over the ``materials`` world
(:mod:`sim.materials.world`); ``spec.options`` are the world's options (``elements``,
``stable_threshold_ev``, ``mode``, ``cache_dir``, ...) plus the driver's own, listed below.
All take one parameter, ``material`` (a material spec), and draw their noise from a
generator seeded like the objective station's, so the ``k``-th run of an instrument always
gets the same draw.

* ``materials-synthesis``, action ``synthesize``: makes the material. ``formed`` is 1.0
  when the target phase formed, i.e. when its energy above hull plus Gaussian noise of
  ``noise_std`` (eV/atom: the lab's misjudgement of marginal cases) is below the world's
  threshold, else 0.0. A material that does not form does not fail the experiment: it is a
  result.
* ``materials-xrd``, action ``measure_xrd``: the powder pattern of what formed (the target
  phase, or the phases it decomposes into, weighted by their fractions): pymatgen's
  ``XRDCalculator`` (Cu K-alpha) peaks broadened into Gaussians of ``fwhm_deg`` on a
  ``two_theta`` grid from ``two_theta_min`` to ``two_theta_max`` in ``step_deg`` steps,
  scaled to a maximum of 100, plus Gaussian noise of ``noise_std`` (same units). Outputs
  ``pattern`` (array ``[two_theta_deg, intensity]``) and ``target_match``, the cosine
  similarity between the measured pattern and the target phase's noise-free pattern.
* ``materials-property``, action ``measure_property``: ``e_above_hull_ev_per_atom`` and
  ``formation_energy_ev_per_atom`` (eV/atom) plus Gaussian noise of ``noise_std``,
  reported as the uncertainty.

References:
    De Graef, M. and McHenry, M. E. (2007). Structure of Materials. Cambridge University
    Press (the kinematic powder diffraction pymatgen's ``XRDCalculator`` implements).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from instruments.driver import ActionSpec, OutputSpec, ParameterLimit, register_driver
from models.errors import InstrumentError, InvalidCampaignError
from models.instrument_spec import SimulatedInstrumentSpec
from models.materials import MATERIAL_PATTERN
from models.records import Measurement
from sim.drivers import SimulatedDriver
from sim.materials.world import OUTPUTS, MaterialsWorld
from sim.noise import seed_from_name

logger = logging.getLogger(__name__)

__all__ = ["PropertyDriver", "SynthesisDriver", "XRDDriver", "xrd_pattern"]

_XRD_KEYS = ("fwhm_deg", "two_theta_min", "two_theta_max", "step_deg")


def xrd_pattern(
    structures: list[tuple[Any, float]],
    grid: np.ndarray,
    fwhm_deg: float,
) -> np.ndarray:
    """A broadened powder pattern of a phase mixture, scaled to a maximum of 100.

    Args:
        structures: ``(structure, fraction)`` pairs.
        grid: The two-theta grid, degrees.
        fwhm_deg: Full width at half maximum of each Gaussian peak, degrees.

    Returns:
        Intensities on ``grid``.
    """
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator()
    sigma = fwhm_deg / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    y = np.zeros_like(grid)
    for structure, fraction in structures:
        pat = calc.get_pattern(structure, two_theta_range=(float(grid[0]), float(grid[-1])))
        for x0, h in zip(pat.x, pat.y, strict=True):
            y += fraction * h * np.exp(-0.5 * ((grid - x0) / sigma) ** 2)
    top = float(y.max())
    return y * (100.0 / top) if top > 0 else y


class _MaterialsDriver(SimulatedDriver):
    """Shared set-up: the world from the options, a seeded noise generator."""

    version = "1"
    own_options: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: MaterialsWorld | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec)
        world_opts = {k: v for k, v in spec.options.items() if k not in self.own_options}
        self.own = {k: v for k, v in spec.options.items() if k in self.own_options}
        if spec.world != "materials":
            raise InvalidCampaignError(None, [("world", f"{self.driver_name} needs 'materials'")])
        try:
            self.world = world if world is not None else MaterialsWorld(**world_opts)
        except TypeError as exc:
            raise InvalidCampaignError(None, [("options", str(exc))]) from exc
        seed = spec.seed if spec.seed is not None else seed_from_name(name)
        self.rng = np.random.default_rng(seed)
        self.noise_std = spec.noise_std
        self.runs = 0

    def _param(self) -> list[ParameterLimit]:
        return [ParameterLimit(name="material", type="string")]

    def _assess(self, action: str, expected: str, parameters: Mapping[str, Any]) -> Any:
        if action != expected:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        self.runs += 1
        material = parameters.get("material")
        if not isinstance(material, str) or re.fullmatch(MATERIAL_PATTERN, material) is None:
            raise InstrumentError(self.name, "unknown_material", f"material {material!r}")
        try:
            return self.world.assess(material)
        except ValueError as exc:  # ParameterLimitError: not a material of the system
            raise InstrumentError(self.name, "unknown_material", str(exc)) from exc

    async def _wait(self) -> None:
        if self.spec.duration_s > 0:
            await asyncio.sleep(self.spec.duration_s)


@register_driver("materials-synthesis")
class SynthesisDriver(_MaterialsDriver):
    """Makes a material; reports whether the target phase formed (module docstring)."""

    def actions(self) -> list[ActionSpec]:
        """The ``synthesize`` action."""
        return [
            ActionSpec(
                name="synthesize",
                parameters=self._param(),
                outputs=[OutputSpec(name="formed", kind="scalar")],
                timeout_s=600.0,
                retry_safe=False,
                description="Synthesise a material (CHGNet hull decides whether it forms).",
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Synthesise ``parameters["material"]``."""
        noise = float(self.rng.normal(0.0, self.noise_std)) if self.noise_std > 0 else 0.0
        a = await asyncio.to_thread(self._assess, action, "synthesize", parameters)
        await self._wait()
        formed = a.e_above_hull + noise < self.world.stable_threshold_ev
        return [Measurement(name="formed", value=1.0 if formed else 0.0)]


@register_driver("materials-xrd")
class XRDDriver(_MaterialsDriver):
    """Powder XRD of what formed (module docstring)."""

    own_options = _XRD_KEYS

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: MaterialsWorld | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec, world=world)
        try:
            self.fwhm_deg = float(self.own.get("fwhm_deg", 0.3))
            lo = float(self.own.get("two_theta_min", 10.0))
            hi = float(self.own.get("two_theta_max", 80.0))
            step = float(self.own.get("step_deg", 0.05))
        except (TypeError, ValueError) as exc:
            raise InvalidCampaignError(None, [("options", f"XRD settings: {exc}")]) from exc
        if not (0 < lo < hi < 180 and 0 < step < hi - lo and self.fwhm_deg > 0):
            raise InvalidCampaignError(
                None, [("options.two_theta_min", "need 0 < min < max < 180, step, fwhm > 0")]
            )
        self.grid = np.arange(lo, hi + step / 2, step)

    def actions(self) -> list[ActionSpec]:
        """The ``measure_xrd`` action."""
        return [
            ActionSpec(
                name="measure_xrd",
                parameters=self._param(),
                outputs=[
                    OutputSpec(name="pattern", kind="array"),
                    OutputSpec(name="target_match", kind="scalar"),
                ],
                timeout_s=600.0,
                retry_safe=True,
                description="Powder XRD (Cu K-alpha) of the product of a synthesis.",
            )
        ]

    def _measure(self, action: str, parameters: Mapping[str, Any]) -> tuple[np.ndarray, float]:
        a = self._assess(action, "measure_xrd", parameters)
        if a.forms:
            phases = [(a.structure, 1.0)]
        else:
            phases = [(self.world.phase_structure(f), x) for f, x in a.decomposition]
        measured = xrd_pattern(phases, self.grid, self.fwhm_deg)
        if self.noise_std > 0:
            measured = measured + self.rng.normal(0.0, self.noise_std, size=measured.shape)
        target = xrd_pattern([(a.structure, 1.0)], self.grid, self.fwhm_deg)
        denom = float(np.linalg.norm(measured) * np.linalg.norm(target))
        match = float(measured @ target) / denom if denom > 0 else 0.0
        return measured, match

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Measure the pattern of what ``parameters["material"]``'s synthesis made."""
        measured, match = await asyncio.to_thread(self._measure, action, parameters)
        await self._wait()
        return [
            Measurement(
                name="pattern", array=[self.grid.round(4).tolist(), measured.round(4).tolist()]
            ),
            Measurement(name="target_match", value=match),
        ]


@register_driver("materials-property")
class PropertyDriver(_MaterialsDriver):
    """Energy above hull and formation energy, with noise (module docstring)."""

    def actions(self) -> list[ActionSpec]:
        """The ``measure_property`` action."""
        return [
            ActionSpec(
                name="measure_property",
                parameters=self._param(),
                outputs=[OutputSpec(name=n, kind="scalar", unit="eV/atom") for n in OUTPUTS],
                timeout_s=600.0,
                retry_safe=True,
                description="Energy above hull and formation energy (eV/atom).",
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Measure the properties of ``parameters["material"]``."""
        noise = self.rng.normal(0.0, self.noise_std, size=2) if self.noise_std > 0 else (0, 0)
        a = await asyncio.to_thread(self._assess, action, "measure_property", parameters)
        await self._wait()
        values = (a.e_above_hull, a.formation_energy)
        return [
            Measurement(
                name=n,
                value=float(v + dv),
                uncertainty=self.noise_std if self.noise_std > 0 else None,
                unit="eV/atom",
            )
            for n, v, dv in zip(OUTPUTS, values, noise, strict=True)
        ]
