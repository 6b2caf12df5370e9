"""The simulated A-Lab stations: dosing, furnace and XRD with phase identification, run
directly and through a real instrument server and client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pymatgen.core import Composition

from instruments.client import InstrumentClient
from models.errors import InstrumentError, InvalidCampaignError
from models.instrument_spec import InstrumentSpec, SimulatedInstrumentSpec
from models.records import Measurement
from sim.alab.drivers import DosingDriver, FurnaceDriver, XRDDriver
from sim.alab.world import AlabWorld
from sim.drivers import make_driver
from sim.serve import serve_instruments

REPO = Path(__file__).resolve().parents[2]
CACHE = str(REPO / "examples" / "data" / "alab")
RECIPE: dict[str, Any] = {"target": "Ba2TiO4", "precursors": "BaO2+TiO2", "temperature_c": 1200.0}


@pytest.fixture(scope="module")
def world() -> AlabWorld:
    return AlabWorld.default(cache_dir=CACHE)


def _spec(driver: str, **kw: Any) -> SimulatedInstrumentSpec:
    options = {"cache_dir": CACHE, **kw.pop("options", {})}
    return SimulatedInstrumentSpec(driver=driver, world="alab", options=options, **kw)


def _values(measurements: list[Measurement]) -> dict[str, float]:
    return {m.name: m.value for m in measurements if m.value is not None}


def test_dosing_weighs_balanced_amounts(world: AlabWorld) -> None:
    dosing = DosingDriver("d", _spec("alab-dosing"), world=world)
    [mass] = asyncio.run(dosing.run("dose_and_mix", {"target": "SrTiO3", "precursors": "SrO+TiO2"}))
    assert mass.value == pytest.approx(1.0)  # nothing leaves: 1 g of precursors per g
    grams = dosing.dose("SrTiO3", "SrO2+TiO2")
    lost_o = Composition("O").weight / Composition("SrTiO3").weight
    assert sum(grams.values()) == pytest.approx(1.0 + lost_o)  # half an O2 leaves per mole
    with pytest.raises(InstrumentError, match="unbalanced"):
        asyncio.run(dosing.run("dose_and_mix", {"target": "SrTiO3", "precursors": "BaO+TiO2"}))
    with pytest.raises(InstrumentError, match="unknown_target"):
        asyncio.run(dosing.run("dose_and_mix", {"target": "NaCl", "precursors": "SrO+TiO2"}))
    with pytest.raises(InstrumentError, match="unknown_action"):
        asyncio.run(dosing.run("heat", {"target": "SrTiO3", "precursors": "SrO+TiO2"}))
    with pytest.raises(InstrumentError, match="bad_precursors") as info:
        asyncio.run(dosing.run("dose_and_mix", {"target": "SrTiO3", "precursors": "SrO, TiO2"}))
    assert "precursors" in str(info.value)


def test_furnaces_heat_side_by_side(world: AlabWorld) -> None:
    furnaces = [
        FurnaceDriver(f"f{i}", _spec("alab-furnace", options={"time_scale": 0.05}), world=world)
        for i in range(3)
    ]
    [action] = furnaces[0].actions()
    assert {p.name for p in action.parameters} == {
        "target",
        "precursors",
        "temperature_c",
        "dwell_h",
    }
    limits = {p.name: p for p in action.parameters}
    assert (limits["temperature_c"].minimum, limits["temperature_c"].maximum) == (300.0, 1400.0)

    async def go() -> list[list[Measurement]]:
        return await asyncio.gather(*(f.run("heat", {**RECIPE, "dwell_h": 2.0}) for f in furnaces))

    for [m] in asyncio.run(go()):
        assert m.name == "max_temperature_c"
        assert m.value == 1200.0
    with pytest.raises(InstrumentError, match="unbalanced"):
        asyncio.run(furnaces[0].run("heat", {**RECIPE, "precursors": "SrO+TiO2", "dwell_h": 1.0}))


def test_xrd_identifies_what_the_recipe_made(world: AlabWorld) -> None:
    truth = world.react(RECIPE["target"], RECIPE["precursors"], RECIPE["temperature_c"])
    clean = XRDDriver("x", _spec("alab-xrd", options={"peak_counts": 0}), world=world)
    out = asyncio.run(clean.run("measure_xrd", dict(RECIPE)))
    values = _values(out)
    assert values["target_yield"] == pytest.approx(truth["Ba2TiO4"], abs=0.01)
    for f in world.phases():
        assert values[f"wf_{f}"] == pytest.approx(
            truth.get(f, 0.0) if truth.get(f, 0.0) > 0.02 else 0.0, abs=0.01
        )
    assert values["rwp"] < 1.0
    pattern = next(m for m in out if m.name == "pattern")
    assert pattern.array is not None
    assert len(pattern.array[0]) == len(pattern.array[1]) == len(clean.grid)
    assert {o.name for o in clean.actions()[0].outputs} == {m.name for m in out}
    assert values["wf_SrO"] == 0.0  # outside the chemical system

    noisy = [
        XRDDriver("x", _spec("alab-xrd", seed=4), world=world).measure(
            "Ba2TiO4", "BaO2+TiO2", 1200.0
        )
        for _ in range(2)
    ]
    assert (noisy[0] == noisy[1]).all()  # seeded
    values = _values(
        asyncio.run(
            XRDDriver("x", _spec("alab-xrd", seed=4), world=world).run("measure_xrd", dict(RECIPE))
        )
    )
    assert values["target_yield"] == pytest.approx(truth["Ba2TiO4"], abs=0.03)
    assert 1.0 < values["rwp"] < 20.0


def test_bad_options_name_the_key() -> None:
    with pytest.raises(InvalidCampaignError, match=r"options\.time_scale"):
        make_driver("f", _spec("alab-furnace", options={"time_scale": -1}))
    with pytest.raises(InvalidCampaignError, match="world"):
        make_driver("f", SimulatedInstrumentSpec(driver="alab-dosing", world="branin"))
    with pytest.raises(InvalidCampaignError, match=r"options\.two_theta_min"):
        make_driver("x", _spec("alab-xrd", options={"two_theta_min": 90.0}))


def test_stations_over_the_wire(tmp_path: Path) -> None:
    specs = [
        InstrumentSpec(name="doser", kind="dosing", simulated=_spec("alab-dosing")),
        InstrumentSpec(name="xrd", kind="diffractometer", simulated=_spec("alab-xrd", seed=1)),
    ]

    async def go() -> None:
        async with await serve_instruments(specs, journal_dir=tmp_path / "j") as running:
            async with InstrumentClient(running.endpoints["doser"], name="doser") as client:
                state = await client.submit(
                    "r1",
                    "dose_and_mix",
                    {"target": "BaTiO3", "precursors": "BaO+TiO2"},
                    wait_s=30.0,
                )
                assert state.terminal
                assert _values(state.measurements)["mass_g"] == pytest.approx(1.0)
            async with InstrumentClient(running.endpoints["xrd"], name="xrd") as client:
                with pytest.raises(InstrumentError) as info:
                    await client.submit(
                        "r2", "measure_xrd", {**RECIPE, "temperature_c": 2000.0}, wait_s=5.0
                    )
                assert info.value.code == "parameter_out_of_limits"
                state = await client.submit("r3", "measure_xrd", dict(RECIPE), wait_s=60.0)
                assert state.terminal
                values = _values(state.measurements)
                assert 0.3 < values["target_yield"] < 0.6
                assert values["wf_BaTiO3"] > 0.2

    asyncio.run(go())
