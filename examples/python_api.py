"""sdlab from Python: the worked example of docs/python.md (the test suite runs it).

A campaign defined in Python, measurements from an earlier study brought in, then a few
rounds of ask -> "do the experiments" -> tell, then the results as a DataFrame and a figure.
The "experiments" here are a function of the parameters (a 2-D Branin, maximised as its
negative); in a lab they are whatever a person or another system does.
"""

from __future__ import annotations

import math
import sys

import pandas as pd

from controller import Campaign

DB = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///python-api-demo.db"


def branin(x1: float, x2: float) -> float:
    """Noise-free Branin, negated so that larger is better (best -0.397887)."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return -((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


campaign = Campaign(
    {
        "campaign": {"name": "branin-by-hand", "seed": 7},
        "parameters": [
            {"name": "x1", "type": "continuous", "lower": -5, "upper": 10},
            {"name": "x2", "type": "continuous", "lower": 0, "upper": 15},
        ],
        "objectives": [{"name": "y", "direction": "maximize"}],
        # ask/tell by hand contacts no instrument; the file format still names one
        "workflow": [{"kind": "bench", "action": "measure"}],
        "instruments": [{"name": "bench-1", "kind": "bench", "address": "tcp://127.0.0.1:1"}],
        "planner": {"name": "qlognei", "options": {"num_restarts": 2, "raw_samples": 64}},
        "budget": {"max_experiments": 12},
    },
    db=DB,
)

# Earlier measurements, e.g. from a spreadsheet: validated row by row against the space.
earlier = pd.DataFrame({"x1": [0.0, 5.0, -2.5], "x2": [5.0, 10.0, 12.0]})
earlier["y"] = [branin(a, b) for a, b in zip(earlier.x1, earlier.x2, strict=True)]
campaign.add_data(earlier)

for _ in range(4):
    todo = campaign.ask(2)  # experiment_id, x1, x2, origin, score
    done = [
        {"experiment_id": int(row.experiment_id), "y": branin(row.x1, row.x2)}
        for row in todo.itertuples()
    ]
    campaign.tell(done)

results = campaign.results()
best = campaign.best()
assert best is not None
print(results[["id", "status", "param.x1", "param.x2", "obj.y"]].to_string(index=False))
print(f"best y = {best['y']:.4f} at x1 = {best['x1']:.3f}, x2 = {best['x2']:.3f}")
figure = campaign.best_so_far_figure()  # a plotly figure; in Jupyter, just show it
print(f"figure: {figure.layout.title.text}")
campaign.close()
