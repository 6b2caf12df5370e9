"""The screening planner: options, initial design, ask/tell on a small list, batches."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace, StringParameter
from models.records import Observation
from planners.base import make_planner
from planners.screening import ScreeningPlanner, project, refit_point
from sim.materials.formula_world import enumerate_oxides, formation_model

SPACE = SearchSpace(parameters=[StringParameter(name="candidate"), StringParameter(name="formula")])
OBJ = [Objective(name="e_form", direction="minimize")]


@pytest.fixture(scope="module")
def small_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("list") / "oxides.csv"
    formulas = enumerate_oxides(400, seed=0)[::2]
    rows = [f"c{i},{f}\n" for i, f in enumerate(formulas)] + ["bad1,Zz3\n"]
    path.write_text("id,formula\n" + "".join(rows))
    return path


def _planner(path: Path, tmp: Path, **options: object) -> ScreeningPlanner:
    opts = {
        "candidates": str(path),
        "descriptor": "fractions",
        "cache_dir": str(tmp / "cache"),
        "workers": 1,
        "initial_points": 5,
        "surrogate": "rf",
        "surrogate_options": {"n_estimators": 30},
        "acquisition": "ei",
        **options,
    }
    p = make_planner("screening", SPACE, OBJ, seed=3, options=opts)
    assert isinstance(p, ScreeningPlanner)
    return p


def _tell(p: ScreeningPlanner, proposals: Sequence[Mapping[str, ParamValue]]) -> None:
    m = formation_model()
    p.tell(
        [
            Observation(parameters=pt, objectives={"e_form": m.energy(str(pt["formula"]))})
            for pt in proposals
        ]
    )


def test_bad_options_name_the_key(small_list: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate"):
        _planner(small_list, tmp_path, surrogate="nope")
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.acquisition"):
        _planner(small_list, tmp_path, surrogate="gp", surrogate_options={}, acquisition="thompson")
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.components"):
        _planner(small_list, tmp_path, components="some")
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.components"):
        _planner(small_list, tmp_path, components=0)
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.candidates"):
        _planner(tmp_path / "missing.csv", tmp_path)
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.id_parameter"):
        _planner(small_list, tmp_path, id_parameter="material")
    one = SearchSpace(parameters=[StringParameter(name="candidate")])
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.formula_parameter"):
        make_planner("screening", one, OBJ, options={"candidates": str(small_list)})
    p = make_planner(
        "screening",
        one,
        OBJ,
        options={"candidates": str(small_list), "formula_parameter": None, "workers": 1},
    )
    assert set(p.ask(1).proposals[0].parameters) == {"candidate"}
    with pytest.raises(PlannerError, match="exactly one objective"):
        make_planner(
            "screening",
            SPACE,
            [*OBJ, Objective(name="cost", direction="minimize")],
            options={"candidates": str(small_list)},
        )


def test_ask_tell_finds_better_candidates_than_the_initial_ones(
    small_list: Path, tmp_path: Path
) -> None:
    p = _planner(small_list, tmp_path)
    first = p.ask(5)
    assert first.details["phase"] == "initial_design"
    assert first.details["n_bad_rows"] == 1
    assert first.details["bad_rows"][0].startswith("row 202")
    assert first.details["n_candidates"] == 200
    _tell(p, [pr.parameters for pr in first.proposals])
    seen = {pr.parameters["candidate"] for pr in first.proposals}
    m = formation_model()
    init_best = min(m.energy(str(pr.parameters["formula"])) for pr in first.proposals)
    for _ in range(6):
        d = p.ask(2)
        assert d.details["phase"] == "screening"
        ids = [pr.parameters["candidate"] for pr in d.proposals]
        assert not seen & set(ids)
        assert len(set(ids)) == 2
        seen |= set(ids)
        for pr, det in zip(d.proposals, d.details["proposals"], strict=True):
            assert det["id"] == pr.parameters["candidate"]
            assert det["formula"] == pr.parameters["formula"]
            assert pr.score is not None
        assert d.details["n_train"] == len(seen) - 2
        _tell(p, [pr.parameters for pr in d.proposals])
    energies = sorted(m.energy(str(o.parameters["formula"])) for o in p.observations)
    assert energies[0] < init_best


def test_decisions_replay_and_pending_are_not_proposed(small_list: Path, tmp_path: Path) -> None:
    a, b = _planner(small_list, tmp_path), _planner(small_list, tmp_path)
    for p in (a, b):
        _tell(p, [pr.parameters for pr in p.ask(6).proposals])
    da = a.ask(3)
    db = b.ask(3)
    assert [x.parameters for x in da.proposals] == [x.parameters for x in db.proposals]
    assert db.details["features_computed"] == 0  # the second planner read the cache
    pending = [x.parameters for x in da.proposals]
    again = a.ask(3, pending=pending)
    assert not {x.parameters["candidate"] for x in again.proposals} & {
        x["candidate"] for x in pending
    }


@pytest.mark.parametrize("acquisition", ["ucb", "mean", "thompson"])
def test_every_acquisition_proposes_distinct_untried_rows(
    small_list: Path, tmp_path: Path, acquisition: str
) -> None:
    p = _planner(small_list, tmp_path, acquisition=acquisition)
    _tell(p, [pr.parameters for pr in p.ask(6).proposals])
    d = p.ask(4)
    ids = [x.parameters["candidate"] for x in d.proposals]
    assert len(set(ids)) == 4
    assert d.details["acquisition"] == acquisition


def test_the_list_runs_out(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("id,formula\na,MgO\nb,CaO\nc,SrO\n")
    p = _planner(path, tmp_path, initial_points=2)
    d = p.ask(5)
    assert len(d.proposals) == 3
    _tell(p, [pr.parameters for pr in d.proposals])
    done = p.ask(1)
    assert done.proposals == []
    assert "finished" in done.details


def _gp_planner(path: Path, tmp: Path, **options: object) -> ScreeningPlanner:
    opts: dict[str, object] = {"surrogate_options": {}, "components": 20, **options}
    return _planner(path, tmp, surrogate="list_gp", **opts)


@pytest.mark.parametrize("kernel", ["rbf", "matern_gamma"])
def test_list_gp_screens_better_than_the_initial_rows(
    small_list: Path, tmp_path: Path, kernel: str
) -> None:
    default = make_planner("screening", SPACE, OBJ, options={"candidates": str(small_list)})
    assert isinstance(default, ScreeningPlanner)
    assert (default.opts.surrogate, default.opts.acquisition) == ("list_gp", "mean")
    assert default.components == 20  # the list GP's default projection
    forest = make_planner(
        "screening", SPACE, OBJ, options={"candidates": str(small_list), "surrogate": "rf"}
    )
    assert isinstance(forest, ScreeningPlanner)
    assert forest.components is None
    unprojected = make_planner(
        "screening", SPACE, OBJ, options={"candidates": str(small_list), "components": "all"}
    )
    assert isinstance(unprojected, ScreeningPlanner)
    assert unprojected.components is None
    p = _gp_planner(small_list, tmp_path, surrogate_options={"kernel": kernel})
    first = p.ask(5)
    _tell(p, [pr.parameters for pr in first.proposals])
    m = formation_model()
    init_best = min(m.energy(str(pr.parameters["formula"])) for pr in first.proposals)
    seen = {pr.parameters["candidate"] for pr in first.proposals}
    for _ in range(5):
        d = p.ask(2)
        assert d.details["surrogate"] == "list_gp"
        assert d.details["n_exact_std"] >= 2
        assert p._gp is not None
        assert (
            type(p._gp[1]._kernel).__name__
            == {"rbf": "RBFKernel", "matern_gamma": "MaternKernel"}[kernel]
        )
        ids = {pr.parameters["candidate"] for pr in d.proposals}
        assert len(ids) == 2
        assert not ids & seen
        seen |= ids
        _tell(p, [pr.parameters for pr in d.proposals])
    energies = sorted(m.energy(str(o.parameters["formula"])) for o in p.observations)
    assert energies[0] < init_best
    # the best of the list's 200 rows by the noise-free truth is among the 15 measured
    truth = sorted(m.energy(r.formula) for r in p.list.rows if r.formula != "Zz3")
    assert energies[0] <= truth[len(truth) // 20]


def test_list_gp_decisions_replay_across_the_refit_schedule(
    small_list: Path, tmp_path: Path
) -> None:
    # one planner asks along the way (its hyperparameters cached between refits), a second
    # is told everything at once, as after a restart: the same decision
    a = _gp_planner(small_list, tmp_path)
    for _ in range(4):
        _tell(a, [pr.parameters for pr in a.ask(3).proposals])
    b = _gp_planner(small_list, tmp_path)
    b.tell(a.observations)
    da, db = a.ask(2), b.ask(2)
    assert [x.parameters for x in da.proposals] == [x.parameters for x in db.proposals]
    assert da.details["predicted_std"] == pytest.approx(db.details["predicted_std"])


def test_refit_schedule_and_projection() -> None:
    assert [refit_point(n, 0.0) for n in (2, 3, 10)] == [2, 3, 10]
    points = sorted({refit_point(n, 0.1) for n in range(10, 111)})
    assert points[:3] == [10, 11, 12]
    assert points[-1] == 103
    assert all(b >= a * 1.1 - 1 for a, b in itertools.pairwise(points))
    rng = np.random.default_rng(0)
    scaled = rng.standard_normal((300, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1, 0.1])
    z = project(scaled @ np.linalg.qr(rng.standard_normal((6, 6)))[0], 3)
    assert z.shape == (300, 3)
    assert z.min(0) == pytest.approx(np.zeros(3))
    assert z[:, 0].max() == pytest.approx(1.0)
    spread = z.std(0)
    assert spread[0] >= spread[1] >= spread[2]
