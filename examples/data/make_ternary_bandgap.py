"""Write ``ternary-bandgap.csv``: a synthetic table for the retrospective-benchmark example.

The table imitates a lab's screening data of a ternary system A-B-C: every composition on a
0.1 grid of the simplex (66 compositions) annealed at 300, 400 and 500 degC. The band gap
follows Vegard's law with bowing terms, shifted by the annealing temperature, plus 0.01 eV
of measurement scatter; the cost is linear in the composition and the temperature. The
numbers are made up: they exist so the example runs anywhere.

Run from the repository root:  python examples/data/make_ternary_bandgap.py
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def main() -> None:
    """Write the CSV file next to this script."""
    rng = np.random.default_rng(7)
    rows = []
    step = 10
    for i in range(step + 1):
        for j in range(step + 1 - i):
            a, b, c = i / step, j / step, (step - i - j) / step
            for t in (300, 400, 500):
                gap = 1.1 * a + 1.9 * b + 2.6 * c - 0.9 * a * b - 0.6 * b * c - 0.4 * a * c
                gap += 0.15 * math.tanh((t - 400) / 80) - 0.1 * a * (t - 300) / 200
                gap += rng.normal(0, 0.01)
                cost = 3.0 * a + 1.0 * b + 0.5 * c + 0.002 * (t - 300)
                rows.append((f"{a:.1f}", f"{b:.1f}", f"{c:.1f}", t, f"{gap:.4f}", f"{cost:.3f}"))
    out = Path(__file__).with_name("ternary-bandgap.csv")
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frac_a", "frac_b", "frac_c", "anneal_c", "band_gap_ev", "cost"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
