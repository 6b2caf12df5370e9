"""A crystal-graph convolutional network ensemble (CGCNN-like), in PyTorch.

Xie and Grossman, "Crystal graph convolutional neural networks for an accurate and
interpretable prediction of material properties", PRL 120, 145301 (2018). Nodes start as a
learned embedding of the element; edges carry the neighbour distance expanded in Gaussians.
Each convolution updates a node from every edge ``z = [v_i, v_j, u_ij]`` by the gated sum
``v_i <- softplus(v_i + BN(sum_j sigmoid(z W_f + b_f) * softplus(z W_s + b_s)))``; the
crystal's vector is the mean of its nodes, and two dense layers read the property off it.
``n_members`` independently initialised networks form a deep ensemble (Lakshminarayanan et
al., NeurIPS 2017) whose recalibrated spread is the uncertainty (:mod:`surrogates.base`).
The networks run on CUDA when present.

Feature rows of this surrogate are structure ids: :meth:`CGCNNEnsemble.featurize` files each
new structure in the surrogate's table and returns an ``n x 1`` column of ids, and the BoTorch
model takes such columns (``batch x q x 1``). Acquisition over structures is therefore over a
discrete candidate set (BoTorch ``optimize_acqf_discrete`` on the candidates' id column);
gradients with respect to an id mean nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from pydantic import Field
from pymatgen.core import Structure
from torch import Tensor, nn

from surrogates.base import EnsembleOptions, EnsembleSurrogate, register_surrogate
from surrogates.gp import default_device
from surrogates.graph import CrystalGraph, crystal_graph

logger = logging.getLogger(__name__)

__all__ = ["CGCNN", "CGCNNEnsemble"]


class _ConvLayer(nn.Module):
    def __init__(self, atom_len: int, edge_len: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * atom_len + edge_len, 2 * atom_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_len)
        self.bn2 = nn.BatchNorm1d(atom_len)

    def forward(self, v: Tensor, src: Tensor, dst: Tensor, u: Tensor) -> Tensor:
        # index_select, not v[src]: its backward is index_add_, where advanced indexing's
        # (index_put_ with accumulate) is an order of magnitude slower on CPUs
        pair = torch.cat([v.index_select(0, src), v.index_select(0, dst), u], dim=-1)
        z = self.bn1(self.fc(pair))
        gate, core = z.chunk(2, dim=-1)
        messages = torch.sigmoid(gate) * nn.functional.softplus(core)
        summed = torch.zeros_like(v).index_add_(0, src, messages)
        return nn.functional.softplus(v + self.bn2(summed))


class CGCNN(nn.Module):
    """Crystal-graph convolutional network of Xie and Grossman (2018).

    Args:
        atom_len: Width of the node vectors.
        n_conv: Number of convolutions.
        hidden: Width of the dense layer after pooling.
        cutoff: Largest edge length (angstrom), the end of the Gaussian grid.
        n_gaussians: Gaussians the distance is expanded in.
    """

    def __init__(
        self, atom_len: int, n_conv: int, hidden: int, cutoff: float, n_gaussians: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(119, atom_len)
        self.register_buffer("centres", torch.linspace(0.0, cutoff, n_gaussians))
        self.width = cutoff / max(1, n_gaussians - 1)
        self.convs = nn.ModuleList([_ConvLayer(atom_len, n_gaussians) for _ in range(n_conv)])
        self.head = nn.Sequential(nn.Linear(atom_len, hidden), nn.Softplus(), nn.Linear(hidden, 1))

    def forward(
        self, z: Tensor, src: Tensor, dst: Tensor, dist: Tensor, crystal: Tensor, n: int
    ) -> Tensor:
        """``n`` predictions of a batch of graphs joined into one (``crystal``: node owner)."""
        centres: Tensor = self.centres  # type: ignore[assignment]
        u = torch.exp(-(((dist.unsqueeze(-1) - centres) / self.width) ** 2))
        v = self.embed(z)
        for conv in self.convs:
            v = conv(v, src, dst, u)
        pooled = torch.zeros(n, v.shape[-1], device=v.device, dtype=v.dtype)
        pooled.index_add_(0, crystal, v)
        counts = torch.bincount(crystal, minlength=n).clamp_min(1).unsqueeze(-1)
        return self.head(pooled / counts).squeeze(-1)


def _batch(graphs: Sequence[CrystalGraph], device: torch.device) -> tuple[Tensor, ...]:
    """Join graphs into one disconnected graph: ``z, src, dst, dist, crystal``."""
    offsets = np.cumsum([0, *[g.n_sites for g in graphs[:-1]]])
    z = np.concatenate([g.atomic_numbers for g in graphs])
    src = np.concatenate([g.src + o for g, o in zip(graphs, offsets, strict=True)])
    dst = np.concatenate([g.dst + o for g, o in zip(graphs, offsets, strict=True)])
    dist = np.concatenate([g.distances for g in graphs])
    crystal = np.repeat(np.arange(len(graphs)), [g.n_sites for g in graphs])
    as_long = {"dtype": torch.long, "device": device}
    return (
        torch.as_tensor(z, **as_long),  # type: ignore[arg-type]
        torch.as_tensor(src, **as_long),  # type: ignore[arg-type]
        torch.as_tensor(dst, **as_long),  # type: ignore[arg-type]
        torch.as_tensor(dist, dtype=torch.float32, device=device),
        torch.as_tensor(crystal, **as_long),  # type: ignore[arg-type]
    )


@register_surrogate("cgcnn")
class CGCNNEnsemble(EnsembleSurrogate):
    """Deep ensemble of crystal-graph convolutional networks on structures.

    Options:
        n_members: Networks in the ensemble.
        atom_len: Node-vector width.
        n_conv: Convolutions.
        hidden: Dense width after pooling.
        cutoff: Neighbour radius (angstrom).
        max_neighbors: Neighbours per site.
        n_gaussians: Gaussians of the distance expansion.
        epochs: Passes over the training data.
        batch_size: Crystals per minibatch.
        lr: AdamW learning rate (cosine-annealed to zero).
        weight_decay: AdamW weight decay.
        device: ``"cpu"``, ``"cuda"``, ... (None: CUDA when present).
    """

    class Options(EnsembleOptions):
        n_members: int = Field(5, ge=2)
        atom_len: int = Field(64, ge=1)
        n_conv: int = Field(3, ge=1)
        hidden: int = Field(128, ge=1)
        cutoff: float = Field(8.0, gt=0)
        max_neighbors: int = Field(12, ge=1)
        n_gaussians: int = Field(40, ge=2)
        epochs: int = Field(100, ge=1)
        batch_size: int = Field(32, ge=2)
        lr: float = Field(3e-3, gt=0)
        weight_decay: float = Field(0.0, ge=0)
        device: str | None = None

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._graphs: list[CrystalGraph] = []
        o = self.options
        self._device = torch.device(o.device) if o.device is not None else default_device()

    def featurize(self, X: ArrayLike | Sequence[Any]) -> NDArray[np.float64]:  # noqa: N803
        """An ``n x 1`` column of structure ids (new structures are filed in the table).

        Raises:
            ValueError: If ``X`` holds something other than structures or known ids.
        """
        if isinstance(X, Sequence) and len(X) > 0 and isinstance(X[0], Structure):
            structures: list[Any] = list(X)
            ids = [self._file(s) for s in structures]
            return np.asarray(ids, dtype=np.float64).reshape(-1, 1)
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 1:
            raise ValueError("surrogate 'cgcnn' takes structures or an n x 1 column of ids")
        if np.any(rows < 0) or np.any(rows >= len(self._graphs)) or np.any(rows % 1 != 0):
            raise ValueError(f"structure ids must be integers in [0, {len(self._graphs)})")
        return rows

    def file_graphs(self, graphs: Sequence[CrystalGraph]) -> NDArray[np.float64]:
        """File crystal graphs built beforehand (:func:`surrogates.graph.crystal_graph` with
        this surrogate's ``cutoff`` and ``max_neighbors``); returns their ``n x 1`` id column.
        """
        start = len(self._graphs)
        self._graphs.extend(graphs)
        return np.arange(start, len(self._graphs), dtype=np.float64).reshape(-1, 1)

    def _file(self, structure: Structure) -> int:
        if not isinstance(structure, Structure):
            raise ValueError(f"surrogate 'cgcnn' needs structures, got {type(structure)}")
        o = self.options
        self._graphs.append(crystal_graph(structure, o.cutoff, o.max_neighbors))
        return len(self._graphs) - 1

    def _graphs_of(self, ids: NDArray[np.float64] | Tensor) -> list[CrystalGraph]:
        flat = ids.reshape(-1).tolist()
        return [self._graphs[int(i)] for i in flat]

    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        dev = self._device
        graphs = self._graphs_of(x)
        self._y_mean, self._y_scale = float(y.mean()), float(y.std()) or 1.0
        ty = torch.as_tensor((y - self._y_mean) / self._y_scale, dtype=torch.float32, device=dev)
        n = len(graphs)
        batch = min(o.batch_size, n)
        steps = max(1, n // batch)
        self._nets: list[CGCNN] = []
        for k in range(o.n_members):
            torch.manual_seed(o.seed * 1000 + k)
            gen = torch.Generator().manual_seed(o.seed * 1000 + k)
            net = CGCNN(o.atom_len, o.n_conv, o.hidden, o.cutoff, o.n_gaussians).to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, o.epochs * steps)
            net.train()
            for _ in range(o.epochs):
                perm = torch.randperm(n, generator=gen).tolist()
                for i in range(steps):
                    idx = perm[i * batch : (i + 1) * batch]
                    z, src, dst, dist, crystal = _batch([graphs[j] for j in idx], dev)
                    opt.zero_grad()
                    pred = net(z, src, dst, dist, crystal, len(idx))
                    loss = nn.functional.l1_loss(pred, ty[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
            net.eval()
            self._nets.append(net)

    def _member_values(self, x: Tensor) -> Tensor:
        graphs = self._graphs_of(x.detach().cpu())
        z, src, dst, dist, crystal = _batch(graphs, self._device)
        with torch.no_grad():
            values = torch.stack(
                [net(z, src, dst, dist, crystal, len(graphs)) for net in self._nets]
            )
        return (values * self._y_scale + self._y_mean).to(x)
