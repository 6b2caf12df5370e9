"""The Python API's figures (controller/notebook_figures.py): the same numbers in plotly
and matplotlib, from data whose best values and Pareto front are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from controller import Campaign
from models.errors import CampaignStateError, InvalidCampaignError

ROWS = pd.DataFrame(
    {
        "a": [0.1, 0.9, 0.5, 0.3, 0.7],
        "b": [0.2, 0.4, 0.6, 0.8, 1.0],
        "y": [1.0, 3.0, 2.0, 4.0, 0.5],  # maximised
        "cost": [1.0, 2.0, 0.5, 5.0, 0.4],  # minimised
    }
)
# best y after each row: 1, 3, 3, 4, 4. Pareto (max y, min cost): (0.5, 0.4) (2.0, 0.5)
# (3.0, 2.0) (4.0, 5.0); (1.0, 1.0) is dominated by (2.0, 0.5).
BEST = [1.0, 3.0, 3.0, 4.0, 4.0]
FRONT = [(0.5, 0.4), (2.0, 0.5), (3.0, 2.0), (4.0, 5.0)]


def two_objectives(tmp_path: Path) -> Campaign:
    spec: dict[str, Any] = {
        "campaign": {"name": "figures", "seed": 1},
        "parameters": [
            {"name": "a", "type": "continuous", "lower": 0, "upper": 1},
            {"name": "b", "type": "continuous", "lower": 0, "upper": 1},
        ],
        "objectives": [
            {"name": "y", "direction": "maximize"},
            {"name": "cost", "direction": "minimize"},
        ],
        "workflow": [{"kind": "bench", "action": "measure"}],
        "instruments": [{"name": "bench-1", "kind": "bench", "address": "tcp://127.0.0.1:1"}],
        "planner": {"name": "sobol"},
        "budget": {"max_experiments": 10},
    }
    c = Campaign(spec, db=f"sqlite:///{tmp_path / 'figures.db'}")
    c.add_data(ROWS)
    return c


def test_both_backends_draw_the_best_so_far_and_the_pareto_front(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    c = two_objectives(tmp_path)
    plotly_best = c.best_so_far_figure()
    assert list(plotly_best.data[0].x) == [1, 2, 3, 4, 5]
    assert list(plotly_best.data[0].y) == BEST
    mpl_best = c.best_so_far_figure(backend="matplotlib")
    assert isinstance(mpl_best, Figure)
    line = mpl_best.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(line.get_ydata()) == BEST

    plotly_front = c.pareto_figure().data[1]
    assert list(zip(plotly_front.x, plotly_front.y, strict=True)) == FRONT
    mpl_front = c.pareto_figure(backend="matplotlib").axes[0].lines[0]
    assert list(zip(mpl_front.get_xdata(), mpl_front.get_ydata(), strict=True)) == FRONT

    par = c.parameter_figure(backend="matplotlib")
    # one line per completed experiment, each axis scaled to its own range
    lines = par.axes[0].lines
    assert len(lines) == len(ROWS)
    ys = sorted(tuple(ln.get_ydata()) for ln in lines)
    assert ys[0] == pytest.approx((0.0, 0.0))  # a = 0.1 (lowest), b = 0.2 (lowest)
    assert [d.label for d in c.parameter_figure().data[0].dimensions] == ["a", "b"]
    c.close()


def test_an_unknown_backend_is_named_and_one_objective_has_no_front(tmp_path: Path) -> None:
    c = two_objectives(tmp_path)
    with pytest.raises(InvalidCampaignError) as info:
        c.best_so_far_figure(backend="bokeh")  # type: ignore[arg-type]
    assert info.value.key_paths() == ["backend"]
    assert "'bokeh' is not one of plotly, matplotlib" in str(info.value)
    c.close()
    single = Campaign(
        {
            "campaign": {"name": "one", "seed": 1},
            "parameters": [{"name": "a", "type": "continuous", "lower": 0, "upper": 1}],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "bench", "action": "measure"}],
            "instruments": [{"name": "b-1", "kind": "bench", "address": "tcp://127.0.0.1:1"}],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": 3},
        },
        db=f"sqlite:///{tmp_path / 'one.db'}",
    )
    with pytest.raises(CampaignStateError, match="two objectives"):
        single.pareto_figure(backend="matplotlib")
    single.close()
