"""The ``alab`` world: phases and hull from the committed CHGNet cache, balancing, the
pairwise reaction model, the thermo export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from models.errors import InvalidCampaignError, ParameterLimitError
from sim.alab.export import main as export_main
from sim.alab.world import PRECURSORS, AlabWorld
from sim.worlds import get_world

REPO = Path(__file__).resolve().parents[2]
CACHE = str(REPO / "examples" / "data" / "alab")
GRID_C = (600.0, 800.0, 1000.0, 1200.0, 1400.0)


@pytest.fixture(scope="module")
def world() -> AlabWorld:
    return AlabWorld.default(cache_dir=CACHE)


def test_committed_cache_needs_no_chgnet_and_targets_are_on_the_hull(world: AlabWorld) -> None:
    targets = world.targets()
    assert len(targets) == 8
    assert world.energy.evaluations == 0  # every energy came from the committed cache
    for t in targets:
        assert world.e_above_hull(t) == pytest.approx(0.0, abs=1e-9)
        assert len(Composition(t).elements) >= 3
    assert set(targets) < set(world.stable_compounds())
    assert "CaZrO3" in world.stable_compounds()
    assert set(world.precursors()) == set(PRECURSORS)
    assert all(p in world.phases() for p in world.precursors())
    assert max(world.e_above_hull(f) for f in world.phases()) > 0.05  # metastable phases too
    assert all(abs(world.strain(f)) <= 0.005 for f in world.phases())


def test_balance_with_open_oxygen(world: AlabWorld) -> None:
    assert world.balance("SrTiO3", "SrO+TiO2") == pytest.approx({"SrO": 1.0, "TiO2": 1.0})
    assert world.balance("SrTiO3", "SrO2+TiO2") == pytest.approx({"SrO2": 1.0, "TiO2": 1.0})
    assert world.balance("Ba2TiO4", "BaO+TiO2") == pytest.approx({"BaO": 2.0, "TiO2": 1.0})
    assert world.balance("Ba2TiO4", "BaO+BaTiO3") == pytest.approx({"BaO": 1.0, "BaTiO3": 1.0})
    assert world.balance("SrTiO3", "BaO+TiO2") is None  # Sr missing
    assert world.balance("SrTiO3", "SrO+TiO2+ZrO2") is None  # ZrO2 would not be used
    assert world.balance("Sr2TiO4", "SrO+SrTiO3+TiO2") is None  # amounts not unique
    assert world.balance("BaTiO3", "BaTiO3") is None  # the target is not a recipe of itself
    assert world.balance("SrTiO3", "SrCO3+TiO2") is None  # not on the shelf
    with pytest.raises(ParameterLimitError, match="precursors"):
        world.balance("SrTiO3", "SrO + TiO2")
    with pytest.raises(ParameterLimitError, match="twice"):
        world.balance("SrTiO3", "SrO+SrO")


def test_react_conserves_cations_and_sums_to_one(world: AlabWorld) -> None:
    for target, precursors, t in [
        ("Ba2TiO4", "BaO2+TiO2", 1200.0),
        ("SrTiO3", "SrO+TiO2", 900.0),
        ("BaZrO3", "BaO+ZrO2", 1000.0),
    ]:
        fractions = world.react(target, precursors, t)
        assert sum(fractions.values()) == pytest.approx(1.0)
        assert all(w >= 0 for w in fractions.values())
        # moles of each cation in the products, per unit mass, keep the target's ratio
        cations: dict[str, float] = {}
        for f, w in fractions.items():
            c = Composition(f)
            for element in c.elements:
                if element.symbol != "O":
                    moles = w * float(c[element]) / float(c.weight)
                    cations[element.symbol] = cations.get(element.symbol, 0.0) + moles
        want = Composition(target)
        ref = next(iter(cations))
        for symbol, n in cations.items():
            assert n / cations[ref] == pytest.approx(want[symbol] / want[ref], rel=1e-6)


def test_no_reaction_below_onset(world: AlabWorld) -> None:
    amounts = world.balance("SrTiO3", "SrO+TiO2")
    assert amounts is not None
    onset = world.model.onset_c("SrO", "TiO2")
    assert 300.0 < onset < 1400.0
    mass = {p: x * Composition(p).weight for p, x in amounts.items()}
    total = sum(mass.values())
    below = world.react("SrTiO3", "SrO+TiO2", onset - 1.0)
    assert below == pytest.approx({p: m / total for p, m in mass.items()})
    assert world.react("SrTiO3", "SrO+TiO2", onset + 50.0).get("SrTiO3", 0.0) > 0.0


def test_direct_reaction_yield_rises_with_temperature(world: AlabWorld) -> None:
    yields = [world.react("BaZrO3", "BaO+ZrO2", t).get("BaZrO3", 0.0) for t in GRID_C]
    assert yields == sorted(yields)
    assert yields[-1] > 0.95


def test_every_target_is_reachable(world: AlabWorld) -> None:
    for target in world.targets():
        best = max(
            world.react(target, p, t).get(target, 0.0)
            for p in world.recipes(target, (1, 2))
            for t in GRID_C
        )
        assert best >= 0.5, target
    best_cazro3 = max(
        world.react("CaZrO3", p, t).get("CaZrO3", 0.0)
        for p in world.recipes("CaZrO3", (1, 2))
        for t in GRID_C
    )
    assert best_cazro3 < 0.3  # on the hull, but starved of driving force


def test_inert_intermediate_starves_a_target(world: AlabWorld) -> None:
    # BaO2 + TiO2 form BaTiO3 first (large driving force); BaTiO3 + BaO2 -> Ba2TiO4 has
    # little left, so Ba2TiO4 stays below 50 % at every temperature.
    yields = [world.react("Ba2TiO4", "BaO2+TiO2", t).get("Ba2TiO4", 0.0) for t in GRID_C]
    assert max(yields) < 0.5
    _, steps = world.reaction_path("Ba2TiO4", "BaO2+TiO2", 1400.0)
    first, *rest = steps
    assert dict(first.reaction.products).keys() >= {"BaTiO3"}
    assert world.react("Ba2TiO4", "BaO2+TiO2", 1400.0)["BaTiO3"] > 0.2
    onward = [s for s in rest if "BaTiO3" in s.reaction.reactants]
    assert onward
    assert abs(onward[0].reaction.drive_ev_per_atom) < 0.2 * abs(first.reaction.drive_ev_per_atom)
    # the same target from a precursor that skips the intermediate does better
    assert max(world.react("Ba2TiO4", "BaO+BaTiO3", t).get("Ba2TiO4", 0.0) for t in GRID_C) > 0.6


def test_hidden_kinetics_follow_the_seed() -> None:
    a = AlabWorld(cache_dir=CACHE, seed=0).model
    b = AlabWorld(cache_dir=CACHE, seed=0).model
    c = AlabWorld(cache_dir=CACHE, seed=5).model
    assert a.onset_c("SrO", "TiO2") == b.onset_c("SrO", "TiO2")
    assert a.onset_c("SrO", "TiO2") != c.onset_c("SrO", "TiO2")
    assert 0.5 <= a.tammann_fraction("SrO", "TiO2") <= 0.7
    assert a.tammann_fraction("SrO", "TiO2") == a.tammann_fraction("TiO2", "SrO")


def test_world_contract_and_options(world: AlabWorld) -> None:
    registered = get_world("alab", cache_dir=CACHE)
    params: dict[str, Any] = {"target": "SrTiO3", "precursors": "SrO+TiO2", "temperature_c": 1000.0}
    truth = registered.evaluate_true(params)
    assert truth["target_yield"] == pytest.approx(
        world.react("SrTiO3", "SrO+TiO2", 1000.0)["SrTiO3"]
    )
    assert {o.name for o in registered.outputs()} == set(truth)
    assert [p.name for p in registered.parameters()] == ["target", "precursors", "temperature_c"]
    with pytest.raises(ParameterLimitError, match="precursors"):
        world.react("SrTiO3", "BaO+TiO2", 1000.0)
    with pytest.raises(ParameterLimitError, match="target"):
        world.react("NaCl", "SrO+TiO2", 1000.0)
    with pytest.raises(InvalidCampaignError, match=r"options\.seed"):
        AlabWorld(seed=-1)


def test_thermo_file_matches_the_world(world: AlabWorld, tmp_path: Path) -> None:
    committed = json.loads((REPO / "examples" / "data" / "alab" / "thermo.json").read_text())
    entries = world.thermo_entries()
    assert committed["energy_unit"] == "eV/atom"
    assert [e["formula"] for e in committed["entries"]] == [e["formula"] for e in entries]
    assert [e["energy_per_atom"] for e in committed["entries"]] == pytest.approx(
        [e["energy_per_atom"] for e in entries], rel=1e-9, abs=1e-9
    )
    formulas = {e["formula"] for e in entries}
    assert {"O2", "Ba", "Sr", "Ca", "Ti", "Zr"} <= formulas
    hull = PhaseDiagram(
        [
            PDEntry(
                Composition(e["formula"]),
                e["energy_per_atom"] * Composition(e["formula"]).num_atoms,
            )
            for e in committed["entries"]
        ]
    )
    for f in world.phases():
        entry = next(e for e in hull.all_entries if e.composition.reduced_formula == f)
        assert hull.get_e_above_hull(entry) == pytest.approx(world.e_above_hull(f), abs=1e-6)
    out = tmp_path / "thermo.json"
    assert export_main(["--cache-dir", CACHE, "--out", str(out)]) == 0
    # Lattices and energies come out of floating-point work: another machine of the same
    # kind may write 1e-17 where this file has 0.0, or differ in the last digit.
    _assert_close(json.loads(out.read_text()), committed, "thermo.json")


def _assert_close(got: object, want: object, where: str) -> None:
    """``got == want`` for JSON values, numbers within 1e-9 (relative or absolute)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), where
        assert not isinstance(got, bool), where
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), where
    else:
        assert got == want, where
