"""Surrogate accuracy, calibration and speed on measured and simulated materials data.

Data (:mod:`benchmarks.surrogate_data`): ``enthalpies``, pymatgen's 2,135 experimental
formation enthalpies (compositions only); ``chgnet-srtio``, 1,640 strained and rattled
structures of the simulated lab's 82 Sr-Ti-O materials with CHGNet energies; ``chgnet``, the
lab's 288 cached volume-scan structures. Composition models learn from Magpie attributes
(optionally with element fractions, ``magpie+fractions``); ``cgcnn`` learns from the crystal
graphs. The structure sets use grouped folds (a material's structures stay in one fold, so
every test is on unseen materials); ``enthalpies`` uses shuffled folds. Every model sees the
same folds.

For each model: MAE (eV/atom), R^2, mean Gaussian NLL, miscalibration area (Tran et al.
2020), and the training and prediction seconds (wall clock, and the process's CPU time) on
the chosen device, as mean and spread over the folds. The baseline beside them, in the same
run on the same folds, is ``mean`` (the training mean, with the training standard deviation
as its uncertainty). A markdown table ready for docs/benchmarks.md is printed and optionally
written (``--markdown``), with JSON of every fold (``--json``).

Usage::

    PYTHONPATH=$PWD nice -n 10 python -m benchmarks.surrogate_models --data enthalpies \\
        --models mean,rf,gbr,gp,mlp_ensemble [--device cpu|cuda] [--threads N] \\
        [--folds 5] [--max-folds K] [--quick] [--json out.json] [--markdown out.md]
    python -m benchmarks.surrogate_models --data chgnet-srtio --save-data DIR  # featurise once
    python -m benchmarks.surrogate_models --data chgnet-srtio --load-data DIR ...
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path and its name would hide the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import GroupKFold, KFold  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from benchmarks.surrogate_data import DATASETS, Dataset, build, load, save  # noqa: E402
from surrogates.base import make_surrogate  # noqa: E402
from surrogates.metrics import regression_report  # noqa: E402

TORCH_MODELS = ("gp", "mlp_ensemble", "cgcnn")
"""Surrogates that run on a torch device (the rest run on the CPU)."""

# Settings sized so a run takes minutes on a shared CPU core; the larger models are for a GPU.
MODELS: dict[str, dict[str, Any]] = {
    "mean": {"surrogate": "mean"},
    "rf": {"surrogate": "rf", "options": {"n_estimators": 100}},
    "gbr": {"surrogate": "gbr", "options": {"n_members": 3, "n_estimators": 200}},
    "svr": {"surrogate": "svr", "options": {"n_members": 5}},
    "gp": {"surrogate": "gp", "options": {"maxiter": 60, "max_train": 1000}},
    "mlp_ensemble": {
        "surrogate": "mlp_ensemble",
        "options": {"n_members": 4, "epochs": 120, "batch_size": 128, "hidden": [256, 128, 64]},
    },
    "mlp_wide": {  # wider, longer, more members; Magpie plus element fractions
        "surrogate": "mlp_ensemble",
        "features": "magpie+fractions",
        "options": {
            "n_members": 8,
            "epochs": 250,
            "batch_size": 64,
            "hidden": [512, 256, 128, 64],
            "lr": 1e-3,
            "weight_decay": 1e-3,
        },
    },
    "cgcnn": {
        "surrogate": "cgcnn",
        "features": "graphs",
        "options": {"n_members": 3, "epochs": 60, "batch_size": 128},
    },
}


def settings(
    name: str, device: str, threads: int, quick: bool, override: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A model's settings for this run (device, threads, ``--override`` options, and
    ``--quick`` shrinking)."""
    spec = copy.deepcopy(MODELS[name])
    opts: dict[str, Any] = spec.setdefault("options", {})
    opts.update(override or {})
    spec.setdefault("features", "magpie")
    if spec["surrogate"] in TORCH_MODELS:
        opts["device"] = device
    if spec["surrogate"] == "rf":
        opts["n_jobs"] = threads
    if quick:  # a smoke test of the whole path, not a measurement
        for key, small in (("n_members", 2), ("n_estimators", 10)):
            if key in opts:
                opts[key] = small
        if "epochs" in opts:
            opts["epochs"] = 3
        if "max_train" in opts:
            opts["max_train"] = 200
        if "maxiter" in opts:
            opts["maxiter"] = 10
    return spec


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_model(
    spec: dict[str, Any],
    data: Dataset,
    folds: list[tuple[np.ndarray, np.ndarray]],
    device: str,
) -> dict[str, list[float]]:
    """Per-fold metrics and timings of one model."""
    y = data.y
    graphs = spec["features"] == "graphs"
    x = None if graphs else data.x(spec["features"])
    out: dict[str, list[float]] = {}
    for k, (train, test) in enumerate(folds):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        if spec["surrogate"] == "mean":
            mu, sd = float(y[train].mean()), float(y[train].std())
            t1, c1 = time.perf_counter(), time.process_time()
            mean, std = np.full(len(test), mu), np.full(len(test), sd)
        else:
            model = make_surrogate(spec["surrogate"], seed=0, **spec["options"])
            if graphs:
                if data.graphs is None:
                    raise ValueError(f"data {data.name!r} has no structures for cgcnn")
                ids = model.file_graphs(data.graphs)  # type: ignore[attr-defined]
                x_train, x_test = ids[train], ids[test]
            else:
                assert x is not None
                x_train, x_test = x[train], x[test]
            model.fit(x_train, y[train])
            _sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            mean, std = model.predict(x_test)
        t2, c2 = time.perf_counter(), time.process_time()
        report = regression_report(y[test], mean, std)
        report |= {"fit_s": t1 - t0, "predict_s": t2 - t1, "fit_cpu_s": c1 - c0}
        report["predict_cpu_s"] = c2 - c1
        for key, v in report.items():
            out.setdefault(key, []).append(v)
        print(
            f"  fold {k}: MAE {report['mae']:.4f} fit {report['fit_s']:.1f}s "
            f"predict {report['predict_s']:.2f}s",
            flush=True,
        )
    return out


