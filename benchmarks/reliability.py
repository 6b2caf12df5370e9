"""Run the reliability tests and print the figures ``docs/reliability.md`` quotes.

The figures come from the tests themselves: each reliability test appends what it did and
what it checked (kills survived, experiments lost, duplicated starts, faults injected per
class, refusals) to the JSON-lines file named by ``$SDLAB_FIGURES``; this script sets it,
runs the tests with pytest, and prints one table.

Usage::

    .venv/bin/python -m benchmarks.reliability [-k EXPRESSION] [--postgres-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTS = [
    "tests/integration/test_stress.py",
    "tests/integration/test_crash_recovery.py",
    "tests/integration/test_fault_campaign.py",
    "tests/controller/test_faults.py",
    "tests/instruments/test_fuzz.py",
    "tests/models/test_campaign_fuzz.py",
    "tests/controller/test_cli_fuzz.py",
    "tests/controller/test_safety_campaign.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="pytest -k expression to select tests")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        # the suite kills the stress campaign 3 times per database; the figures use 20
        env = dict(os.environ, SDLAB_FIGURES=str(figures))
        env.setdefault("SDLAB_STRESS_KILLS", "20")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
        if args.k:
            cmd += ["-k", args.k]
        code = subprocess.call(cmd, cwd=root, env=env)
        rows = (
            [json.loads(line) for line in figures.read_text().splitlines()]
            if (figures.exists())
            else []
        )
    print()
    print(f"{'test':<26} {'kills':>5} {'lost':>4} {'dup':>3} {'reruns':>6} {'done':>5}  other")
    for row in rows:
        print(_line(row))
    return code


def _line(row: dict[str, Any]) -> str:
    known = {"test", "kills", "lost", "duplicated", "reruns", "completed", "experiments"}
    other = {k: v for k, v in row.items() if k not in known}
    return (
        f"{row['test']:<26} {row.get('kills', ''):>5} {row.get('lost', ''):>4} "
        f"{row.get('duplicated', ''):>3} {row.get('reruns', ''):>6} "
        f"{row.get('completed', ''):>5}  {json.dumps(other)}"
    )


if __name__ == "__main__":
    sys.exit(main())
