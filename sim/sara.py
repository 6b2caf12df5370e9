"""A lateral-gradient laser-anneal world and the wafer station that measures it.

SARA (Scientific Autonomous Reasoning Agent; Ament et al., "Autonomous materials synthesis
via hierarchical active learning of nonequilibrium phase diagrams", Sci. Adv. 7, eabg4930,
2021) maps the phases a thin film reaches under lateral-gradient laser spike annealing
(lg-LSA): a laser line scanned across the film anneals a *stripe*. The peak temperature
``tpeak_c`` is reached on the stripe's centre line; across the stripe the temperature falls
off with a Gaussian-like profile, so one stripe holds a whole range of local temperatures at
one dwell time ``dwell_us``. Reflectance spectra measured at positions across the stripe
reveal which phase the film reached at each local temperature.

The ``sara-anneal`` world hides:

* a phase diagram over (local temperature, dwell) with four phases, ``amorphous`` (as
  deposited), ``alpha`` and ``beta`` (two crystalline phases) and ``melt`` (melted and
  quenched). The boundaries are smooth functions of ``log10(dwell_us)``: longer dwells
  crystallise and transform at lower temperatures (see :meth:`SaraWorld.boundaries`);
* the lateral profile ``T(x) = ambient + (tpeak - ambient) * exp(-x^2 / (2 w^2))`` with a
  width ``w`` that grows with the dwell (heat diffuses further during a longer dwell);
* one reference reflectance spectrum per phase (smooth curves over 400-900 nm).

The noise-free truth is exposed (:meth:`SaraWorld.phase`, :meth:`SaraWorld.spectrum_true`);
noise is added by the instrument, independently at every wavelength.

The ``sara-wafer`` driver is one instrument with two actions on a wafer it keeps: ``anneal``
makes a stripe at ``(tpeak_c, dwell_us)`` (asking again for an existing stripe returns at
once: the wafer keeps it) and ``reflectance`` measures the spectrum at ``position_mm`` on an
annealed stripe, returning the raw spectrum and four band-averaged reflectances.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from instruments.driver import ActionSpec, OutputSpec, ParameterLimit, register_driver
from models.errors import InstrumentError, InvalidCampaignError, ParameterLimitError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.drivers import SimulatedDriver
from sim.noise import GaussianNoise, seed_from_name
from sim.worlds import World, register_world

logger = logging.getLogger(__name__)

__all__ = ["BANDS", "PHASES", "SaraWaferDriver", "SaraWorld"]

PHASES = ("amorphous", "alpha", "beta", "melt")
"""The phases of the hidden diagram, in order of increasing temperature."""

BANDS: tuple[tuple[str, float, float], ...] = (
    ("r_blue", 400.0, 525.0),
    ("r_green", 525.0, 650.0),
    ("r_red", 650.0, 775.0),
    ("r_nir", 775.0, 900.0),
)
"""The band-averaged reflectance descriptors: name, lower and upper wavelength (nm)."""

TPEAK_RANGE_C = (400.0, 1400.0)
DWELL_RANGE_US = (250.0, 10000.0)
POSITION_RANGE_MM = (-1.5, 1.5)
_LOG_DWELL_REF = 3.0  # log10 of the dwell (1 ms) the boundary coefficients refer to


@register_world("sara-anneal")
class SaraWorld(World):
    """Hidden phase diagram, lateral temperature profile and reflectance spectra.

    Inputs ``tpeak_c`` (400-1400 degC), ``dwell_us`` (250-10000 us) and ``position_mm``
    (-1.5 to 1.5 mm from the stripe's centre line); outputs the four band-averaged
    reflectances of :data:`BANDS` (dimensionless, 0-1).

    Args:
        n_wavelengths: Number of spectrum points, evenly spaced over 400-900 nm (30-101).
        ambient_c: Temperature far from the stripe, in degC.
        width_mm: Profile width ``w`` (standard deviation of the Gaussian) at 1 ms dwell.
        width_log_dwell_slope: Relative growth of ``w`` per decade of dwell.

    Raises:
        InvalidCampaignError: If an option is out of range (key ``options.<name>``).
    """

    def __init__(
        self,
        *,
        n_wavelengths: int = 51,
        ambient_c: float = 25.0,
        width_mm: float = 0.55,
        width_log_dwell_slope: float = 0.12,
    ) -> None:
        checks = (
            ("n_wavelengths", n_wavelengths, 30, 101),
            ("ambient_c", ambient_c, -50.0, 300.0),
            ("width_mm", width_mm, 0.1, 1.5),
            ("width_log_dwell_slope", width_log_dwell_slope, 0.0, 0.5),
        )
        problems = [
            (f"options.{key}", f"expected a number in [{lo:g}, {hi:g}], got {value!r}")
            for key, value, lo, hi in checks
            if isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not lo <= value <= hi
        ]
        if not isinstance(n_wavelengths, int):
            problems.append(("options.n_wavelengths", "expected an integer"))
        if problems:
            raise InvalidCampaignError(None, problems)
        self.ambient_c = float(ambient_c)
        self.width_mm = float(width_mm)
        self.width_log_dwell_slope = float(width_log_dwell_slope)
        self.wavelengths_nm = np.linspace(400.0, 900.0, int(n_wavelengths))
        self.reference_spectra = _reference_spectra(self.wavelengths_nm)
        self._band_masks = [
            (self.wavelengths_nm >= lo) & (self.wavelengths_nm < hi if hi < 900 else True)
            for _, lo, hi in BANDS
        ]

    def parameters(self) -> list[ParameterLimit]:
        """``tpeak_c``, ``dwell_us`` and ``position_mm`` with their honest limits."""
        return [
            ParameterLimit(
                name="tpeak_c", minimum=TPEAK_RANGE_C[0], maximum=TPEAK_RANGE_C[1], unit="degC"
            ),
            ParameterLimit(
                name="dwell_us", minimum=DWELL_RANGE_US[0], maximum=DWELL_RANGE_US[1], unit="us"
            ),
            ParameterLimit(
                name="position_mm",
                minimum=POSITION_RANGE_MM[0],
                maximum=POSITION_RANGE_MM[1],
                unit="mm",
            ),
        ]

    def outputs(self) -> list[OutputSpec]:
        """The band-averaged reflectances (scalars)."""
        return [OutputSpec(name=name, kind="scalar") for name, _, _ in BANDS]

    def band_sizes(self) -> list[int]:
        """Number of spectrum points averaged into each descriptor, in :data:`BANDS` order."""
        return [int(m.sum()) for m in self._band_masks]

    def width_at(self, dwell_us: np.ndarray | float) -> np.ndarray:
        """Profile width ``w`` (mm) at a dwell (us); broadcasts."""
        ld = np.log10(np.asarray(dwell_us, dtype=np.float64))
        return self.width_mm * (1.0 + self.width_log_dwell_slope * (ld - _LOG_DWELL_REF))

    def local_temperature(
        self,
        tpeak_c: np.ndarray | float,
        dwell_us: np.ndarray | float,
        position_mm: np.ndarray | float,
    ) -> np.ndarray:
        """The temperature (degC) reached at a position across a stripe; broadcasts."""
        w = self.width_at(dwell_us)
        x = np.asarray(position_mm, dtype=np.float64)
        profile = np.exp(-0.5 * (x / w) ** 2)
        return self.ambient_c + (np.asarray(tpeak_c, dtype=np.float64) - self.ambient_c) * profile

    @staticmethod
    def boundaries(dwell_us: np.ndarray | float) -> np.ndarray:
        """The three phase-boundary temperatures (degC) at a dwell; shape ``... x 3``.

        Columns: crystallisation (amorphous -> alpha), alpha -> beta, melting (beta -> melt).
        """
        u = np.log10(np.asarray(dwell_us, dtype=np.float64)) - _LOG_DWELL_REF
        cryst = 650.0 - 110.0 * u
        ab = 930.0 - 90.0 * u + 40.0 * u**2
        melt = 1180.0 - 25.0 * u
        return np.stack([cryst, ab, melt], axis=-1)

    def phase(self, t_local_c: np.ndarray | float, dwell_us: np.ndarray | float) -> np.ndarray:
        """Index into :data:`PHASES` of the phase at a local temperature and dwell; broadcasts."""
        t = np.asarray(t_local_c, dtype=np.float64)
        b = self.boundaries(np.broadcast_to(np.asarray(dwell_us, dtype=np.float64), t.shape))
        return np.sum(t[..., None] >= b, axis=-1).astype(np.int64)

    def phase_at(self, params: Mapping[str, float]) -> int:
        """The phase index at an input point (stripe and position)."""
        t, d, x = self._inputs(params)
        return int(self.phase(self.local_temperature(t, d, x), d))

    def spectrum_true(self, params: Mapping[str, float]) -> np.ndarray:
        """The noise-free reflectance spectrum at an input point (length ``n_wavelengths``)."""
        return np.array(self.reference_spectra[self.phase_at(params)])

    def descriptors(self, spectrum: np.ndarray) -> dict[str, float]:
        """Band-averaged reflectances of a spectrum (keys of :data:`BANDS`)."""
        s = np.asarray(spectrum, dtype=np.float64)
        return {
            name: float(s[m].mean())
            for (name, _, _), m in zip(BANDS, self._band_masks, strict=True)
        }

    def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
        """The noise-free descriptors at an input point (see :meth:`World.evaluate_true`)."""
        return self.descriptors(self.spectrum_true(params))

    def _inputs(self, params: Mapping[str, float]) -> tuple[float, float, float]:
        out: list[float] = []
        for name in ("tpeak_c", "dwell_us", "position_mm"):
            v = params.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterLimitError(name, v, f"world {self.name!r}: type number")
            out.append(float(v))
        if out[1] <= 0:
            raise ParameterLimitError("dwell_us", out[1], f"world {self.name!r}: positive")
        return out[0], out[1], out[2]


def _reference_spectra(wl: np.ndarray) -> np.ndarray:
    """One smooth reference reflectance spectrum per phase; shape ``4 x n``."""
    u = (wl - 400.0) / 500.0
    amorphous = 0.30 + 0.06 * u
    alpha = 0.25 + 0.30 * np.exp(-(((wl - 560.0) / 60.0) ** 2))
    beta = 0.55 + 0.05 * u - 0.30 * np.exp(-(((wl - 720.0) / 70.0) ** 2))
    melt = 0.12 + 0.25 * u**2
    return np.stack([amorphous, alpha, beta, melt])


_STRIPE_DECIMALS = 6  # stripes are the same when tpeak and dwell agree to 1e-6


@register_driver("sara-wafer")
class SaraWaferDriver(SimulatedDriver):
    """A laser-anneal and reflectance station working on one wafer of the ``sara-anneal`` world.

    Actions:

    * ``anneal`` (``tpeak_c``, ``dwell_us``): makes the stripe, taking ``anneal_s`` seconds,
      unless the wafer already has it (then it returns at once). Outputs ``stripe`` (the
      stripe's index on the wafer) and ``new_stripe`` (1 if it was made now, else 0).
      Refused with ``wafer_full`` once ``max_stripes`` stripes exist.
    * ``reflectance`` (``tpeak_c``, ``dwell_us``, ``position_mm``): measures the stripe at
      the position (``duration_s`` seconds). Outputs ``spectrum`` (array, reflectance at
      each wavelength of :attr:`SaraWorld.wavelengths_nm`) and the band averages of
      :data:`BANDS`, each with its uncertainty (noise std over the square root of the
      band's number of points). Refused with ``no_stripe`` on a stripe not annealed.

    Spectrum noise is Gaussian with ``noise_std`` at every wavelength, drawn from a
    generator seeded with ``spec.seed`` (or one derived from the instrument name).

    Args:
        name: The instrument's name.
        spec: ``world`` must be ``"sara-anneal"``. ``options`` may hold ``max_stripes``
            (1-1000, default 200) and ``anneal_s`` (seconds per new stripe, default
            ``duration_s``); the others go to the world.
        world: A ready world (for tests) instead of building one from ``spec``.

    Raises:
        InvalidCampaignError: For a bad option (key ``options.<name>``) or another world.
    """

    version = "1"
    DRIVER_OPTIONS: ClassVar[tuple[str, ...]] = ("max_stripes", "anneal_s")

    def __init__(
        self,
        name: str,
        spec: SimulatedInstrumentSpec,
        *,
        world: SaraWorld | None = None,
        simulated: bool = True,
    ) -> None:
        super().__init__(name, spec)
        opts = dict(spec.options)
        max_stripes = opts.pop("max_stripes", 200)
        anneal_s = opts.pop("anneal_s", spec.duration_s)
        if isinstance(max_stripes, bool) or not isinstance(max_stripes, int):
            raise InvalidCampaignError(None, [("options.max_stripes", "expected an integer")])
        if not 1 <= max_stripes <= 1000:
            raise InvalidCampaignError(None, [("options.max_stripes", "expected 1-1000")])
        if (
            isinstance(anneal_s, bool)
            or not isinstance(anneal_s, (int, float))
            or not 0 <= anneal_s <= 3600
        ):
            raise InvalidCampaignError(None, [("options.anneal_s", "expected 0-3600 seconds")])
        if world is None:
            if spec.world != "sara-anneal":
                raise InvalidCampaignError(
                    None,
                    [("world", f"the sara-wafer driver needs 'sara-anneal', not {spec.world!r}")],
                )
            world = SaraWorld(**opts)
        self.world = world
        self.max_stripes = max_stripes
        self.anneal_s = float(anneal_s)
        self.duration_s = spec.duration_s
        seed = spec.seed if spec.seed is not None else seed_from_name(name)
        self.noise = GaussianNoise(spec.noise_std, seed)
        self.stripes: dict[tuple[float, float], int] = {}
        """The wafer's stripes: ``(tpeak_c, dwell_us)`` rounded -> stripe index."""
        limits = {p.name: p for p in world.parameters()}
        timeout = max(10.0, 10.0 * max(self.anneal_s, spec.duration_s))
        sizes = world.band_sizes()
        self._sigma = [spec.noise_std / math.sqrt(n) if spec.noise_std > 0 else 0.0 for n in sizes]
        self._actions = [
            ActionSpec(
                name="anneal",
                parameters=[limits["tpeak_c"], limits["dwell_us"]],
                outputs=[OutputSpec(name="stripe"), OutputSpec(name="new_stripe")],
                timeout_s=timeout,
                retry_safe=True,  # the wafer keeps a stripe: annealing it again is a no-op
                description="Anneal a stripe at tpeak_c (centre line) for dwell_us.",
            ),
            ActionSpec(
                name="reflectance",
                parameters=[limits["tpeak_c"], limits["dwell_us"], limits["position_mm"]],
                outputs=[OutputSpec(name="spectrum", kind="array")]
                + [OutputSpec(name=name) for name, _, _ in BANDS],
                timeout_s=timeout,
                retry_safe=True,
                description=(
                    f"Reflectance spectrum ({len(world.wavelengths_nm)} points, 400-900 nm, "
                    f"noise std {spec.noise_std:g}) at position_mm across an annealed stripe."
                ),
            ),
        ]

    def actions(self) -> list[ActionSpec]:
        """``anneal`` and ``reflectance``."""
        return list(self._actions)

    @staticmethod
    def stripe_key(parameters: Mapping[str, Any]) -> tuple[float, float]:
        """The key identifying a stripe: its ``(tpeak_c, dwell_us)``, rounded."""
        return (
            round(float(parameters["tpeak_c"]), _STRIPE_DECIMALS),
            round(float(parameters["dwell_us"]), _STRIPE_DECIMALS),
        )

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Run ``anneal`` or ``reflectance`` (parameters already checked by the server).

        Raises:
            InstrumentError: ``unknown_action``; ``wafer_full`` (anneal); ``no_stripe``
                (reflectance on a stripe that was never annealed). None is retryable.
        """
        key = self.stripe_key(parameters)
        if action == "anneal":
            new = key not in self.stripes
            if new:
                if len(self.stripes) >= self.max_stripes:
                    raise InstrumentError(
                        self.name, "wafer_full", f"all {self.max_stripes} stripes are used"
                    )
                if self.anneal_s > 0:
                    await asyncio.sleep(self.anneal_s)
                self.stripes[key] = len(self.stripes)
                logger.info("%s: annealed stripe %d at %s", self.name, self.stripes[key], key)
            return [
                Measurement(name="stripe", value=float(self.stripes[key])),
                Measurement(name="new_stripe", value=1.0 if new else 0.0),
            ]
        if action != "reflectance":
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        if key not in self.stripes:
            raise InstrumentError(
                self.name,
                "no_stripe",
                f"no stripe at tpeak_c={key[0]:g}, dwell_us={key[1]:g}: anneal it first",
                field="tpeak_c",
            )
        spectrum = self.world.spectrum_true(parameters)
        if self.noise.std > 0:
            spectrum = spectrum + self.noise.sample(spectrum.size)
        if self.duration_s > 0:
            await asyncio.sleep(self.duration_s)
        desc = self.world.descriptors(spectrum)
        return [Measurement(name="spectrum", array=[float(v) for v in spectrum])] + [
            Measurement(name=k, value=v, uncertainty=s)
            for (k, v), s in zip(desc.items(), self._sigma, strict=True)
        ]
