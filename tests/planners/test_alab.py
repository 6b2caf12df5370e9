"""Tests of the ``alab`` planner on a small Sr-Ti-O fixture whose hull is known by hand.

Formation energies (eV/atom, elements at 0): SrO -3.0, SrO2 -2.2, TiO2 -3.3, Ti2O3 -3.1,
SrTiO3 -3.5, Sr2TiO4 -3.4. Per atom of Sr2TiO4: 2 SrO + TiO2 -> Sr2TiO4 releases
(-23.8 + 12 + 9.9) / 7 = -0.2714 eV/atom, 2 SrO + Ti2O3/2 (+ O2) -> Sr2TiO4 -0.5786, and
SrO + SrTiO3 -> Sr2TiO4 only -0.0429: SrTiO3 is the trap ARROWS3 learns to avoid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace, StringParameter
from models.records import Decision, Observation
from planners.alab import AlabPlanner
from planners.base import make_planner
from planners.reactions import Thermo

FORMATION = {
    "Sr": 0.0,
    "Ti": 0.0,
    "O2": 0.0,
    "SrO": -3.0,
    "SrO2": -2.2,
    "TiO2": -3.3,
    "Ti2O3": -3.1,
    "SrTiO3": -3.5,
    "Sr2TiO4": -3.4,
}
ENTRIES = [{"formula": f, "energy_per_atom": e} for f, e in FORMATION.items()]
PRECURSORS = ["SrO", "SrO2", "TiO2", "Ti2O3", "SrTiO3"]


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(
        parameters=[
            StringParameter(name="target", pattern=r"[A-Za-z0-9]+"),
            StringParameter(name="precursors", pattern=r"[A-Za-z0-9]+(\+[A-Za-z0-9]+)*"),
            ContinuousParameter(name="temperature_c", lower=600.0, upper=1400.0, unit="degC"),
        ]
    )


OBJECTIVES = [Objective(name="target_yield", direction="maximize")]


def planner(space: SearchSpace, seed: int = 0, **options: Any) -> AlabPlanner:
    opts: dict[str, Any] = {"targets": ["Sr2TiO4"], "precursors": PRECURSORS, "thermo": ENTRIES}
    opts.update(options)
    p = make_planner("alab", space, OBJECTIVES, seed=seed, options=opts)
    assert isinstance(p, AlabPlanner)
    return p


def observe(decision_params: Any, yield_: float, **phases: float) -> Observation:
    wf = {f"wf_{k}": v for k, v in phases.items()}
    return Observation(
        parameters=dict(decision_params),
        objectives={"target_yield": yield_},
        measurements={"target_yield": yield_, "rwp": 8.0, **wf},
    )


def recipes(d: Decision) -> list[tuple[str, str, float]]:
    return [
        (
            str(p.parameters["target"]),
            str(p.parameters["precursors"]),
            float(p.parameters["temperature_c"]),
        )
        for p in d.proposals
    ]


def test_balance_and_driving_force_match_hand_values() -> None:
    th = Thermo(ENTRIES)
    assert th.balance("Sr2TiO4", ["SrO", "TiO2"]) == pytest.approx({"SrO": 2.0, "TiO2": 1.0})
    # SrO2 releases oxygen, Ti2O3 takes it up: the open gas balances both
    assert th.balance("Sr2TiO4", ["SrO2", "TiO2"]) == pytest.approx({"SrO2": 2.0, "TiO2": 1.0})
    assert th.balance("Sr2TiO4", ["SrO", "Ti2O3"]) == pytest.approx({"SrO": 2.0, "Ti2O3": 0.5})
    assert th.balance("Sr2TiO4", ["TiO2"]) is None
    assert th.balance("Sr2TiO4", ["SrO", "TiO2", "Sr"]) is None  # amounts not unique
    assert th.balance("SrTiO3", ["SrO", "SrO2", "TiO2"]) is None  # SrO2 only adds oxygen
    assert th.balance("SrTiO3", ["SrO", "SrO2", "TiO2"], use_all=False) is not None
    assert th.reaction_energy("Sr2TiO4", ["SrO", "TiO2"]) == pytest.approx(-1.9 / 7)
    assert th.reaction_energy("Sr2TiO4", ["SrO", "Ti2O3"]) == pytest.approx(-4.05 / 7)
    products, energy = th.pair_reaction("SrO", "TiO2")
    assert products == ("SrTiO3",)  # the hull's most favourable pair reaction (1:1)
    assert energy == pytest.approx(-0.32)


def test_first_recipe_is_the_largest_driving_force_at_mid_grid(space: SearchSpace) -> None:
    d = planner(space, max_pending_per_target=2).ask(2)
    assert recipes(d) == [
        ("Sr2TiO4", "SrO+Ti2O3", 1000.0),
        ("Sr2TiO4", "SrO2+Ti2O3", 1000.0),
    ]
    assert [p.origin for p in d.proposals] == ["first_recipe", "first_recipe"]
    first = d.details["proposals"][0]
    assert first["driving_force_ev_per_atom"] == pytest.approx(-4.05 / 7)
    assert "SrTiO3" in first["predicted_intermediates"]
    assert d.details["targets"]["Sr2TiO4"]["n_balanced_sets"] == 5  # SrO2+SrTiO3 has none
    json.dumps(d.details)


def test_inert_intermediate_moves_another_set_first(space: SearchSpace) -> None:
    p = planner(space)
    first = p.ask(1).proposals[0].parameters
    # SrO + Ti2O3 made mostly SrTiO3, which leaves only -0.043 eV/atom to Sr2TiO4
    p.tell([observe(first, 0.1, SrTiO3=0.7, Sr2TiO4=0.1, SrO=0.2)])
    d = p.ask(1)
    assert recipes(d) == [("Sr2TiO4", "SrO+SrTiO3", 1000.0)]
    assert d.proposals[0].origin == "arrows"
    state = d.details["targets"]["Sr2TiO4"]
    assert set(state["inert_intermediates"]) == {"SrTiO3"}
    assert set(state["skipped"]) == {"SrO+Ti2O3", "SrO+TiO2", "SrO2+TiO2", "SrO2+Ti2O3"}
    assert {
        "reactants": ["SrO", "Ti2O3"],
        "temperature_c": 1000.0,
        "products": ["Sr2TiO4", "SrTiO3"],
    } in d.details["pair_reactions"]


def test_unreacted_precursors_raise_the_temperature(space: SearchSpace) -> None:
    p = planner(space, targets=["SrTiO3"], precursors=["SrO", "TiO2"])
    first = p.ask(1).proposals[0].parameters
    assert first["temperature_c"] == 1000.0
    p.tell([observe(first, 0.0, SrO=0.4, TiO2=0.6)])
    d = p.ask(1)
    assert recipes(d) == [("SrTiO3", "SrO+TiO2", 1200.0)]
    assert d.proposals[0].origin == "retry_hotter"
    assert "SrO+TiO2 left unreacted" in d.details["proposals"][0]["temperature_reason"]
    assert d.details["pair_reactions"][0]["products"] == []  # observed not to react at 1000


def test_max_attempts_gives_up_and_finishes_with_zero_proposals(space: SearchSpace) -> None:
    p = planner(space, max_attempts=1)
    first = p.ask(1).proposals[0].parameters
    p.tell([observe(first, 0.2, SrTiO3=0.6, Sr2TiO4=0.2, SrO=0.2)])
    d = p.ask(3)
    assert d.proposals == []
    assert "Sr2TiO4: given up: max_attempts (1) reached" in d.details["finished"]
    assert d.details["targets"]["Sr2TiO4"]["best_yield"] == pytest.approx(0.2)


def test_made_target_and_unbalanceable_target_finish(space: SearchSpace) -> None:
    p = planner(space, targets=["Sr2TiO4", "SrTiO3"], precursors=["SrO", "TiO2", "Ti2O3"])
    d = p.ask(2)
    # round-robin: one recipe per target
    assert {r[0] for r in recipes(d)} == {"Sr2TiO4", "SrTiO3"}
    p.tell([observe(prop.parameters, 0.9) for prop in d.proposals])
    done = p.ask(1)
    assert done.proposals == []
    assert "Sr2TiO4: made: yield 0.900 >= 0.5" in done.details["finished"]
    q = planner(space, precursors=["SrO", "SrO2"])  # no Ti: nothing balances
    d = q.ask(2)
    assert d.proposals == []
    assert "no subset of the precursors balances" in d.details["finished"]


def test_every_set_tried_gives_up_with_the_reason(space: SearchSpace) -> None:
    p = planner(space, precursors=["SrO", "TiO2"], strategy="first_recipe", max_attempts=10)
    temps = []
    while True:
        d = p.ask(1)
        if not d.proposals:
            break
        params = d.proposals[0].parameters
        temps.append(params["temperature_c"])
        p.tell([observe(params, 0.0, SrTiO3=0.5, SrO=0.5)])
    assert temps == [1000.0, 1200.0, 1400.0, 800.0, 600.0]
    assert "every balanced precursor set tried or skipped" in d.details["finished"]


def test_pending_recipe_is_not_proposed_again(space: SearchSpace) -> None:
    p = planner(space)
    top = p.ask(1).proposals[0].parameters
    # by default one recipe per target runs at a time: the planner waits for its result
    waiting = planner(space).ask(2, pending=[top])
    assert waiting.proposals == []
    assert "finished" not in waiting.details
    d = planner(space, max_pending_per_target=3).ask(2, pending=[top])
    assert len(d.proposals) == 2
    assert top["precursors"] not in [r[1] for r in recipes(d)]
    assert d.details["targets"]["Sr2TiO4"]["pending"] == 1
    # the pending attempt counts toward the budget: nothing more fits
    assert (
        planner(space, max_attempts=1, max_pending_per_target=3).ask(2, pending=[top]).proposals
        == []
    )


def test_rebuilt_planner_replays_its_decisions(space: SearchSpace) -> None:
    for strategy in ("arrows", "random", "first_recipe"):
        a, b = planner(space, seed=3, strategy=strategy), planner(space, seed=3, strategy=strategy)
        first = a.ask(2)
        obs = [observe(pr.parameters, 0.1, SrTiO3=0.6, SrO=0.3) for pr in first.proposals]
        a.tell(obs)
        b.ask(2)
        b.tell(obs)
        da, db = a.ask(2), b.ask(2)
        assert recipes(da) == recipes(db)
        assert {k: v for k, v in da.details.items()} == dict(db.details)


def test_random_strategy_draws_balanced_sets_from_the_seed(space: SearchSpace) -> None:
    seen = set()
    for seed in range(6):
        d = planner(space, seed=seed, strategy="random").ask(1)
        ((_target, precursors, temp),) = recipes(d)
        assert precursors in {"SrO+SrTiO3", "SrO+Ti2O3", "SrO+TiO2", "SrO2+TiO2", "SrO2+Ti2O3"}
        assert temp in {600.0, 800.0, 1000.0, 1200.0, 1400.0}
        seen.add((precursors, temp))
    assert len(seen) > 1


def test_measurements_survive_tell(space: SearchSpace) -> None:
    p = planner(space)
    p.tell([observe(p.ask(1).proposals[0].parameters, 0.1, SrTiO3=0.9)])
    assert p.observations[0].measurements["wf_SrTiO3"] == 0.9


def test_thermo_file_is_read(space: SearchSpace, tmp_path: Path) -> None:
    path = tmp_path / "thermo.json"
    path.write_text(json.dumps({"source": "fixture", "energy_unit": "eV/atom", "entries": ENTRIES}))
    d = planner(space, thermo=None, thermo_file=str(path)).ask(1)
    assert recipes(d) == [("Sr2TiO4", "SrO+Ti2O3", 1000.0)]


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"targets": ["BaTiO3"]}, "planner.options.targets", "no computed entry"),
        ({"targets": ["Qq2O"]}, "planner.options.targets", "not a chemical formula"),
        (
            {"thermo": [e for e in ENTRIES if e["formula"] != "Ti"]},
            "planner.options.thermo",
            "['Ti']",
        ),
        ({"temperatures_c": [500.0, 900.0]}, "planner.options.temperatures_c", "500"),
        ({"thermo_file": "x.json"}, "planner.options", "exactly one of thermo_file and thermo"),
        (
            {"thermo": None, "thermo_file": "/nonexistent/thermo.json"},
            "planner.options.thermo_file",
            "cannot read",
        ),
        ({"strategy": "greedy"}, "planner.options.strategy", ""),
        ({"temperature_parameter": "t"}, "planner.options.temperature_parameter", "'t'"),
    ],
)
def test_bad_options_name_the_key(
    space: SearchSpace, options: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        planner(space, **options)
    paths = info.value.key_paths()
    assert key in paths
    assert words in str(info.value)


def test_failed_dosing_and_unknown_phases_are_taken_in_stride(space: SearchSpace) -> None:
    p = planner(space, precursors=["SrO", "TiO2", "Ti2O3"], max_pending_per_target=2)
    d = p.ask(2)
    failed, odd = (prop.parameters for prop in d.proposals)
    p.tell(
        [
            Observation(parameters=dict(failed), objectives={}, feasible=False),
            # Sr3Ti2O7 has no computed entry: it is recorded, not used for energies
            observe(odd, 0.05, Sr3Ti2O7=0.6, SrO=0.35, Sr2TiO4=0.05),
        ]
    )
    nxt = p.ask(2)
    state = nxt.details["targets"]["Sr2TiO4"]
    assert state["attempts"] == 2
    assert failed["precursors"] not in [r[1] for r in recipes(nxt)]  # failed: not retried
    assert "Sr3Ti2O7" in state["inert_intermediates"]  # cannot be shown to lead anywhere
    json.dumps(nxt.details)


def test_an_observed_decomposition_is_part_of_the_predicted_pathway(space: SearchSpace) -> None:
    p = planner(
        space, targets=["SrTiO3"], precursors=["SrO2", "TiO2", "SrO"], max_pending_per_target=2
    )
    # SrO2 + TiO2 at 1000 C: the peroxide lost its oxygen, nothing else happened
    params = {"target": "SrTiO3", "precursors": "SrO2+TiO2", "temperature_c": 1000.0}
    p.tell([observe(params, 0.0, SrO=0.45, TiO2=0.55)])
    d = p.ask(2)
    assert {"reactants": ["SrO2"], "temperature_c": 1000.0, "products": ["SrO"]} in d.details[
        "pair_reactions"
    ]
    retry = next(x for x in d.details["proposals"] if x["precursors"] == "SrO2+TiO2")
    assert retry["pair_reactions"][0]["reactants"] == ["SrO2"]
    assert retry["pair_reactions"][0]["source"] == "observed at <= 1200 C"
    # from SrO + TiO2 the driving force left is that of the SrO + TiO2 recipe itself
    same = next(x for x in d.details["proposals"] if x["precursors"] == "SrO+TiO2")
    assert retry["remaining_driving_force_ev_per_atom"] == pytest.approx(
        same["driving_force_ev_per_atom"]
    )


def test_a_thermo_file_without_an_elemental_reference_is_named(
    space: SearchSpace, tmp_path: Path
) -> None:
    path = tmp_path / "thermo.json"
    path.write_text(json.dumps({"entries": [e for e in ENTRIES if e["formula"] != "O2"]}))
    with pytest.raises(InvalidCampaignError) as info:
        planner(space, thermo=None, thermo_file=str(path))
    assert info.value.by_key() == {
        "planner.options.thermo_file": "no elemental reference entry for element(s) ['O']"
    }


def test_pairs_seen_inert_for_one_target_start_another_hotter(space: SearchSpace) -> None:
    p = planner(space, targets=["Sr2TiO4", "SrTiO3"], precursors=["SrO", "TiO2"])
    params = {"target": "Sr2TiO4", "precursors": "SrO+TiO2", "temperature_c": 1000.0}
    p.tell([observe(params, 0.0, SrO=0.6, TiO2=0.4)])  # SrO + TiO2 did not react at 1000 C
    d = p.ask(2)
    assert sorted(recipes(d)) == [("Sr2TiO4", "SrO+TiO2", 1200.0), ("SrTiO3", "SrO+TiO2", 1200.0)]
    new = next(x for x in d.details["proposals"] if x["target"] == "SrTiO3")
    assert new["temperature_reason"] == (
        "new recipe: starts mid-grid; its pairs were observed not to react at 1000 C"
    )


def test_a_new_recipe_starts_where_the_target_first_formed(space: SearchSpace) -> None:
    p = planner(space, precursors=["SrO", "TiO2", "SrTiO3"])
    run = {"target": "Sr2TiO4", "precursors": "SrO+TiO2"}
    p.tell(
        [
            observe({**run, "temperature_c": 1000.0}, 0.0, SrO=0.6, TiO2=0.4),
            # the target formed only at 1200 C, beside the SrTiO3 that leaves little to it
            observe({**run, "temperature_c": 1200.0}, 0.3, Sr2TiO4=0.3, SrTiO3=0.4, SrO=0.3),
        ]
    )
    d = p.ask(1)
    assert recipes(d) == [("Sr2TiO4", "SrO+SrTiO3", 1200.0)]
    assert d.details["proposals"][0]["temperature_reason"] == (
        "new recipe: starts at 1200 C, the lowest at which the target formed"
    )
