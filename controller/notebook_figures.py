"""The Python API's figures (:class:`controller.notebook.Campaign`): plotly objects that
render in Jupyter as they are, drawn from :meth:`~controller.notebook.Campaign.results`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from models.campaign import CampaignSpec
from models.errors import CampaignStateError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["best_so_far", "parameters", "pareto"]


def _nan(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def best_so_far(spec: CampaignSpec, name: str, frame: pd.DataFrame) -> Any:
    """The first objective's best value after each experiment (in the order recorded)."""
    import plotly.graph_objects as go

    obj = next(o for o in spec.objectives if not o.is_constraint)
    xs, ys, best = [], [], None
    for k, (_, r) in enumerate(frame.iterrows(), start=1):
        v = r.get(f"obj.{obj.name}")
        done = r["status"] == "COMPLETED" and not _nan(v)
        if done and (best is None or obj.utility(float(v)) > obj.utility(best)):
            best = float(v)
        if best is not None:
            xs.append(k)
            ys.append(best)
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"best {obj.name}"))
    fig.update_layout(
        title=f"{name}: best {obj.name} so far",
        xaxis_title="experiments",
        yaxis_title=obj.name,
    )
    return fig


def parameters(spec: CampaignSpec, name: str, frame: pd.DataFrame) -> Any:
    """Parallel coordinates of the completed experiments' numeric parameters, coloured by
    the first objective."""
    import plotly.graph_objects as go

    obj = next(o for o in spec.objectives if not o.is_constraint)
    done = frame[frame["status"] == "COMPLETED"] if not frame.empty else frame
    dims = []
    for pname in spec.space.names:
        col = done.get(f"param.{pname}")
        if col is not None and all(isinstance(v, (int, float)) for v in col):
            dims.append({"label": pname, "values": list(col)})
    values = list(done[f"obj.{obj.name}"]) if not done.empty else []
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": values, "colorscale": "Viridis", "showscale": True},
        )
    )
    fig.update_layout(title=f"{name}: parameters, coloured by {obj.name}")
    return fig


def pareto(spec: CampaignSpec, frame: pd.DataFrame) -> Any:
    """The first two objectives of completed experiments, the non-dominated ones joined.

    Raises:
        CampaignStateError: If the campaign has fewer than two objectives.
    """
    import plotly.graph_objects as go

    objs = [o for o in spec.objectives if not o.is_constraint][:2]
    if len(objs) < 2:
        raise CampaignStateError("a Pareto front needs two objectives")
    done = frame[frame["status"] == "COMPLETED"] if not frame.empty else frame
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
    fig = go.Figure(
        [
            go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="measured"
            ),
            go.Scatter(
                x=[p[0] for p in sorted(front)],
                y=[p[1] for p in sorted(front)],
                mode="lines+markers",
                name="Pareto front",
            ),
        ]
    )
    fig.update_layout(xaxis_title=objs[0].name, yaxis_title=objs[1].name)
    return fig
