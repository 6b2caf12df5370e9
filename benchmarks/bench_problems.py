"""The problems of the planner benchmark, and the baselines that need a finite pool.

Every problem is a search space, its objectives, a noise-free truth (a world's
``evaluate_true``), a budget ``N`` and what "95 % of the optimum" means for it. Noise (the
noisy Hartmann6 variant) and hidden failures (the failures variant) are added by the
harness, never by the truth, so every score is computed from noise-free values
(BoTorch ``test_functions/base.py`` keeps noise apart in the same way).

"Reaching 95 % of the optimum" means closing 95 % of the gap between the median value of
the objective over the space (uniformly distributed points, or every row of a pool) and the
optimum: ``y >= median + 0.95 * (optimum - median)``. For Hartmann6 that is about
``0.95 * optimum`` (its median is close to 0); for the Suzuki pool it is exactly the three
rows with yield >= 93.8 (its top 1 %). The same quantities give random search's exact
median number of experiments to that threshold, so the acceleration factor vs random is
defined even where the random runs themselves stop before reaching it.

Problems:
    Hartmann6, Branin, Branin-Currin: Dixon and Szegö (1978), Belakaria et al. (2019), as
    BoTorch implements them (negated, larger is better), via :mod:`sim.worlds`.
    Suzuki coupling, N-benzylation, SnAr, colour mixing (N9), photostable blends (WF3):
    the measured data sets Olympus ships (``dataset_suzuki``, ``dataset_benzylation``,
    ``dataset_snar``, ``dataset_colors_n9``, ``dataset_photo_wf3``; Häse et al.,
    "Olympus: a benchmarking framework for noisy optimization and experiment planning",
    Mach. Learn.: Sci. Technol. 2, 035021, 2021), each used as a finite pool through
    :class:`sim.table.TableWorld` (see :data:`OLYMPUS_POOLS`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.constraints import MixtureConstraint
from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Decision, Proposal
from planners.base import Planner
from planners.candidates import CandidateSet, read_pool
from planners.encoding import SpaceEncoder
from planners.random import sobol_unit
from sim.table import TableWorld
from sim.worlds import BoTorchWorld, BraninCurrinWorld, get_world

logger = logging.getLogger(__name__)

EXTERNAL_BASELINES = ("botorch", "baybe", "ax")
"""Other libraries' optimisers run on every pool (:mod:`benchmarks.bench_baselines`)."""

GAP_FRACTION = 0.95
"""Fraction of the median-to-optimum gap a run must close to count as "at 95 %"."""

REFERENCE_SAMPLES = 2**18
"""Uniform (Sobol) points used for a continuous problem's median value and hit rate."""

SUZUKI_COLUMNS = ("temperature", "pd_mol", "arbpin", "k3po4")


class ProblemUnavailableError(RuntimeError):
    """A problem cannot be built here (e.g. the ``olymp`` package is not installed)."""


