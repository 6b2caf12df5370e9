"""The A-Lab benchmark's harness on a tiny hand-made world with a known trap.

The fake world follows ``sim.alab.world.AlabWorld``'s interface. Its hidden chemistry: a
strontium and a titanium oxide give SrTiO3 from 1000 °C. For Sr2TiO4, every set with a
titanium oxide and a strontium oxide goes (from 800 °C) to the SrTiO3 trap, leaving too
little driving force to continue; SrO + SrTiO3 gives Sr2TiO4, but only from 1200 °C. The
best first recipe (by driving force, SrO + Ti2O3) therefore never works, and learning from
its intermediates is needed to obtain Sr2TiO4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.alab import measure, per_target, run, run_campaign, table
from tests.planners.test_alab import FORMATION


class TrapWorld:
    """A hidden-truth world with the interface the benchmark needs."""

    def targets(self) -> list[str]:
        return ["Sr2TiO4", "SrTiO3"]

    def precursors(self) -> list[str]:
        return ["SrO", "SrO2", "TiO2", "Ti2O3", "SrTiO3"]

    def thermo_entries(self) -> list[dict[str, Any]]:
        return [{"formula": f, "energy_per_atom": e} for f, e in FORMATION.items()]

    def react(self, target: str, precursors: str, temperature_c: float) -> dict[str, float]:
        parts = set(precursors.split("+"))
        unreacted = {p: 1.0 / len(parts) for p in sorted(parts)}
        if parts == {"SrO", "SrTiO3"}:
            return {"Sr2TiO4": 0.9, "SrO": 0.1} if temperature_c >= 1200 else unreacted
        has_sr = bool(parts & {"SrO", "SrO2"})
        has_ti = bool(parts & {"TiO2", "Ti2O3"})
        if target == "SrTiO3" and has_sr and has_ti:
            return {"SrTiO3": 0.95, "TiO2": 0.05} if temperature_c >= 1000 else unreacted
        if has_sr and has_ti and temperature_c >= 800:
            return {"SrTiO3": 0.65, "Sr2TiO4": 0.1, "SrO": 0.25}
        return unreacted


def test_measure_reports_noisy_fractions_that_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    values = measure({"SrTiO3": 0.7, "SrO": 0.3}, "SrTiO3", 0.02, 0.02, rng)
    assert values["target_yield"] == values["wf_SrTiO3"]
    assert values["wf_SrTiO3"] + values["wf_SrO"] == pytest.approx(1.0)
    exact = measure({"SrTiO3": 0.99, "SrO": 0.01}, "SrTiO3", 0.0, 0.02, rng)
    assert exact == {"target_yield": 0.99, "wf_SrTiO3": 0.99}  # under detection: unreported


def test_arrows_escapes_the_trap_that_stops_the_first_recipe() -> None:
    world = TrapWorld()
    arrows = run_campaign(world, "arrows", 0, budget=20, batch=1)
    assert arrows.obtained == ["Sr2TiO4", "SrTiO3"]
    assert arrows.finished
    assert arrows.runs < 20
    first = run_campaign(world, "first_recipe", 0, budget=20, batch=1)
    assert first.obtained == ["SrTiO3"]  # SrO + Ti2O3 falls into SrTiO3 at every temperature
    assert "Sr2TiO4" in first.given_up


def test_table_reports_every_strategy_over_the_seeds() -> None:
    world = TrapWorld()
    results = run(world, [0, 1], budget=12, batch=2)
    assert set(results) == {"arrows", "first_recipe", "random"}
    assert all(len(rows) == 2 for rows in results.values())
    assert all(r.runs <= 12 for rows in results.values() for r in rows)
    text = table(results, 2, 12)
    assert "arrows" in text
    assert "/ 2" in text
    assert "seeds: 2; budget 12" in text
    counts = per_target(results, world.targets())
    assert "Sr2TiO4" in counts
    assert "2/2" in counts  # arrows gets Sr2TiO4 on both seeds


class UndosableWorld(TrapWorld):
    """Every recipe with Ti2O3 (the best first recipes) fails at the dosing station."""

    def react(self, target: str, precursors: str, temperature_c: float) -> dict[str, float]:
        if "Ti2O3" in precursors.split("+"):
            raise ValueError(f"cannot dose {precursors}")
        return super().react(target, precursors, temperature_c)


def test_a_recipe_the_lab_cannot_dose_is_a_failed_experiment() -> None:
    result = run_campaign(UndosableWorld(), "arrows", 0, budget=30, batch=1)
    assert result.failed >= 2  # SrO+Ti2O3 for each target, never retried
    assert result.obtained == ["Sr2TiO4", "SrTiO3"]
    assert result.finished
