"""docs/python.md's "Planners directly" example (examples/planner_api.py) runs as a script:
a built-in planner asked and told by hand with pending points, and a planner of one's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_planner_example_of_docs_python_md_runs() -> None:
    example = REPO / "examples" / "planner_api.py"
    assert "examples/planner_api.py" in (REPO / "docs" / "python.md").read_text()
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # 8 asks of 2, each telling the batch before it: 14 observations, 2 still running
    assert lines[:3] == [f"{'initial_design':>15}: asked 2, {k} told" for k in (0, 2, 2)]
    assert "qlognei best y = " in result.stdout
    assert "after 14 experiments" in result.stdout
    # the own planner starts from those 14 and adds 5 asks of 4
    assert "example-local best y = " in result.stdout
    assert "after 34 experiments" in result.stdout
    best = float(result.stdout.split("example-local best y = ")[1].split()[0])
    assert 0.397887 <= best < 2.0  # Branin's minimum is 0.397887; a local search gets near it
    assert lines[-1] == "a planner rebuilt from the same observations decides the same"