@dataclass
class Problem:
    """One benchmark problem.

    Attributes:
        name: Key used on the command line and in the results directory.
        description: One line for the report.
        space: The search space.
        objectives: The objectives (one, or two for the hypervolume problem).
        budget: ``N``, the number of experiments every planner gets.
        truth: Noise-free values of every objective at a point.
        optimum: Best value of the (single) objective, or the maximal hypervolume.
        median: Median value over the space (pool), for the 95 % threshold.
        hit_rate: Fraction of the space (pool rows) at or above the threshold.
        noise_std: Standard deviation of the Gaussian noise added to observations.
        infeasible: Hidden failure region: experiments there fail and return nothing.
        pool: The candidate rows (pool problems) and the CSV the BO planner reads.
        pool_path: Path of that CSV.
        baseline_budget: Experiments the random/Sobol baselines get (whole pool on pools).
        bo_options: Planner options of the BO planners on this problem.
        ref_point: Hypervolume reference point (two-objective problem).
        planners: Planners run by default.
        optional_planners: Planners run only when ``--planners`` names them (variants of
            a study, too many to run on every full benchmark).
    """

    name: str
    description: str
    space: SearchSpace
    objectives: list[Objective]
    budget: int
    truth: Callable[[Mapping[str, Any]], dict[str, float]]
    optimum: float
    median: float
    hit_rate: float
    noise_std: float = 0.0
    infeasible: Callable[[Mapping[str, ParamValue]], bool] | None = None
    pool: list[dict[str, ParamValue]] | None = None
    pool_path: str | None = None
    baseline_budget: int | None = None
    bo_options: dict[str, Any] = field(default_factory=dict)
    ref_point: list[float] | None = None
    planners: tuple[str, ...] = ("random", "sobol", "qlognei")
    optional_planners: tuple[str, ...] = ()

    @property
    def threshold(self) -> float:
        """The value (or hypervolume) that counts as 95 % of the optimum."""
        if self.ref_point is not None:
            return GAP_FRACTION * self.optimum
        return self.median + GAP_FRACTION * (self.optimum - self.median)

    @property
    def multi_objective(self) -> bool:
        """Whether the problem is scored by hypervolume."""
        return self.ref_point is not None

    def fingerprint(self) -> dict[str, Any]:
        """What a cached run must agree on to be reused."""
        options = dict(self.bo_options)
        if self.pool_path is not None and "pool" in options:  # the rows, not where they lie
            options["pool"] = hashlib.sha1(Path(self.pool_path).read_bytes()).hexdigest()[:12]
        return {
            "budget": self.budget,
            "noise_std": self.noise_std,
            "bo_options": options,
            "space": self.space.model_dump(mode="json"),
            "failures": self.infeasible is not None,
        }

    def random_median_n(self) -> float:
        """Random search's exact median number of experiments to reach the threshold.

        On a pool (draws without replacement from ``M`` rows of which ``k`` are good):
        the smallest ``n`` with ``1 - C(M-k, n) / C(M, n) >= 1/2``. On a continuous space
        (independent draws hitting with probability ``p``): ``ceil(log 0.5 / log(1-p))``.
        ``inf`` when no sampled point reaches the threshold.
        """
        if self.pool is not None:
            m = len(self.pool)
            k = round(self.hit_rate * m)
            if k == 0:
                return math.inf
            miss = 1.0
            for n in range(1, m + 1):
                miss *= (m - k - n + 1) / (m - n + 1)
                if 1.0 - miss >= 0.5:
                    return float(n)
            return float(m)
        if self.hit_rate <= 0:
            return math.inf
        return float(math.ceil(math.log(0.5) / math.log1p(-self.hit_rate)))


def _space(world: BoTorchWorld | BraninCurrinWorld) -> SearchSpace:
    return SearchSpace(
        parameters=[
            ContinuousParameter(
                name=p.name, lower=float(p.minimum or 0), upper=float(p.maximum or 0)
            )
            for p in world.parameters()
        ]
    )


def _uniform(space: SearchSpace, n: int = REFERENCE_SAMPLES) -> np.ndarray:
    """``n`` Sobol points of a continuous space, ``n x d``, in the space's units."""
    unit = sobol_unit(len(space), seed=12345, skip=0, n=n).numpy()
    lo = np.array([p.lower for p in space.parameters])  # type: ignore[union-attr]
    hi = np.array([p.upper for p in space.parameters])  # type: ignore[union-attr]
    return lo + unit * (hi - lo)


