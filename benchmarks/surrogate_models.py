"""Surrogate accuracy and calibration on measured formation enthalpies.

Data: the 2,135 experimental formation enthalpies pymatgen ships for its compatibility
corrections (``pymatgen/analysis/compatibility/exp_compounds.json.gz``, eV per formula unit;
divided here by the atoms per formula unit to give eV/atom). The set has compositions only,
no structures, so the crystal-graph network cannot be benchmarked on it; every model here
learns from Magpie composition attributes (:mod:`surrogates.composition`).

Five-fold cross-validation (shuffled, fixed seed), the same folds for every model. For each
model: MAE (eV/atom), R^2, mean Gaussian NLL, miscalibration area (Tran et al. 2020) and the
fit and predict seconds on this machine's CPU (wall clock, and the process's CPU time, which
is the fairer figure on a machine shared with other jobs), as the mean (and spread) over the
folds. The baseline beside them, measured in the same run on the same folds, is the mean
predictor (the training mean, with the training standard deviation as its uncertainty).

Usage:  nice -n 10 python benchmarks/surrogate_models.py [--models rf,gbr,...] [--folds 5]
            [--max-folds K] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path and its name would hide the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.model_selection import GroupKFold, KFold  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from surrogates.base import make_surrogate  # noqa: E402
from surrogates.descriptors import make_descriptor  # noqa: E402
from surrogates.metrics import regression_report  # noqa: E402

# Settings sized so the whole run takes minutes on one of two shared CPU cores (it shares
# them with four other developers' jobs; wall times below include that contention).
MODELS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 100},
    "gbr": {"n_members": 3, "n_estimators": 200},
    "svr": {"n_members": 5},
    "gp": {"maxiter": 60, "max_train": 1000},
    "mlp_ensemble": {"n_members": 4, "epochs": 120, "batch_size": 128, "hidden": [256, 128, 64]},
    "cgcnn": {"n_members": 3, "epochs": 150, "batch_size": 32},
}

CHGNET_CACHE = _HERE.parent / "examples" / "data" / "discovery-cache" / "chgnet-energies.sqlite"
"""CHGNet energies of the simulated Sr-Ti-O lab's structures (references and candidates, each
at the five cell volumes of its scan), as the simulated materials lab computed them."""


def load_chgnet_structures() -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Structures of the simulated lab, their CHGNet energies (eV/atom) and a group per
    material (its formula and cell size: the volume-scan points of one material share it)."""
    import sqlite3

    from pymatgen.core import Structure

    with sqlite3.connect(CHGNET_CACHE) as db:
        rows = db.execute("SELECT energy, structure FROM energies ORDER BY key").fetchall()
    structures = [Structure.from_dict(json.loads(text)) for _, text in rows]
    y = np.array([float(e) for e, _ in rows])
    keys = [f"{st.composition.reduced_formula}/{len(st)}" for st in structures]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return structures, y, np.array([index[k] for k in keys])


def load_formation_enthalpies() -> tuple[list[str], np.ndarray]:
    """Formulas and measured formation enthalpies (eV/atom) from pymatgen's data."""
    from pymatgen.core import Composition

    path = resources.files("pymatgen.analysis.compatibility") / "exp_compounds.json.gz"
    with path.open("rb") as fh:
        rows = json.loads(gzip.decompress(fh.read()))
    formulas = [r["formula"] for r in rows]
    y = np.array([r["exp energy"] / Composition(r["formula"]).num_atoms for r in rows])
    return formulas, y


