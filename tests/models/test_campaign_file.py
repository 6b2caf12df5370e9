"""Reading campaign files (models/campaign_file.py): problems are structured, with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest

import models.campaign
from models.campaign_file import load_campaign, load_simulation, parse_spec, read_toml
from models.errors import InvalidCampaignError, Problem, parse_key_path, render_key_path

EXAMPLES = Path(__file__).parents[2] / "examples"


def _broken(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_every_cross_check_problem_comes_back_with_its_path_as_a_tuple(tmp_path: Path) -> None:
    path = _broken(
        tmp_path,
        ('name = "x2"', 'name = "x1"'),  # a parameter name used twice
        ('kind = "station"\naction', 'kind = "oven"\naction'),  # no instrument of that kind
        ('action = "measure"', 'action = "measure"\nparameters = ["x1", "x7"]'),
        ("[planner]", '[report]\ngroup_by = "x9"\n\n[planner]'),
    )
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(path)
    problems = {p.path: p.message for p in info.value.problems}
    assert set(problems) == {
        ("parameters", 1, "name"),
        ("workflow", 0, "kind"),
        ("workflow", 0, "parameters", 1),
        ("report", "group_by"),
    }
    assert problems[("parameters", 1, "name")] == "'x1' is used twice"
    # a step that sends an undeclared parameter names it and says what is declared
    assert (
        "sends parameter 'x7', which the search space does not declare"
        in (problems[("workflow", 0, "parameters", 1)])
    )
    assert "workflow[0].parameters[1]: step 'measure' sends parameter 'x7'" in str(info.value)
    assert info.value.source == str(path)


def test_a_message_holding_colons_and_semicolons_stays_one_problem(tmp_path: Path) -> None:
    # The cross checks used to be joined with "; " and split again at each "; ": this
    # message holds both "(declared: x1, ...)" and "; add it", and stays whole.
    path = _broken(tmp_path, ('action = "measure"', 'action = "measure"\nparameters = ["x7"]'))
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(path)
    (problem,) = info.value.problems
    assert problem.path == ("workflow", 0, "parameters", 0)
    assert problem.message.endswith(
        "(declared: x1, x2, x3, x4, x5, x6); add it to [[parameters]], or give it a value in fixed"
    )


def test_cross_checks_of_a_nested_model_are_placed_under_it() -> None:
    from models.campaign import SimulationFile

    data = {
        "instruments": [
            {"name": "ok", "kind": "k", "simulated": {"world": "hartmann6"}},
            {
                "name": "bad",
                "kind": "k",
                "simulated": {
                    "world": "hartmann6",
                    "faults": {"error_rate": 0.7, "hang_rate": 0.7},
                },
            },
        ]
    }
    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(data, SimulationFile, "lab.toml")
    (problem,) = info.value.problems
    assert problem.path == ("instruments", 1, "simulated", "faults")
    assert "add up to 1.4" in problem.message


def test_keys_that_are_not_bare_toml_keys_are_quoted(tmp_path: Path) -> None:
    path = _broken(tmp_path, ('action = "measure"', 'action = "measure"\ncost_per = {"a.b" = 1.0}'))
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(path)
    (problem,) = info.value.problems
    assert problem.path == ("workflow", 0, "cost_per", "a.b")
    assert problem.key == 'workflow[0].cost_per."a.b"'


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("", ()),
        ("workflow[0].fixed.ramp", ("workflow", 0, "fixed", "ramp")),
        ('options."a.b"[2]', ("options", "a.b", 2)),
        ("planner.options.surrogate_options", ("planner", "options", "surrogate_options")),
        ("--bind", ("--bind",)),
    ],
)
def test_key_paths_given_as_text_parse_and_render_back(key: str, path: tuple[object, ...]) -> None:
    assert Problem.at(key, "m").path == path
    assert render_key_path(Problem.at(key, "m").path) == key


def test_text_that_is_no_key_path_is_kept_as_one_key() -> None:
    assert parse_key_path("not a [key path") == ("not a [key path",)
    assert Problem.at("not a [key path", "m").key == '"not a [key path"'  # as TOML quotes it


def test_pairs_are_still_accepted_when_raising() -> None:
    exc = InvalidCampaignError("f.toml", [("options.colour", "unknown option"), Problem((), "x")])
    assert exc.problems == [Problem(("options", "colour"), "unknown option"), Problem((), "x")]
    assert exc.key_paths() == ["options.colour", ""]
    assert str(exc) == "f.toml: 2 problems\n  options.colour: unknown option\n  x"
    assert exc.problems[0].under("instruments", 2, "simulated").key == (
        "instruments[2].simulated.options.colour"
    )


def test_the_error_survives_pickling_with_its_problems() -> None:
    # The controller's connect-time check raises it inside a Ray actor.
    import pickle

    exc = InvalidCampaignError("connected instruments", [Problem(("workflow", 0), "needs x6")])
    back = pickle.loads(pickle.dumps(exc))
    assert (back.source, back.problems, str(back)) == (exc.source, exc.problems, str(exc))


def test_the_loader_is_still_importable_from_models_campaign() -> None:
    from models.campaign import load_campaign as old_load_campaign

    assert old_load_campaign is load_campaign
    assert models.campaign.load_simulation is load_simulation
    assert models.campaign.read_toml is read_toml
    with pytest.raises(AttributeError):
        _ = models.campaign.no_such_name  # type: ignore[attr-defined]