def _single(name: str, world: BoTorchWorld, budget: int, description: str, **extra: Any) -> Problem:
    space = _space(world)
    x = _uniform(space)
    values = world.evaluate_array(x)
    infeasible = extra.get("infeasible")
    optimum = float(world.optimal_value or values.max())
    median = float(np.median(values))
    thr = median + GAP_FRACTION * (optimum - median)
    good = values >= thr
    if infeasible is not None:
        idx = np.flatnonzero(good)
        fails = [infeasible(dict(zip(space.names, x[i], strict=True))) for i in idx]
        good[idx[np.array(fails, dtype=bool)]] = False
    return Problem(
        name=name,
        description=description,
        space=space,
        objectives=[Objective(name="y", direction="maximize")],
        budget=budget,
        truth=world.evaluate_true,
        optimum=optimum,
        median=median,
        hit_rate=float(good.mean()),
        **extra,
    )


def hartmann_fails(point: Mapping[str, ParamValue]) -> bool:
    """The hidden failure region of ``hartmann6-failures``: ``x1 + x2 > 1`` (half the cube;
    the optimum, at ``x1 + x2 = 0.35``, is feasible)."""
    return float(point["x1"]) + float(point["x2"]) > 1.0


OLYMPUS_POOLS: dict[str, dict[str, Any]] = {
    "suzuki": {
        "dataset": "suzuki",
        "budget": 30,
        "what": "Suzuki coupling, {n} measured reactions (Olympus) as a finite pool; "
        "4 conditions (temperature, Pd loading, ArB(pin) and K3PO4 equivalents), yield %",
        "unit": "%",
    },
    "benzylation": {
        "dataset": "benzylation",
        "budget": 20,
        "what": "N-benzylation in flow, {n} conditions (Olympus); flow rate, ratio, solvent, "
        "temperature; impurity % minimised (scored as its negative)",
        "unit": "%",
    },
    "snar": {
        "dataset": "snar",
        "budget": 20,
        "what": "SnAr reaction in flow, {n} conditions (Olympus); residence time, ratio, "
        "concentration, temperature; impurity minimised (scored as its negative)",
    },
    "colors_n9": {
        "dataset": "colors_n9",
        "budget": 25,
        "what": "colour mixing (N9 robot), {n} red/green/blue mixtures (Olympus); "
        "difference to green minimised (scored as its negative)",
    },
    "photo_wf3": {
        "dataset": "photo_wf3",
        "budget": 40,
        "what": "photostability of 4-material blends (mixture: fractions sum to 1), {n} "
        "distinct blends of {rows} rows (Olympus; replicates averaged); degradation minimised "
        "(scored as its negative)",
        "mixture": True,
    },
}
"""The Olympus data sets used as pools (Häse et al. 2021), by problem name: each is the
wheel's ``datasets/dataset_<name>/data.csv`` (no header; the parameters, then the one
measurement) with its ``config.json`` (names, bounds, goal)."""

SUZUKI_COLUMNS = ("temperature", "pd_mol", "arbpin", "k3po4")


