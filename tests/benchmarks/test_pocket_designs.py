"""The geometry-only pocket designs (benchmarks/pocket_designs.py) on one layout."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.pocket_designs import farthest_first, hex_lattice, main, run_design


@pytest.mark.parametrize(
    ("rule", "rho", "first", "last"),
    [("max", 0.1, 60, 100), ("cover-first", 0.1, 60, 100), ("lattice", 0.04, 104, 160)],
)
def test_each_design_measures_every_phase_of_layout_0(
    rule: str, rho: float, first: int, last: int
) -> None:
    # the lattice (radius 0.07) is about 104 points; the rest refine the map
    accuracy, counts = run_design(0, rho, rule, [first, last])
    assert sum(counts[first]) == first
    assert sum(counts[last]) == last
    assert all(c > 0 for c in counts[last])  # the three pockets (phases 3-5) among them
    assert 0.85 < accuracy[last] <= 1.0
    assert accuracy[last] > accuracy[first]


@pytest.mark.parametrize("radius", [0.05, 0.07, 0.1])
def test_the_lattice_covers_the_square_within_its_radius(radius: float) -> None:
    points = hex_lattice(radius, np.array([0.3, 0.7]))
    assert ((points >= 0) & (points <= 1)).all()
    u = np.linspace(0.0, 1.0, 101)
    grid = np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2)
    nearest = np.linalg.norm(grid[:, None, :] - points[None, :, :], axis=-1).min(axis=1)
    assert nearest.max() <= radius * 1.0001  # every place is within the covering radius
    # about one point per 2.6 r^2 of area (the thinnest covering), plus those moved onto
    # the edges: at most one per lattice spacing of the perimeter
    assert 1 / (2.6 * radius**2) <= len(points) <= 1 / (2.6 * radius**2) + 4 / (radius * 3**0.5)
    ordered = farthest_first(points)
    assert sorted(map(tuple, ordered)) == sorted(map(tuple, points))
    # a quarter of them already spread over the square: the farthest-first order covers
    # within twice the best radius for that many points (about 2 r)
    first = ordered[: len(points) // 4]
    assert np.linalg.norm(grid[:, None, :] - first[None, :, :], axis=-1).min(axis=1).max() < (
        3 * radius
    )


def test_the_rules_differ_and_the_report_names_them(capsys: pytest.CaptureFixture) -> None:
    assert run_design(0, 0.1, "max", [60])[1] != run_design(0, 0.1, "cover-first", [60])[1]
    assert run_design(0, 0.1, "lattice", [60])[1] != run_design(0, 0.1, "sobol", [60])[1]
    for rule in ("random", "sobol"):
        assert sum(run_design(0, 0.1, rule, [40])[1][40]) == 40
    main(["--layouts", "1", "--first", "3", "--radii", "0.1", "--checkpoints", "40"])
    out = capsys.readouterr().out
    assert "max, rho = 0.1 (layouts 3-3):" in out
    assert "cover-first, rho = 0.1 (layouts 3-3):" in out
    assert "lattice, rho = 0.1, lattice radius 0.07, rare weight 1.0 (layouts 3-3):" in out
    assert "random, rho = 0.1 (layouts 3-3):" in out
    assert "points in the pockets" in out
