"""Tests of sim.sara: the lateral-gradient anneal world's truth and the sara-wafer driver."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from instruments.driver import Driver
from models.errors import InstrumentError, InvalidCampaignError, ParameterLimitError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.drivers import make_driver
from sim.sara import BANDS, PHASES, SaraWaferDriver, SaraWorld
from sim.worlds import get_world, world_names


def _spec(**kw: object) -> SimulatedInstrumentSpec:
    data: dict[str, object] = {"driver": "sara-wafer", "world": "sara-anneal"}
    data.update(kw)
    return SimulatedInstrumentSpec.model_validate(data)


def _run(driver: Driver, action: str, params: dict[str, float]) -> list[Measurement]:
    return asyncio.run(driver.run(action, params))


def test_registered_and_built_by_name() -> None:
    assert "sara-anneal" in world_names()
    assert isinstance(get_world("sara-anneal"), SaraWorld)
    assert isinstance(make_driver("wafer", _spec()), SaraWaferDriver)


def test_profile_peaks_on_the_centre_line_and_widens_with_dwell() -> None:
    w = SaraWorld(ambient_c=25.0, width_mm=0.5, width_log_dwell_slope=0.2)
    x = np.linspace(0.0, 1.5, 7)
    t = w.local_temperature(1000.0, 1000.0, x)
    assert t[0] == pytest.approx(1000.0)
    assert np.all(np.diff(t) < 0)
    assert w.local_temperature(1000.0, 1000.0, -x) == pytest.approx(t)
    # one width out: ambient + (tpeak - ambient) * exp(-1/2)
    assert w.local_temperature(1000.0, 1000.0, 0.5) == pytest.approx(25 + 975 * np.exp(-0.5))
    assert w.width_at(10000.0) == pytest.approx(0.5 * 1.2)
    assert w.local_temperature(1000.0, 10000.0, 0.8) > w.local_temperature(1000.0, 250.0, 0.8)


def test_phases_follow_the_boundaries() -> None:
    w = SaraWorld()
    for dwell in (250.0, 1000.0, 10000.0):
        cryst, ab, melt = w.boundaries(dwell)
        assert cryst < ab < melt
        temps = [cryst - 5, cryst + 5, ab - 5, ab + 5, melt - 5, melt + 5]
        assert w.phase(np.array(temps), dwell).tolist() == [0, 1, 1, 2, 2, 3]
    # longer dwells crystallise at lower temperature
    assert w.boundaries(10000.0)[0] < w.boundaries(250.0)[0]
    assert w.phase_at({"tpeak_c": 1300.0, "dwell_us": 1000.0, "position_mm": 0.0}) == 3
    assert w.phase_at({"tpeak_c": 1300.0, "dwell_us": 1000.0, "position_mm": 1.5}) == 0


def test_spectra_are_smooth_and_distinct_per_phase() -> None:
    w = SaraWorld(n_wavelengths=41)
    assert w.reference_spectra.shape == (len(PHASES), 41)
    assert np.all((w.reference_spectra > 0) & (w.reference_spectra < 1))
    assert (
        np.abs(np.diff(w.reference_spectra, axis=1)).max() < 0.08
    )  # smooth: no jumps between points
    desc = [np.array(list(w.descriptors(s).values())) for s in w.reference_spectra]
    for a, b in itertools.combinations(desc, 2):
        assert np.linalg.norm(a - b) > 0.15
    p = {"tpeak_c": 900.0, "dwell_us": 1000.0, "position_mm": 0.0}
    assert w.spectrum_true(p) == pytest.approx(w.reference_spectra[w.phase_at(p)])
    assert list(w.evaluate_true(p)) == [name for name, _, _ in BANDS]
    assert w.evaluate_true(p) == w.evaluate_true(p)


def test_bad_world_options_name_the_key() -> None:
    with pytest.raises(InvalidCampaignError, match=r"options\.width_mm"):
        SaraWorld(width_mm=-1.0)
    with pytest.raises(InvalidCampaignError, match=r"options\.n_wavelengths"):
        SaraWorld(n_wavelengths=5)
    with pytest.raises(InvalidCampaignError, match=r"options\.max_stripes"):
        make_driver("wafer", _spec(options={"max_stripes": 0}))
    with pytest.raises(InvalidCampaignError, match=r"world"):
        SaraWaferDriver("wafer", _spec(world="branin"))


def test_driver_declares_and_enforces_limits() -> None:
    d = make_driver("wafer", _spec())
    desc = d.describe()
    assert [a.name for a in desc.actions] == ["anneal", "reflectance"]
    anneal, refl = desc.action("anneal"), desc.action("reflectance")
    limits = {p.name: (p.minimum, p.maximum, p.unit) for p in refl.parameters}
    assert limits == {
        "tpeak_c": (400.0, 1400.0, "degC"),
        "dwell_us": (250.0, 10000.0, "us"),
        "position_mm": (-1.5, 1.5, "mm"),
    }
    assert [p.name for p in anneal.parameters] == ["tpeak_c", "dwell_us"]
    assert [o.kind for o in refl.outputs] == ["array"] + ["scalar"] * len(BANDS)
    anneal.check({"tpeak_c": 900.0, "dwell_us": 1000.0})
    with pytest.raises(ParameterLimitError, match="tpeak_c"):
        anneal.check({"tpeak_c": 1500.0, "dwell_us": 1000.0})
    with pytest.raises(ParameterLimitError, match="dwell_us"):
        anneal.check({"tpeak_c": 900.0, "dwell_us": 100.0})
    with pytest.raises(ParameterLimitError, match="position_mm"):
        refl.check({"tpeak_c": 900.0, "dwell_us": 1000.0, "position_mm": 2.0})


def test_stripes_are_kept_and_measured_only_once_annealed() -> None:
    d = make_driver("wafer", _spec(options={"max_stripes": 2}))
    assert isinstance(d, SaraWaferDriver)
    stripe = {"tpeak_c": 900.0, "dwell_us": 1000.0}
    with pytest.raises(InstrumentError, match="no_stripe"):
        _run(d, "reflectance", {**stripe, "position_mm": 0.0})
    first = {m.name: m.value for m in _run(d, "anneal", stripe)}
    again = {m.name: m.value for m in _run(d, "anneal", stripe)}
    assert first == {"stripe": 0.0, "new_stripe": 1.0}
    assert again == {"stripe": 0.0, "new_stripe": 0.0}
    other = {m.name: m.value for m in _run(d, "anneal", {"tpeak_c": 700.0, "dwell_us": 1000.0})}
    assert other == {"stripe": 1.0, "new_stripe": 1.0}
    with pytest.raises(InstrumentError, match="wafer_full"):
        _run(d, "anneal", {"tpeak_c": 800.0, "dwell_us": 1000.0})
    assert len(d.stripes) == 2
    with pytest.raises(InstrumentError, match="unknown_action"):
        _run(d, "etch", stripe)


def test_noise_free_reflectance_is_the_truth_and_noise_is_separate() -> None:
    point = {"tpeak_c": 1000.0, "dwell_us": 1000.0, "position_mm": 0.3}
    clean = make_driver("wafer", _spec(noise_std=0.0))
    noisy = make_driver("wafer", _spec(noise_std=0.02, seed=3))
    world = SaraWorld()
    for d in (clean, noisy):
        _run(d, "anneal", {"tpeak_c": 1000.0, "dwell_us": 1000.0})
    got = {m.name: m for m in _run(clean, "reflectance", point)}
    spectrum = got["spectrum"].array
    assert spectrum is not None
    assert np.array(spectrum) == pytest.approx(world.spectrum_true(point), abs=1e-12)
    for name, value in world.evaluate_true(point).items():
        assert got[name].value == pytest.approx(value, abs=1e-12)
    spectra = [np.array(_run(noisy, "reflectance", point)[0].array, dtype=float) for _ in range(40)]
    resid = np.stack(spectra) - world.spectrum_true(point)
    assert 0.015 < resid.std() < 0.025
    assert abs(resid.mean()) < 0.005
    sigma = {m.name: m.uncertainty for m in _run(noisy, "reflectance", point)}
    assert sigma["r_blue"] == pytest.approx(0.02 / np.sqrt(world.band_sizes()[0]))
