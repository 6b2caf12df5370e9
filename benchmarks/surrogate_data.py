"""Data sets of the surrogate benchmark, featurised once and storable as ``.npz`` files.

Three sets (see :mod:`benchmarks.surrogate_models`):

* ``enthalpies`` — the 2,135 experimental formation enthalpies pymatgen ships for its
  compatibility corrections (``pymatgen/analysis/compatibility/exp_compounds.json.gz``, eV
  per formula unit, divided by the atoms per formula unit: eV/atom); compositions only.
* ``chgnet`` — the simulated Sr-Ti-O lab's 288 cached structures (82 materials, each at the
  volumes of its scan) and their CHGNet energies.
* ``chgnet-srtio`` — 1,640 strained and rattled structures of the same 82 materials with their
  CHGNet static energies (:mod:`benchmarks.chgnet_dataset`).

Every set carries Magpie attributes (Ward et al., npj Comput. Mater. 2, 16028 (2016), via
matminer) and element fractions of each composition, a group per material (the structure sets:
cross-validation folds keep a material's structures together), and for the structure sets the
crystal graphs of :mod:`surrogates.graph` (CGCNN's input). :func:`save` writes all of it into
one ``.npz`` so that a machine without matminer (or without time to featurise) runs the
benchmark from the file (:func:`load`).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from surrogates.graph import CrystalGraph

_HERE = Path(__file__).resolve().parent

CHGNET_CACHE = _HERE.parent / "examples" / "data" / "discovery-cache" / "chgnet-energies.sqlite"
"""CHGNet energies of the simulated Sr-Ti-O lab's structures (references and candidates, each
at the five cell volumes of its scan), as the simulated materials lab computed them."""

DATASETS = ("enthalpies", "chgnet", "chgnet-srtio")

GRAPH_CUTOFF_A = 8.0
GRAPH_MAX_NEIGHBORS = 12
"""Crystal-graph settings (the ``cgcnn`` surrogate's defaults; the benchmark keeps them)."""


@dataclass
class Dataset:
    """A featurised data set.

    Attributes:
        name: One of :data:`DATASETS`.
        what: What the targets are, for table titles.
        y: ``n`` targets (eV/atom).
        features: Feature blocks by name (``"magpie"``, ``"fractions"``), each ``n x d``.
        groups: ``n`` material index per row (``None``: rows are independent).
        graphs: Crystal graphs of the rows (structure sets only).
    """

    name: str
    what: str
    y: np.ndarray
    features: dict[str, np.ndarray]
    groups: np.ndarray | None = None
    graphs: list[CrystalGraph] | None = None

    def x(self, spec: str) -> np.ndarray:
        """Feature rows of a ``+``-joined list of blocks (``"magpie+fractions"``)."""
        return np.hstack([self.features[name] for name in spec.split("+")])


def _formation_enthalpies() -> tuple[list[str], np.ndarray]:
    from pymatgen.core import Composition

    path = resources.files("pymatgen.analysis.compatibility") / "exp_compounds.json.gz"
    with path.open("rb") as fh:
        rows = json.loads(gzip.decompress(fh.read()))
    formulas = [r["formula"] for r in rows]
    y = np.array([r["exp energy"] / Composition(r["formula"]).num_atoms for r in rows])
    return formulas, y


def _cached_structures() -> tuple[list[Any], np.ndarray, np.ndarray]:
    from pymatgen.core import Structure

    with sqlite3.connect(CHGNET_CACHE) as db:
        rows = db.execute("SELECT energy, structure FROM energies ORDER BY key").fetchall()
    structures = [Structure.from_dict(json.loads(text)) for _, text in rows]
    y = np.array([float(e) for e, _ in rows])
    keys = [f"{st.composition.reduced_formula}/{len(st)}" for st in structures]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return structures, y, np.array([index[k] for k in keys])


def _composition_features(formulas: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Magpie and fraction rows of the formulas that can be featurised, and that mask."""
    from surrogates.descriptors import make_descriptor

    magpie, fractions = make_descriptor("magpie"), make_descriptor("fractions")
    cache: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    rows_m, rows_f, ok = [], [], []
    for f in formulas:
        if f not in cache:
            try:
                cache[f] = (magpie.featurize([f])[0], fractions.featurize([f])[0])
            except ValueError:
                cache[f] = None
        hit = cache[f]
        ok.append(hit is not None)
        if hit is not None:
            rows_m.append(hit[0])
            rows_f.append(hit[1])
    return {"magpie": np.array(rows_m), "fractions": np.array(rows_f)}, np.array(ok)


def build(name: str) -> Dataset:
    """Load and featurise a data set from its sources (needs pymatgen and matminer)."""
    if name == "enthalpies":
        formulas, y_all = _formation_enthalpies()
        features, ok = _composition_features(formulas)
        y = y_all[ok]
        return Dataset(name, f"formation enthalpy (eV/atom), n={len(y)}", y, features)
    from surrogates.graph import crystal_graph

    if name == "chgnet":
        structures, y, groups = _cached_structures()
        what = "CHGNet energy of the simulated lab's volume-scan structures (eV/atom)"
    elif name == "chgnet-srtio":
        from benchmarks.chgnet_dataset import load as load_srtio

        structures, y, groups = load_srtio()
        what = "CHGNet energy of strained and rattled Sr-Ti-O structures (eV/atom)"
    else:
        raise ValueError(f"data: expected one of {DATASETS}, got {name!r}")
    features, ok = _composition_features([st.composition.formula for st in structures])
    if not ok.all():
        raise ValueError(f"{name}: {int((~ok).sum())} compositions could not be featurised")
    graphs = [crystal_graph(st, GRAPH_CUTOFF_A, GRAPH_MAX_NEIGHBORS) for st in structures]
    what += f", n={len(y)} of {groups.max() + 1} materials"
    return Dataset(name, what, y, features, groups, graphs)


def save(data: Dataset, path: Path) -> None:
    """Write a featurised data set to one ``.npz`` file."""
    arrays: dict[str, Any] = {"y": data.y, "name": np.array(data.name), "what": np.array(data.what)}
    arrays |= {f"x_{k}": v for k, v in data.features.items()}
    if data.groups is not None:
        arrays["groups"] = data.groups
    if data.graphs is not None:
        arrays["graph_sites"] = np.array([g.n_sites for g in data.graphs])
        arrays["graph_edges"] = np.array([g.src.shape[0] for g in data.graphs])
        arrays["graph_z"] = np.concatenate([g.atomic_numbers for g in data.graphs])
        arrays["graph_src"] = np.concatenate([g.src for g in data.graphs])
        arrays["graph_dst"] = np.concatenate([g.dst for g in data.graphs])
        arrays["graph_dist"] = np.concatenate([g.distances for g in data.graphs])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load(path: Path) -> Dataset:
    """Read a data set written by :func:`save` (needs neither pymatgen nor matminer)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    features = {k[2:]: v for k, v in arrays.items() if k.startswith("x_")}
    graphs = None
    if "graph_sites" in arrays:
        graphs = []
        node_end = np.cumsum(arrays["graph_sites"])
        edge_end = np.cumsum(arrays["graph_edges"])
        for i in range(len(node_end)):
            n0 = node_end[i - 1] if i else 0
            e0 = edge_end[i - 1] if i else 0
            graphs.append(
                CrystalGraph(
                    atomic_numbers=arrays["graph_z"][n0 : node_end[i]],
                    src=arrays["graph_src"][e0 : edge_end[i]],
                    dst=arrays["graph_dst"][e0 : edge_end[i]],
                    distances=arrays["graph_dist"][e0 : edge_end[i]],
                )
            )
    return Dataset(
        str(arrays["name"]),
        str(arrays["what"]),
        arrays["y"],
        features,
        arrays.get("groups"),
        graphs,
    )
