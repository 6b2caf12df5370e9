"""Write examples/data/oxide-candidates.csv: 2,000 charge-balanced oxides, one per row.

The rows are a fixed random draw (seed 0) from the 25,000 ternary and quaternary oxides of
:func:`sim.materials.formula_world.enumerate_oxides` (the screening benchmark's pool), with
ids ``ox-0001`` ... in draw order. The list holds no property: the hidden truth is the
``formula-energy`` world's. Run from the repository root:

    python examples/data/make_oxide_list.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sim.materials.formula_world import enumerate_oxides

N_ROWS = 2000
POOL = 25_000
OUT = Path(__file__).resolve().parent / "oxide-candidates.csv"


def main() -> None:
    """Draw the rows and write the file."""
    pool = enumerate_oxides(POOL, seed=0)
    rows = np.random.default_rng(0).choice(len(pool), N_ROWS, replace=False)
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "formula"])
        for k, i in enumerate(rows):
            w.writerow([f"ox-{k + 1:04d}", pool[int(i)]])


if __name__ == "__main__":
    main()