def _cell(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def markdown_table(
    title: str, rows: list[tuple[str, dict[str, Any], dict[str, list[float]]]], device: str
) -> str:
    """The results as a markdown table (model, features, device, metrics, times)."""
    lines = [
        f"**{title}**",
        "",
        "| model | features | device | MAE (eV/atom) | R² | NLL | miscal. area "
        "| train s | predict s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, spec, res in rows:
        dev = device if spec["surrogate"] in TORCH_MODELS else "cpu"
        feats = "-" if spec["surrogate"] == "mean" else spec["features"]
        cells = [
            _cell(res["mae"], 3),
            _cell(res["r2"], 3),
            _cell(res["nll"], 2),
            _cell(res["miscalibration_area"], 3),
            _cell(res["fit_s"], 2),
            _cell(res["predict_s"], 3),
        ]
        lines.append(f"| {label} | {feats} | {dev} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def folds_of(data: Dataset, n_folds: int, max_folds: int | None) -> list[tuple[Any, Any]]:
    """Grouped folds for structure sets (by material), shuffled folds otherwise."""
    idx = np.arange(len(data.y))
    if data.groups is not None:
        folds = list(GroupKFold(n_splits=n_folds).split(idx, data.y, data.groups))
    else:
        folds = list(KFold(n_splits=n_folds, shuffle=True, random_state=0).split(idx))
    return folds[:max_folds]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATASETS, default="enthalpies")
    parser.add_argument("--models", default="mean,rf,gbr,svr,gp,mlp_ensemble")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-folds", type=int, default=None, help="run only the first K")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device of gp/mlp_ensemble/cgcnn (default: cuda when present)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch, BLAS, rf)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    parser.add_argument(
        "--override",
        default="{}",
        help='JSON of option overrides per model, e.g. \'{"cgcnn": {"epochs": 20}}\' '
        "(marked in the table)",
    )
    parser.add_argument("--save-data", default=None, help="write the featurised set to DIR")
    parser.add_argument("--load-data", default=None, help="read the featurised set from DIR")
    parser.add_argument("--json", default=None, help="also write every fold's results here")
    parser.add_argument("--markdown", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # OpenMP/BLAS (histogram gradient boosting, SVR)
    warnings.filterwarnings("ignore")
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {', '.join(MODELS)}")

    t0 = time.perf_counter()
    if args.load_data:
        data = load(Path(args.load_data) / f"{args.data}.npz")
    else:
        data = build(args.data)
        if args.save_data:
            save(data, Path(args.save_data) / f"{args.data}.npz")
    print(f"{data.what}: loaded in {time.perf_counter() - t0:.1f}s", flush=True)
    folds = folds_of(data, args.folds, args.max_folds)

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    title = f"{len(folds)}-fold CV, {data.what}; {args.threads} CPU threads" + (
        f", {gpu}" if gpu else ""
    )
    rows: list[tuple[str, dict[str, Any], dict[str, list[float]]]] = []
    overrides: dict[str, dict[str, Any]] = json.loads(args.override)
    for label in args.models.split(","):
        spec = settings(label, args.device, args.threads, args.quick, overrides.get(label))
        print(f"{label} ({spec['surrogate']} on {spec['features']}):", flush=True)
        shown = label + (f" ({json.dumps(overrides[label])})" if label in overrides else "")
        rows.append((shown, spec, run_model(spec, data, folds, args.device)))
        # written after every model, so a run cut short keeps what it measured
        table = markdown_table(title, rows, args.device)
        if args.markdown:
            Path(args.markdown).write_text(table)
        if args.json:
            payload = {
                "data": data.name,
                "what": data.what,
                "n": len(data.y),
                "folds": len(folds),
                "device": args.device,
                "gpu": gpu,
                "threads": args.threads,
                "quick": args.quick,
                "models": {lab: {"settings": sp, "results": res} for lab, sp, res in rows},
            }
            Path(args.json).write_text(json.dumps(payload, indent=2))
    print("\n" + markdown_table(title, rows, args.device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
