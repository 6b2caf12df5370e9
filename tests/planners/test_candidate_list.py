"""The candidate-list reader and the feature cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray
from pymatgen.core import Lattice, Structure

from models.errors import InvalidCampaignError
from planners.candidate_list import read_candidates
from planners.feature_cache import cache_file, featurize_rows
from surrogates.descriptors import Descriptor, Material, as_composition, register_descriptor

CALLS: list[str] = []


@register_descriptor("test-counting")
class CountingDescriptor(Descriptor):
    """Two composition features; counts its calls (in this process) and fails on Xe."""

    invariances: ClassVar[tuple[str, ...]] = ()

    def feature_labels(self) -> list[str]:
        return ["n_elements", "max_fraction"]

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        comp = as_composition(material)
        CALLS.append(comp.reduced_formula)
        if "Xe" in {e.symbol for e in comp.elements}:
            raise ValueError("no data for Xe")
        fr = [comp.get_atomic_fraction(e) for e in comp.elements]
        return np.array([len(comp), max(fr)])


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("id,formula,note\n" + "".join(f"{a},{b},x\n" for a, b in rows))
    return path


def test_csv_rows_are_read_and_bad_rows_reported_by_row(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "l.csv",
        [("a", "Fe2O3"), ("b", "NaCl"), ("c", ""), ("d", "Qq2O"), ("a", "MgO"), ("", "CaO")],
    )
    out = read_candidates(path)
    assert [(r.id, r.formula) for r in out.rows] == [("a", "Fe2O3"), ("b", "NaCl")]
    reasons = {b.where: b.reason for b in out.bad}
    assert set(reasons) == {"row 4", "row 5", "row 6", "row 7"}
    assert "empty formula" in reasons["row 4"]
    assert "Qq2O" in reasons["row 5"]
    assert "given twice" in reasons["row 6"]
    assert "empty id" in reasons["row 7"]


def test_missing_column_and_missing_file_name_the_option(tmp_path: Path) -> None:
    path = _csv(tmp_path / "l.csv", [("a", "Fe2O3")])
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.formula_column"):
        read_candidates(path, formula_column="composition")
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.id_column"):
        read_candidates(path, id_column="name")
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.candidates"):
        read_candidates(tmp_path / "nope.csv")
    none = _csv(tmp_path / "bad.csv", [("a", "")])
    with pytest.raises(InvalidCampaignError, match="no usable candidate"):
        read_candidates(none)


def test_row_numbers_are_ids_without_an_id_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "l.csv", [("a", "Fe2O3"), ("b", "MgO")])
    assert [r.id for r in read_candidates(path, id_column=None).rows] == ["1", "2"]


def test_structures_from_a_folder_cif_poscar_and_json(tmp_path: Path) -> None:
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    mgo = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    folder = tmp_path / "s"
    folder.mkdir()
    nacl.to(filename=str(folder / "nacl.cif"))
    mgo.to(filename=str(folder / "POSCAR_mgo"), fmt="poscar")
    (folder / "pair.json").write_text(json.dumps([nacl.as_dict(), mgo.as_dict()]))
    (folder / "broken.cif").write_text("data_x\n_cell_length_a oops\n")
    (folder / "readme.txt").write_text("not a structure")
    out = read_candidates(folder)
    got = {r.id: r.formula for r in out.rows}
    assert got == {"nacl": "NaCl", "POSCAR_mgo": "MgO", "pair#0": "NaCl", "pair#1": "MgO"}
    assert all(isinstance(r.material, Structure) for r in out.rows)
    assert [b.where for b in out.bad] == ["broken.cif"]
    single = read_candidates(folder / "nacl.cif")
    assert [r.id for r in single.rows] == ["nacl"]


def test_cache_second_run_computes_nothing_and_new_rows_only(tmp_path: Path) -> None:
    rows = read_candidates(
        _csv(tmp_path / "l.csv", [("a", "Fe2O3"), ("b", "NaCl"), ("x", "XeF2"), ("c", "Fe4O6")])
    ).rows
    cache = tmp_path / "cache"
    CALLS.clear()
    first = featurize_rows(rows, "test-counting", cache_dir=cache, workers=1)
    assert sorted(CALLS) == ["Fe2O3", "NaCl", "XeF2"]  # Fe4O6 has Fe2O3's content
    assert first.computed == 3
    assert first.index == [0, 1, 3]
    assert [(b.where, "Xe" in b.reason) for b in first.bad] == [("row 4", True)]
    np.testing.assert_allclose(first.x, [[2, 0.6], [2, 0.5], [2, 0.6]])
    assert cache_file(cache, "test-counting", {}).is_file()

    CALLS.clear()
    again = featurize_rows(rows, "test-counting", cache_dir=cache, workers=1)
    assert CALLS == ["XeF2"]  # only the failed row is tried again
    np.testing.assert_array_equal(again.x, first.x)

    grown = read_candidates(
        _csv(tmp_path / "m.csv", [("a", "Fe2O3"), ("b", "NaCl"), ("d", "MgAl2O4")])
    ).rows
    CALLS.clear()
    third = featurize_rows(grown, "test-counting", cache_dir=cache, workers=1)
    assert CALLS == ["MgAl2O4"]
    assert third.computed == 1
    other = featurize_rows(grown, "fractions", {"max_z": 30}, cache_dir=cache, workers=1)
    assert other.computed == 3  # another descriptor (or options) has its own rows


def test_parallel_workers_give_the_same_rows(tmp_path: Path) -> None:
    formulas = ["Fe2O3", "NaCl", "MgO", "CaTiO3", "SrTiO3", "LiCoO2"] * 50
    path = _csv(tmp_path / "l.csv", [(f"r{i}", f) for i, f in enumerate(formulas)])
    rows = read_candidates(path).rows
    one = featurize_rows(rows, "fractions", workers=1)
    two = featurize_rows(rows[:300], "fractions", workers=2)
    np.testing.assert_array_equal(one.x, two.x)
