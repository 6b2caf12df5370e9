"""The discovery planner: options, candidate generation, origins, screening."""

from __future__ import annotations

import pytest

from models.errors import InvalidCampaignError, PlannerError
from models.materials import parse_material
from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace, StringParameter
from models.records import Observation
from planners.base import make_planner
from planners.discovery import DiscoveryPlanner
from planners.proposers import substitution_log_probability

SPACE = SearchSpace(parameters=[StringParameter(name="material")])
OBJ = [Objective(name="e_hull", direction="minimize")]
ELEMENTS = ["Sr", "Ti", "O"]


def _truth(material: str) -> float:
    """A noise-free synthetic target: best at an oxygen fraction of 0.6 (SrTiO3)."""
    comp = parse_material(material).composition
    return abs(comp.get_atomic_fraction("O") - 0.6) * 4.0


def _planner(**options: object) -> DiscoveryPlanner:
    opts = {"elements": ELEMENTS, "min_elements": 3, "initial_points": 4, **options}
    planner = make_planner("discovery", SPACE, OBJ, seed=7, options=opts)
    assert isinstance(planner, DiscoveryPlanner)
    return planner


def _tell(planner: DiscoveryPlanner, materials: list[str]) -> None:
    planner.tell(
        [
            Observation(parameters={"material": m}, objectives={"e_hull": _truth(m)})
            for m in materials
        ]
    )


def test_bad_options_name_the_key() -> None:
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.elements"):
        make_planner("discovery", SPACE, OBJ, options={"elements": ["Sr", "Qq"]})
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.acquisition"):
        make_planner("discovery", SPACE, OBJ, options={"elements": ELEMENTS, "acquisition": "x"})
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.parameter"):
        make_planner("discovery", SPACE, OBJ, options={"elements": ELEMENTS, "parameter": "m"})
    numeric = SearchSpace(parameters=[ContinuousParameter(name="x", lower=0, upper=1)])
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.parameter"):
        make_planner("discovery", numeric, OBJ, options={"elements": ELEMENTS, "parameter": "x"})


def test_numeric_planners_refuse_string_parameters() -> None:
    with pytest.raises(PlannerError, match="string parameter 'material'"):
        make_planner("bo", SPACE, OBJ).ask(1)


def test_decisions_carry_origins_and_are_reproducible() -> None:
    planner = _planner(proposers=["charge_balanced", "substitution"])
    decision = planner.ask(3)
    assert decision.details["phase"] == "initial_design"
    assert decision.details["n_candidates"]["charge_balanced"] > 20
    materials = [p.parameters["material"] for p in decision.proposals]
    assert len(set(materials)) == 3
    for p, info in zip(decision.proposals, decision.details["proposals"], strict=True):
        assert info["material"] == p.parameters["material"]
        assert p.origin == info["proposer"]
        assert set(p.origin.split("+")) <= {"charge_balanced", "substitution"}
        label = parse_material(info["material"]).prototype
        assert info["parent"].endswith(label)  # the prototype compound it came from
        assert info["formula"] == parse_material(info["material"]).formula
    again = _planner(proposers=["charge_balanced", "substitution"]).ask(3)
    assert [p.parameters for p in again.proposals] == [p.parameters for p in decision.proposals]


def test_prior_initial_design_takes_the_most_probable_substitutions() -> None:
    planner = _planner(proposers=["charge_balanced", "substitution"])
    prior = sorted(
        (substitution_log_probability(c.material) for c in planner.base_candidates()),
        reverse=True,
    )
    decision = planner.ask(3)
    assert list(decision.candidate_scores) == pytest.approx(prior[:3])
    assert prior[0] > prior[len(prior) // 2]  # the prior tells candidates apart
    randomly = _planner(proposers=["charge_balanced", "substitution"], initial_design="random")
    assert randomly.ask(3).candidate_scores == []


def test_screening_proposes_unmeasured_materials_better_than_typical() -> None:
    planner = _planner(proposers=["charge_balanced"], acquisition="pstable", threshold=0.05)
    pool = [c.material for c in planner.base_candidates()]
    _tell(planner, pool[::5][:8])
    decision = planner.ask(2, pending=[{"material": pool[1]}])
    assert decision.details["phase"] == "screening"
    picked = [p.parameters["material"] for p in decision.proposals]
    measured = {o.parameters["material"] for o in planner.observations}
    assert not set(picked) & (measured | {pool[1]})
    median = sorted(_truth(m) for m in pool)[len(pool) // 2]
    assert all(_truth(m) < median for m in picked)
    assert len(decision.candidate_scores) == 2


def test_vae_adds_candidates_once_trained() -> None:
    planner = _planner(proposers=["vae"], vae_min_train=4, vae_samples=32, vae_epochs=100)
    assert planner.base_candidates() == []
    with pytest.raises(PlannerError, match="only 0 candidate materials left"):
        planner.ask(1)
    seeded = _planner(proposers=["charge_balanced"]).base_candidates()
    _tell(planner, [c.material for c in seeded[::7][:5]])
    decision = planner.ask(2)
    assert decision.details["n_candidates"]["vae"] > 0
    assert decision.details["vae_loss"] is not None
    for info in decision.details["proposals"]:
        assert info["proposer"] == "vae"
        assert info["parent"].startswith("vae(target=")


@pytest.mark.parametrize(
    ("surrogate", "options"),
    [
        ("rf", {}),
        ("cgcnn", {"n_members": 2, "epochs": 20, "atom_len": 8, "hidden": 16, "n_conv": 1}),
    ],
)
def test_a_registered_surrogate_screens_in_place_of_the_gp(
    surrogate: str, options: dict[str, object]
) -> None:
    planner = _planner(
        proposers=["charge_balanced"],
        acquisition="pstable",
        threshold=0.05,
        surrogate=surrogate,
        surrogate_options=options,
    )
    pool = [c.material for c in planner.base_candidates()]
    _tell(planner, pool[::5][:8])
    decision = planner.ask(2)
    assert decision.details["surrogate"] == surrogate
    picked = [p.parameters["material"] for p in decision.proposals]
    assert not set(picked) & {o.parameters["material"] for o in planner.observations}
    assert all(s > 0 for s in decision.details["predicted_std_bilog"])
    if surrogate == "rf":  # composition features carry the truth: it screens well
        median = sorted(_truth(m) for m in pool)[len(pool) // 2]
        assert all(_truth(m) < median for m in picked)


def test_an_unknown_surrogate_or_option_names_the_key() -> None:
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate"):
        _planner(surrogate="nope")
    with pytest.raises(
        InvalidCampaignError, match=r"planner\.options\.surrogate_options\.n_estimators"
    ):
        _planner(surrogate="rf", surrogate_options={"n_estimators": "many"})
