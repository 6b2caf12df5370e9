"""The simulated materials lab: material specs, the hull decision, the energy cache, the
synthesis, XRD and property instruments."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from models.errors import InstrumentError, InvalidCampaignError, ParameterLimitError
from models.instrument_spec import SimulatedInstrumentSpec
from models.materials import build_structure, parse_material, prototype_library
from models.params import SearchSpace, StringParameter
from sim.drivers import make_driver
from sim.materials.drivers import PropertyDriver, SynthesisDriver, XRDDriver, xrd_pattern
from sim.materials.energy import EnergyResult, StructureEnergy
from sim.materials.world import MaterialsWorld

LIO = "AB_oP8_62_c_c:O,Li"
"""LiO in the SnS prototype: 8 sites, not a reference phase."""


class TableEnergy:
    """Hand-set energies: by (reduced formula, sites), else by formula, else ``default``."""

    def __init__(self, table: dict[object, float], default: float = 1.0) -> None:
        self.table = table
        self.default = default

    def energy(self, structure: Structure) -> EnergyResult:
        f = structure.composition.reduced_formula
        e = self.table.get((f, len(structure)), self.table.get(f, self.default))
        return EnergyResult(e, structure, cached=False)


def _world(lio_energy: float) -> MaterialsWorld:
    table = {"Li": 0.0, "O2": 0.0, "Li2O": -2.0, ("Li2O2", 8): lio_energy}
    return MaterialsWorld(elements=["Li", "O"], energy=TableEnergy(table))


def test_spec_round_trip_and_errors() -> None:
    spec = parse_material("AB3C_cP5_221_a_c_b:Sr,O,Ti")
    assert spec.formula == "SrTiO3"
    s = build_structure(spec)
    assert s.composition.reduced_formula == "SrTiO3"
    assert len(s) == 5
    proto = prototype_library()["AB3C_cP5_221_a_c_b"].structure
    assert 40 < s.volume < 70
    assert s.volume != pytest.approx(proto.volume)
    for bad, word in [
        ("AB3C_cP5_221_a_c_b:Sr,O", "needs 3 elements"),
        ("nope:Sr", "unknown prototype"),
        ("AB3C_cP5_221_a_c_b:Sr,Sr,O", "twice"),
        ("AB3C_cP5_221_a_c_b:Sr,Xx,O", "not an element"),
        ("SrTiO3", "expected"),
    ]:
        with pytest.raises(ValueError, match=word):
            parse_material(bad)


def test_string_parameter_checks_pattern() -> None:
    space = SearchSpace(parameters=[StringParameter(name="material", pattern=r"[A-Z].*")])
    assert space.validate_point({"material": "Ab"}) == {"material": "Ab"}
    for bad in ["ab", "", 3]:
        with pytest.raises(ParameterLimitError, match="material"):
            space.validate_point({"material": bad})


def test_hull_decision_matches_hand_computation() -> None:
    # Hull: Li (x_O = 0) at 0, Li2O (x_O = 1/3) at -2, O2 (x_O = 1) at 0 eV/atom. At
    # x_O = 1/2 the hull is -2 + (1/2 - 1/3) / (2/3) * 2 = -1.5 eV/atom.
    above = _world(-1.2).assess(LIO)
    assert above.formula == "Li2O2"  # pymatgen names LiO as the peroxide
    assert above.e_above_hull == pytest.approx(0.3, abs=1e-9)
    assert above.formation_energy == pytest.approx(-1.2, abs=1e-9)
    assert not above.forms
    assert dict(above.decomposition) == pytest.approx({"Li2O": 0.75, "O2": 0.25})
    below = _world(-1.6).assess(LIO)
    assert below.e_above_hull == pytest.approx(-0.1, abs=1e-9)
    assert below.forms
    assert below.decomposition == (("Li2O2", 1.0),)
    with pytest.raises(ParameterLimitError, match="outside Li-O"):
        below.forms and _world(-1.6).assess("AB_cF8_225_a_b:Cl,Na")


def test_world_options_are_checked() -> None:
    with pytest.raises(InvalidCampaignError, match=r"options\.elements"):
        MaterialsWorld(elements=["Li"])
    with pytest.raises(InvalidCampaignError, match=r"options\.mode"):
        MaterialsWorld(elements=["Li", "O"], mode="fast")  # type: ignore[arg-type]


def test_chgnet_cache_hit_returns_identical_values(tmp_path: Path) -> None:
    structure = build_structure("AB_cF8_225_a_b:O,Mg")
    first = StructureEnergy(cache_dir=tmp_path, volume_scan=(0.95, 1.0, 1.05))
    a = first.energy(structure)
    b = first.energy(structure)
    assert not a.cached
    assert b.cached
    assert first.evaluations == 1
    assert -7.0 < a.energy_per_atom < -5.0  # MgO: about -5.9 eV/atom in MP-compatible GGA
    fresh = StructureEnergy(cache_dir=tmp_path, volume_scan=(0.95, 1.0, 1.05))
    c = fresh.energy(structure.copy())
    assert c.cached
    assert fresh.evaluations == 0
    assert c.energy_per_atom == a.energy_per_atom
    assert c.structure == a.structure
    other = StructureEnergy(cache_dir=tmp_path, volume_scan=(1.0,))
    assert not other.energy(structure).cached  # other settings, other key


def _spec(driver: str, **kw: object) -> SimulatedInstrumentSpec:
    return SimulatedInstrumentSpec(
        driver=driver, world="materials", options={"elements": ["Li", "O"]}, **kw
    )


def test_synthesis_and_property_report_truth_without_noise() -> None:
    world = _world(-1.6)
    synth = SynthesisDriver("s", _spec("materials-synthesis"), world=world)
    prop = PropertyDriver("p", _spec("materials-property"), world=world)
    (formed,) = asyncio.run(synth.run("synthesize", {"material": LIO}))
    assert formed.value == 1.0
    e_hull, e_form = asyncio.run(prop.run("measure_property", {"material": LIO}))
    assert e_hull.value == pytest.approx(-0.1)
    assert e_form.value == pytest.approx(-1.6)
    lost = SynthesisDriver("s", _spec("materials-synthesis"), world=_world(-1.2))
    assert asyncio.run(lost.run("synthesize", {"material": LIO}))[0].value == 0.0
    with pytest.raises(InstrumentError, match="unknown_material"):
        asyncio.run(synth.run("synthesize", {"material": "AB_cF8_225_a_b:Cl,Na"}))


def test_noise_is_seeded_and_separate_from_truth() -> None:
    world = _world(-1.6)
    runs = []
    for _ in range(2):
        prop = PropertyDriver("p", _spec("materials-property", noise_std=0.05, seed=3), world=world)
        runs.append([asyncio.run(prop.run("measure_property", {"material": LIO}))[0].value])
    assert runs[0] == runs[1]
    assert runs[0][0] != pytest.approx(-0.1, abs=1e-6)
    assert world.assess(LIO).e_above_hull == pytest.approx(-0.1)


def test_xrd_shows_the_target_or_its_decomposition() -> None:
    formed = XRDDriver("x", _spec("materials-xrd"), world=_world(-1.6))
    pattern, match = asyncio.run(formed.run("measure_xrd", {"material": LIO}))
    two_theta, y = np.array(pattern.array[0]), np.array(pattern.array[1])
    assert two_theta[0] == pytest.approx(10.0)
    assert two_theta[-1] == pytest.approx(80.0)
    assert y.max() == pytest.approx(100.0)
    assert match.value == pytest.approx(1.0)
    world = _world(-1.2)
    lost = XRDDriver("x", _spec("materials-xrd"), world=world)
    pattern, match = asyncio.run(lost.run("measure_xrd", {"material": LIO}))
    assert match.value < 0.9
    expected = xrd_pattern(
        [(world.phase_structure("Li2O"), 0.75), (world.phase_structure("O2"), 0.25)],
        two_theta,
        0.3,
    )
    np.testing.assert_allclose(pattern.array[1], expected, atol=1e-3)


def test_make_driver_builds_the_materials_lab() -> None:
    spec = SimulatedInstrumentSpec(
        driver="materials-property", world="materials", options={"elements": ["Sr", "Ti", "O"]}
    )
    driver = make_driver("p1", spec)
    assert [a.name for a in driver.actions()] == ["measure_property"]
    bad = SimulatedInstrumentSpec(
        driver="materials-xrd", world="materials", options={"elements": ["Sr", "O"], "fwhm_deg": -1}
    )
    with pytest.raises(InvalidCampaignError, match="options"):
        make_driver("x1", bad)