def featurize(formulas: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Magpie rows, and the mask of formulas that could be featurised."""
    desc = make_descriptor("magpie")
    rows, ok = [], []
    for f in formulas:
        try:
            rows.append(desc.featurize([f])[0])
            ok.append(True)
        except ValueError:
            ok.append(False)
    return np.array(rows), np.array(ok)


def run_model(
    name: str, x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, list[float]]:
    """Per-fold metrics and timings of one model (``x``: feature rows, or for ``cgcnn`` an
    object array of structures)."""
    out: dict[str, list[float]] = {}
    for train, test in folds:
        t0, c0 = time.perf_counter(), time.process_time()
        if name == "mean":
            mu, sd = float(y[train].mean()), float(y[train].std())
            t1 = time.perf_counter()
            c1 = time.process_time()
            mean, std = np.full(len(test), mu), np.full(len(test), sd)
        else:
            inputs = (lambda idx: list(x[idx])) if x.dtype == object else (lambda idx: x[idx])
            model = make_surrogate(name, seed=0, **MODELS[name]).fit(inputs(train), y[train])
            t1, c1 = time.perf_counter(), time.process_time()
            mean, std = model.predict(inputs(test))
        t2, c2 = time.perf_counter(), time.process_time()
        report = regression_report(y[test], mean, std)
        report |= {"fit_s": t1 - t0, "predict_s": t2 - t1, "fit_cpu_s": c1 - c0}
        report["predict_cpu_s"] = c2 - c1
        for k, v in report.items():
            out.setdefault(k, []).append(v)
        print(f"  {name}: fold MAE {report['mae']:.4f} fit {report['fit_s']:.1f}s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mean,rf,gbr,svr,gp,mlp_ensemble")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-folds", type=int, default=None, help="run only the first K")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--data",
        choices=["enthalpies", "chgnet"],
        default="enthalpies",
        help="pymatgen's experimental formation enthalpies (compositions), or the simulated "
        "lab's structures with their CHGNet energies (grouped folds: a material's volume-scan "
        "points stay in one fold); models: mean, rf/gbr/svr/gp/mlp_ensemble on Magpie, cgcnn",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # two shared cores: one thread avoids oversubscription
    threadpool_limits(1)  # the same for OpenMP/BLAS (histogram gradient boosting, SVR)
    warnings.filterwarnings("ignore")

    structures: np.ndarray | None = None
    if args.data == "chgnet":
        st_list, y, groups = load_chgnet_structures()
        x, _ = featurize([st.composition.formula for st in st_list])
        structures = np.empty(len(st_list), dtype=object)
        structures[:] = st_list
        folds = list(GroupKFold(n_splits=args.folds).split(x, y, groups))[: args.max_folds]
        what = f"CHGNet energy of the simulated lab's structures (eV/atom), n={len(y)}"
        print(f"{len(y)} structures of {groups.max() + 1} materials", flush=True)
    else:
        formulas, y_all = load_formation_enthalpies()
        t0 = time.perf_counter()
        x, ok = featurize(formulas)
        feat_s = time.perf_counter() - t0
        y = y_all[ok]
        print(
            f"{ok.sum()} of {len(formulas)} compounds featurised ({x.shape[1]} Magpie "
            f"features) in {feat_s:.1f}s",
            flush=True,
        )
        kf = KFold(n_splits=args.folds, shuffle=True, random_state=0)
        folds = list(kf.split(x))[: args.max_folds]
        what = f"formation enthalpy (eV/atom), n={len(y)}"

    results: dict[str, dict[str, list[float]]] = {}
    for name in args.models.split(","):
        data = structures if name == "cgcnn" and structures is not None else x
        results[name] = run_model(name, data, y, folds)

    table = Table(title=f"{len(folds)}-fold CV, {what}")
    cols = ["mae", "r2", "nll", "miscalibration_area", "fit_s", "predict_s", "fit_cpu_s"]
    cols.append("predict_cpu_s")
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, res in results.items():
        cells = []
        for c in cols:
            vals = res[c]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}")
        table.add_row(name, *cells)
    Console(width=180).print(table)
    if args.json:
        payload = {
            "n": len(y),
            "n_features": int(x.shape[1]),
            "folds": len(folds),
            "settings": {k: MODELS.get(k, {}) for k in results},
            "results": results,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