def olympus_csv(dataset: str) -> Path:
    """An Olympus data set inside the installed ``olymp`` wheel, found without importing it.

    Raises:
        ProblemUnavailableError: If the ``olympus`` package (pip ``olymp``) is not installed.
    """
    spec = importlib.util.find_spec("olympus")
    if spec is None or not spec.submodule_search_locations:
        raise ProblemUnavailableError(
            f"the {dataset} pool needs the olymp package: pip install --no-deps olymp "
            "(or make bench-planners)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / f"dataset_{dataset}" / "data.csv"
        if path.is_file():
            return path
    raise ProblemUnavailableError(f"olympus is installed but has no datasets/dataset_{dataset}")


def suzuki_csv() -> Path:
    """The Suzuki data set of the ``olymp`` wheel (see :func:`olympus_csv`)."""
    return olympus_csv("suzuki")


def olympus_pool(name: str, workdir: Path) -> Problem:
    """An Olympus pool problem; writes the pool CSV (with a header) into ``workdir``.

    The pool is read back as a campaign reads it (:func:`planners.candidates.read_pool`:
    bounds and constraints checked, replicate rows one candidate) and its truth is a
    :class:`sim.table.TableWorld` in pool mode (replicates answer their mean). A minimised
    measurement is written negated (``neg_<name>``), since every score here is "larger is
    better".
    """
    info = OLYMPUS_POOLS[name]
    source = olympus_csv(info["dataset"])
    config = json.loads((source.parent / "config.json").read_text())
    rows = np.loadtxt(source, delimiter=",", ndmin=2)
    names = [str(p["name"]) for p in config["parameters"]]
    if rows.shape[1] != len(names) + 1 or len(config["measurements"]) != 1:
        raise ProblemUnavailableError(f"unexpected {name} data layout: {names}, {rows.shape}")
    measured = str(config["measurements"][0]["name"])
    goal = config["measurements"][0].get("goal") or config.get("default_goal", "maximize")
    sign = -1.0 if goal == "minimize" else 1.0
    output = f"neg_{measured}" if sign < 0 else measured
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}_pool.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, output])
        writer.writerows(
            [[*map(repr, map(float, r[:-1])), repr(sign * float(r[-1]))] for r in rows]
        )
    space = SearchSpace(
        parameters=[
            ContinuousParameter(
                name=str(p["name"]),
                lower=float(p.get("low", p.get("lower"))),
                upper=float(p.get("high", p.get("upper"))),
            )
            for p in config["parameters"]
        ],
        constraints=[MixtureConstraint(parameters=names)] if info.get("mixture") else [],
    )
    pool = read_pool(path, space)
    world = TableWorld(path=str(path), parameters=names, outputs=[output], mode="pool")
    unit = {"unit": info["unit"]} if "unit" in info else {}
    y = world.y[:, 0]  # one value per distinct condition (replicates averaged)
    optimum, median = float(y.max()), float(np.median(y))
    thr = median + GAP_FRACTION * (optimum - median)
    return Problem(
        name=name,
        description=str(info["what"]).format(n=len(pool), rows=len(rows)),
        space=space,
        objectives=[Objective(name=output, direction="maximize", **unit)],
        budget=int(info["budget"]),
        truth=world.evaluate_true,
        optimum=optimum,
        median=median,
        hit_rate=float((y >= thr).mean()),
        pool=pool,
        pool_path=str(path),
        baseline_budget=len(pool),
        bo_options={"pool": str(path), "initial_points": 4},
        planners=(
            "random",
            "sobol",
            "qlognei",
            "qlognei-botorch-priors",
            *(("qlognei-q4",) if name == "suzuki" else ()),
            *EXTERNAL_BASELINES,
        ),
        optional_planners=POOL_GP_VARIANTS,
    )


POOL_GP_VARIANTS = (
    "qlognei-loo",
    "qlognei-evidence",
    "qlognei-laplace",
    "qlognei-gamma-2",
    "qlognei-gamma-1.5",
    "qlognei-mixture",
)
"""Other GPs of sdlab's ``qlognei`` measured on the pools (``benchmarks/bench_runs.py``)."""


def suzuki(workdir: Path) -> Problem:
    """The Suzuki pool problem; writes the pool CSV (with a header) into ``workdir``."""
    return olympus_pool("suzuki", workdir)


def branin_currin() -> Problem:
    """Branin-Currin, scored by hypervolume with BoTorch's reference point."""
    world = BraninCurrinWorld()
    space = _space(world)
    return Problem(
        name="branin-currin",
        description="Branin-Currin, two objectives on [0, 1]^2, hypervolume vs (-18, -6)",
        space=space,
        objectives=[
            Objective(name="branin", direction="maximize", reference=world.ref_point[0]),
            Objective(name="currin", direction="maximize", reference=world.ref_point[1]),
        ],
        budget=30,
        truth=world.evaluate_true,
        optimum=world.max_hv,
        median=0.0,
        hit_rate=0.0,
        ref_point=list(world.ref_point),
        planners=("random", "sobol", "qlognehvi"),
    )


