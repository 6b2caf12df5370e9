"""The Python API's figures (:class:`controller.notebook.Campaign`), drawn from
:meth:`~controller.notebook.Campaign.results`.

Each figure is computed once as plain series (:func:`best_so_far_series`,
:func:`parameter_series`, :func:`pareto_series`) and drawn by one of two backends:
``"plotly"`` (the default: interactive, renders in Jupyter as it is) or ``"matplotlib"``
(a ``matplotlib.figure.Figure``, which Jupyter shows inline and ``savefig`` writes to PNG,
PDF or SVG for a paper). Both backends draw the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from models.campaign import CampaignSpec
from models.errors import CampaignStateError, InvalidCampaignError, Problem

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Backend",
    "best_so_far",
    "best_so_far_series",
    "parameter_series",
    "parameters",
    "pareto",
    "pareto_series",
]

Backend = Literal["plotly", "matplotlib"]
BACKENDS: tuple[Backend, ...] = ("plotly", "matplotlib")


def _nan(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        message = f"{backend!r} is not one of {', '.join(BACKENDS)}"
        raise InvalidCampaignError(None, [Problem(("backend",), message)])


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "COMPLETED"] if not frame.empty else frame


def _mpl_figure() -> Any:
    # matplotlib.figure.Figure directly, not pyplot: no global figure manager, no GUI
    # backend, so figures made in a long-running process are collected like any object.
    from matplotlib.figure import Figure

    return Figure(figsize=(7.0, 4.0), layout="constrained")


@dataclass(frozen=True)
class BestSoFar:
    """The first objective's best value after each experiment.

    Attributes:
        objective: The objective's name.
        x: Experiment counts (1-based, in the order recorded) from the first completed one.
        y: The best value among the completed experiments up to each count.
    """

    objective: str
    x: list[int]
    y: list[float]


def best_so_far_series(spec: CampaignSpec, frame: pd.DataFrame) -> BestSoFar:
    """The first objective's best value after each experiment (in the order recorded)."""
    obj = next(o for o in spec.objectives if not o.is_constraint)
    xs: list[int] = []
    ys: list[float] = []
    best: float | None = None
    for k, (_, r) in enumerate(frame.iterrows(), start=1):
        v = r.get(f"obj.{obj.name}")
        done = r["status"] == "COMPLETED" and not _nan(v)
        if done and (best is None or obj.utility(float(v)) > obj.utility(best)):
            best = float(v)
        if best is not None:
            xs.append(k)
            ys.append(best)
    return BestSoFar(obj.name, xs, ys)


def best_so_far(
    spec: CampaignSpec, name: str, frame: pd.DataFrame, backend: Backend = "plotly"
) -> Any:
    """The figure of :func:`best_so_far_series`, drawn by ``backend``."""
    _check(backend)
    s = best_so_far_series(spec, frame)
    title = f"{name}: best {s.objective} so far"
    if backend == "matplotlib":
        fig = _mpl_figure()
        ax = fig.add_subplot()
        ax.step(s.x, s.y, where="post", marker="o", markersize=3, label=f"best {s.objective}")
        ax.set(title=title, xlabel="experiments", ylabel=s.objective)
        return fig
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=s.x, y=s.y, mode="lines+markers", name=f"best {s.objective}"))
    fig.update_layout(title=title, xaxis_title="experiments", yaxis_title=s.objective)
    return fig


@dataclass(frozen=True)
class Parameters:
    """The completed experiments' numeric parameters and the first objective's values.

    Attributes:
        objective: The objective's name.
        dimensions: ``(parameter name, values)`` per numeric parameter, one value per
            completed experiment, in the space's order.
        values: The objective's value per completed experiment.
    """

    objective: str
    dimensions: list[tuple[str, list[float]]]
    values: list[float]


def parameter_series(spec: CampaignSpec, frame: pd.DataFrame) -> Parameters:
    """The numeric parameters of the completed experiments (string and categorical ones are
    left out), with the first objective's values."""
    obj = next(o for o in spec.objectives if not o.is_constraint)
    done = _completed(frame)
    dims = []
    for pname in spec.space.names:
        col = done.get(f"param.{pname}")
        if col is not None and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in col
        ):
            dims.append((pname, [float(v) for v in col]))
    values = [float(v) for v in done[f"obj.{obj.name}"]] if not done.empty else []
    return Parameters(obj.name, dims, values)


