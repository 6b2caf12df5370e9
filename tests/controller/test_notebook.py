"""The Python API (controller/notebook.py): ask/tell by hand, imported data, results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from controller import Campaign
from controller.store import make_engine, observations, session_factory, transaction
from models.errors import InvalidCampaignError
from models.status import ExperimentStatus
from models.tables import DecisionRow, EventRow, ExperimentRow

REPO = Path(__file__).resolve().parents[2]


def spec(name: str = "by-hand") -> dict[str, Any]:
    return {
        "campaign": {"name": name, "seed": 5},
        "parameters": [
            {"name": "a", "type": "continuous", "lower": 0, "upper": 1},
            {"name": "b", "type": "continuous", "lower": 0, "upper": 1},
        ],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "workflow": [{"kind": "bench", "action": "measure"}],
        "instruments": [{"name": "bench-1", "kind": "bench", "address": "tcp://127.0.0.1:1"}],
        "planner": {"name": "sobol"},
        "budget": {"max_experiments": 10},
    }


def truth(a: float, b: float) -> float:
    return -((a - 0.3) ** 2) - (b - 0.6) ** 2


def test_ask_and_tell_are_recorded_as_a_controller_records_them(db_url: str) -> None:
    c = Campaign(spec(), db=db_url)
    todo = c.ask(3)
    assert list(todo.columns) == ["experiment_id", "a", "b", "origin", "score"]
    assert len(todo) == 3
    told = c.tell(
        [{"experiment_id": int(r.experiment_id), "y": truth(r.a, r.b)} for r in todo.itertuples()]
    )
    assert told == [int(i) for i in todo.experiment_id]
    second = c.ask(1)  # the planner is rebuilt from the store and knows the three
    engine = make_engine(db_url)
    with transaction(session_factory(engine)) as s:
        decisions = s.scalars(select(DecisionRow).order_by(DecisionRow.id)).all()
        assert [(d.planner, d.n_train, d.n_proposed) for d in decisions] == [
            ("sobol", 0, 3),
            ("sobol", 3, 1),
        ]
        exps = s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
        assert [e.status for e in exps] == [ExperimentStatus.COMPLETED] * 3 + [
            ExperimentStatus.QUEUED
        ]
        assert all(e.decision_id == decisions[0].id for e in exps[:3])
        obs = observations(s, c.id, list(c.spec.objectives))
        assert [o.objectives["y"] for o in obs] == pytest.approx(
            [truth(r.a, r.b) for r in todo.itertuples()]
        )
    engine.dispose()
    assert int(second.experiment_id[0]) == exps[3].id
    best = c.best()
    assert best is not None
    assert best["y"] == pytest.approx(max(truth(r.a, r.b) for r in todo.itertuples()))
    frame = c.results()
    assert list(frame["status"]) == ["COMPLETED"] * 3 + ["QUEUED"]
    assert c.best_so_far_figure().data[0].y[-1] == pytest.approx(best["y"])
    c.close()


def test_a_bad_result_names_its_row_and_column_and_nothing_is_recorded(db_url: str) -> None:
    c = Campaign(spec(), db=db_url)
    todo = c.ask(2)
    first, second = (int(i) for i in todo.experiment_id)
    with pytest.raises(InvalidCampaignError) as info:
        c.tell([{"experiment_id": first, "y": 1.0}, {"experiment_id": second, "y": "high"}])
    assert [p.key for p in info.value.problems] == ["rows[1].y"]
    assert "'high' is not a number" in str(info.value)
    with pytest.raises(InvalidCampaignError, match="no experiment 999 here"):
        c.tell([{"experiment_id": 999, "y": 1.0}])
    assert list(c.results()["status"]) == ["QUEUED", "QUEUED"]  # nothing recorded
    c.tell([{"experiment_id": first, "failed": True, "reason": "the sample cracked"}])
    frame = c.results()
    assert list(frame["status"]) == ["FAILED", "QUEUED"]
    with pytest.raises(InvalidCampaignError, match="is FAILED"):
        c.tell([{"experiment_id": first, "y": 1.0}])
    c.close()


def test_imported_data_is_validated_row_by_row_and_does_not_use_up_the_budget(
    tmp_path: Path, db_url: str
) -> None:
    c = Campaign(spec(), db=db_url)
    csv = tmp_path / "earlier.csv"
    csv.write_text("a,b,y,operator\n0.1,0.2,-0.5,ada\n1.7,0.2,-0.1,ada\n0.4,0.5,oops,bo\n")
    with pytest.raises(InvalidCampaignError) as info:
        c.add_data(csv)
    # the file's lines: a out of its bounds on line 3, a y that is not a number on line 4;
    # the operator column is a note, not a measurement
    assert [p.key for p in info.value.problems] == ["rows[1].a", "rows[2].y"]
    assert [p.message.split(":")[0] for p in info.value.problems] == ["line 3", "line 4"]
    assert c.results().empty  # nothing recorded
    ids = c.add_data(pd.DataFrame({"a": [0.1, 0.5], "b": [0.2, 0.5], "y": [-0.2, -0.05]}))
    frame = c.results()
    assert list(frame["status"]) == ["COMPLETED", "COMPLETED"]
    assert list(frame["obj.y"]) == [-0.2, -0.05]
    assert c.progress()["budget"] == 12  # 10 + the 2 imported
    engine = make_engine(c.db)
    with transaction(session_factory(engine)) as s:
        origins = s.scalars(select(ExperimentRow.origin).where(ExperimentRow.id.in_(ids))).all()
        assert set(origins) == {"imported"}
        budget = s.scalars(select(EventRow).where(EventRow.kind == "campaign.budget")).one()
        assert budget.data["imported"] == 2
    engine.dispose()
    assert c.best() == {"experiment_id": ids[1], "a": 0.5, "b": 0.5, "y": -0.05}
    c.close()


def test_a_units_row_under_the_header_is_named_and_rows_may_be_dicts(tmp_path: Path) -> None:
    c = Campaign(spec(), db=f"sqlite:///{tmp_path / 'c.db'}")
    csv = tmp_path / "export.csv"
    csv.write_text("a,b,y\nfraction,fraction,mV\n0.1,0.2,-0.5\n0.4,0.5,-0.1\n")
    with pytest.raises(InvalidCampaignError) as info:
        c.add_data(csv)
    [problem] = info.value.problems
    assert problem.key == "rows[0]"
    assert "line 2 looks like a row of units" in problem.message
    assert "a: 'fraction'" in problem.message
    assert "y: 'mV'" in problem.message
    assert "put units in the column names" in problem.message
    assert c.results().empty
    # replicates (the same conditions twice) are kept, one experiment each
    ids = c.add_data([{"a": 0.1, "b": 0.2, "y": -0.5}, {"a": 0.1, "b": 0.2, "y": -0.4}])
    assert len(ids) == 2
    assert list(c.results()["obj.y"]) == [-0.5, -0.4]
    c.close()


def test_the_same_name_with_other_settings_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    Campaign(spec(), db=db).close()
    other = spec()
    other["parameters"][0]["upper"] = 2
    with pytest.raises(InvalidCampaignError, match="different settings"):
        Campaign(other, db=db)
    reopened = Campaign.open("by-hand", db=db)
    assert reopened.spec.space.parameters[0].model_dump()["upper"] == 1
    reopened.close()


def test_the_worked_example_of_docs_python_md_runs(tmp_path: Path) -> None:
    example = REPO / "examples" / "python_api.py"
    assert "examples/python_api.py" in (REPO / "docs" / "python.md").read_text()
    result = subprocess.run(
        [sys.executable, str(example), f"sqlite:///{tmp_path / 'demo.db'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best y = " in result.stdout
    reopened = Campaign.open("branin-by-hand", db=f"sqlite:///{tmp_path / 'demo.db'}")
    frame = reopened.results()
    assert (frame["status"] == "COMPLETED").sum() == 11  # 3 imported + 4 rounds of 2
    reopened.close()


def test_an_excel_export_with_semicolons_and_decimal_commas_imports_as_numbers(
    tmp_path: Path,
) -> None:
    c = Campaign(spec(), db=f"sqlite:///{tmp_path / 'c.db'}")
    export = tmp_path / "export.csv"
    # Excel in a German locale: byte-order mark, semicolons, decimal commas, empty rows
    export.write_bytes("\ufeffa;b;y\n0,1;0,2;-0,5\n;;\n0,4;1,5;-0,1\n;;\n".encode())
    with pytest.raises(InvalidCampaignError) as info:
        c.add_data(export)
    [problem] = info.value.problems
    assert problem.key == "rows[1].b"
    assert problem.message.startswith("line 4: ")  # the file's line, past the empty one
    assert c.results().empty
    export.write_bytes("\ufeffa;b;y\n0,1;0,2;-0,5\n;;\n0,4;0,5;-0,1\n;;\n".encode())
    ids = c.add_data(export)
    assert len(ids) == 2
    frame = c.results()
    assert list(frame["param.a"]) == [0.1, 0.4]
    assert list(frame["obj.y"]) == [-0.5, -0.1]
    c.close()