def build(name: str, workdir: Path) -> Problem:
    """Build the problem called ``name``.

    Raises:
        KeyError: If there is no such problem.
        ProblemUnavailableError: If the problem needs something that is not installed.
    """
    if name in OLYMPUS_POOLS:
        return olympus_pool(name, workdir)
    if name == "branin-currin":
        return branin_currin()
    if name == "branin":
        return _single(
            "branin",
            get_world("branin"),  # type: ignore[arg-type]
            30,
            "Branin on [-5, 10] x [0, 15] (negated), three global optima",
            planners=("random", "sobol", "qlognei", "qlognei-botorch-priors", "qlognei-q4"),
        )
    h6: BoTorchWorld = get_world("hartmann6")  # type: ignore[assignment]
    if name == "hartmann6":
        return _single(
            "hartmann6",
            h6,
            35,
            "Hartmann6 on [0, 1]^6 (negated), noise-free",
            planners=("random", "sobol", "qlognei", "qlognei-botorch-priors"),
        )
    if name == "hartmann6-noisy":
        return _single(
            "hartmann6-noisy",
            h6,
            35,
            "Hartmann6 with Gaussian noise, std 0.1 x range (0.332); scored noise-free",
            noise_std=0.1 * h6.optimal_value,  # type: ignore[operator]
        )
    if name == "hartmann6-failures":
        return _single(
            "hartmann6-failures",
            h6,
            35,
            "Hartmann6 whose experiments fail (no result) where x1 + x2 > 1 (half the cube)",
            infeasible=hartmann_fails,
        )
    raise KeyError(name)


PROBLEMS = (
    "suzuki",
    "benzylation",
    "snar",
    "colors_n9",
    "photo_wf3",
    "branin",
    "branin-currin",
    "hartmann6",
    "hartmann6-noisy",
    "hartmann6-failures",
)
"""The in-process problems, cheapest first (the order the full run takes)."""


class PoolRandom(Planner):
    """Uniform random choice among the pool rows not yet measured or pending.

    It draws exactly as :class:`planners.bo.BayesOptPlanner`'s initial design does on a pool
    (the same decision seed, the same ``rng.choice`` over the same available rows), so the
    BO planner's first ``initial_points`` experiments are this baseline's first ones.
    """

    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        *,
        seed: int,
        pool: Sequence[Mapping[str, ParamValue]],
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        self.encoder = SpaceEncoder(space)
        self.candidates = CandidateSet(self.encoder, pool, "pool")

    def _available(self, pending: Sequence[Mapping[str, ParamValue]]) -> list[int]:
        used = [o.parameters for o in self._observations] + list(pending)
        return self.candidates.available(used)

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose ``n`` unmeasured rows uniformly at random."""
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        seed, _ = self.decision_seed(len(pending))
        available = self._available(pending)
        picks = np.random.default_rng(seed).choice(len(available), size=n, replace=False)
        props = [
            Proposal(parameters=dict(self.candidates.points[available[int(i)]])) for i in picks
        ]
        return self.decision(props, len(pending), t0, {"phase": "random"})


class PoolSobol(PoolRandom):
    """The next scrambled Sobol point, snapped to the nearest unmeasured pool row."""

    name = "sobol"

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        """Propose the ``n`` rows nearest the next Sobol points (no row twice)."""
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        self.decision_seed(len(pending))
        available = self._available(pending)
        skip = len(self._observations) + len(pending)
        unit = sobol_unit(self.encoder.n_params, seed=self.seed, skip=skip, n=n)
        x = self.encoder.encode(self.encoder.from_unit(unit), torch.double)
        picked: list[int] = []
        for row in x:
            idx = self.candidates.nearest(row[None, :], [i for i in available if i not in picked])
            picked.append(idx[0])
        props = [Proposal(parameters=dict(self.candidates.points[i])) for i in picked]
        return self.decision(props, len(pending), t0, {"phase": "sobol"})