def parameters(
    spec: CampaignSpec, name: str, frame: pd.DataFrame, backend: Backend = "plotly"
) -> Any:
    """Parallel coordinates of :func:`parameter_series`, coloured by the first objective,
    drawn by ``backend`` (in matplotlib each axis is scaled to its own range, labelled with
    its lowest and highest value)."""
    _check(backend)
    s = parameter_series(spec, frame)
    title = f"{name}: parameters, coloured by {s.objective}"
    if backend == "matplotlib":
        return _parallel_mpl(s, title)
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Parcoords(
            dimensions=[{"label": n, "values": v} for n, v in s.dimensions],
            line={"color": s.values, "colorscale": "Viridis", "showscale": True},
        )
    )
    fig.update_layout(title=title)
    return fig


def _parallel_mpl(s: Parameters, title: str) -> Any:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = _mpl_figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    k = len(s.dimensions)
    spans = [(min(v), max(v)) if v else (0.0, 1.0) for _, v in s.dimensions]
    norm = Normalize(min(s.values), max(s.values)) if s.values else Normalize(0.0, 1.0)
    cmap = colormaps["viridis"]
    for j, value in enumerate(s.values):
        ys = [
            (vals[j] - lo) / (hi - lo) if hi > lo else 0.5
            for (_, vals), (lo, hi) in zip(s.dimensions, spans, strict=True)
        ]
        ax.plot(range(k), ys, color=cmap(norm(value)), alpha=0.7, linewidth=1.0)
    ax.set_xticks(
        range(k),
        [
            f"{n}\n{lo:.3g} .. {hi:.3g}"
            for (n, _), (lo, hi) in zip(s.dimensions, spans, strict=True)
        ],
    )
    ax.set_yticks([0.0, 1.0], ["low", "high"])
    ax.vlines(range(k), 0.0, 1.0, colors="0.6", linewidth=0.8)  # the axes, one per parameter
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=s.objective)
    return fig


@dataclass(frozen=True)
class Pareto:
    """The first two objectives of the completed experiments.

    Attributes:
        objectives: The two objectives' names.
        points: ``(first, second)`` per completed experiment with both values.
        front: The non-dominated points (by each objective's direction), sorted.
    """

    objectives: tuple[str, str]
    points: list[tuple[float, float]]
    front: list[tuple[float, float]]


def pareto_series(spec: CampaignSpec, frame: pd.DataFrame) -> Pareto:
    """The measured points of the first two objectives and their Pareto front.

    Raises:
        CampaignStateError: If the campaign has fewer than two objectives.
    """
    objs = [o for o in spec.objectives if not o.is_constraint][:2]
    if len(objs) < 2:
        raise CampaignStateError("a Pareto front needs two objectives")
    done = _completed(frame)
    pts = [
        (float(a), float(b))
        for a, b in zip(
            done.get(f"obj.{objs[0].name}", []),
            done.get(f"obj.{objs[1].name}", []),
            strict=True,
        )
        if not _nan(a) and not _nan(b)
    ]
    u = [(objs[0].utility(a), objs[1].utility(b)) for a, b in pts]
    front = [
        p
        for p, (ua, ub) in zip(pts, u, strict=True)
        if not any(va >= ua and vb >= ub and (va, vb) != (ua, ub) for va, vb in u)
    ]
    return Pareto((objs[0].name, objs[1].name), pts, sorted(front))


def pareto(spec: CampaignSpec, frame: pd.DataFrame, backend: Backend = "plotly") -> Any:
    """The figure of :func:`pareto_series`, drawn by ``backend``.

    Raises:
        CampaignStateError: If the campaign has fewer than two objectives.
    """
    _check(backend)
    s = pareto_series(spec, frame)
    (a, b) = s.objectives
    if backend == "matplotlib":
        fig = _mpl_figure()
        ax = fig.add_subplot()
        ax.scatter([p[0] for p in s.points], [p[1] for p in s.points], s=12, label="measured")
        ax.plot(
            [p[0] for p in s.front], [p[1] for p in s.front], "o-", color="C3", label="Pareto front"
        )
        ax.set(xlabel=a, ylabel=b)
        ax.legend()
        return fig
    import plotly.graph_objects as go

    fig = go.Figure(
        [
            go.Scatter(
                x=[p[0] for p in s.points],
                y=[p[1] for p in s.points],
                mode="markers",
                name="measured",
            ),
            go.Scatter(
                x=[p[0] for p in s.front],
                y=[p[1] for p in s.front],
                mode="lines+markers",
                name="Pareto front",
            ),
        ]
    )
    fig.update_layout(xaxis_title=a, yaxis_title=b)
    return fig
