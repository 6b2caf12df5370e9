"""A deep ensemble of residual MLPs on composition descriptors (IRNet-like).

Each member is an individual-residual network after Jha et al., "Enabling deeper learning
on big data for materials informatics applications", Sci. Rep. 11, 4244 (2021) (IRNet):
fully connected layers of decreasing width, each followed by batch normalisation and a ReLU,
with a residual (identity or linear projection) connection around every layer, trained with
the absolute-error loss and Adam on standardised features and targets. ``n_members``
independently initialised and shuffled networks form a deep ensemble (Lakshminarayanan,
Pritzel and Blundell, "Simple and scalable predictive uncertainty estimation using deep
ensembles", NeurIPS 2017); their spread, recalibrated on held-out data
(:mod:`surrogates.base`), is the uncertainty. The networks run on CUDA when present.

The members are trained together as one stacked network (:class:`StackedResidualMLP`: each
layer a batched matrix product over the members, batch normalisation per member), each member
on its own shuffle of the data; mathematically the same as training them one by one, with
``n_members`` times fewer kernel launches, which is what bounds small networks on a GPU.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from surrogates.base import (
    EnsembleOptions,
    EnsembleSurrogate,
    feature_scaling,
    register_surrogate,
)
from surrogates.gp import default_device
from surrogates.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = ["ResidualMLP", "ResidualMLPEnsemble", "StackedResidualMLP"]


class _ResidualLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU())
        self.skip: nn.Module = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResidualMLP(nn.Module):
    """IRNet-style network: residual fully connected layers, then a linear output.

    Args:
        d_in: Number of input features.
        hidden: Widths of the hidden layers.
    """

    def __init__(self, d_in: int, hidden: list[int]) -> None:
        super().__init__()
        widths = [d_in, *hidden]
        self.layers = nn.Sequential(*[_ResidualLayer(a, b) for a, b in itertools.pairwise(widths)])
        self.out = nn.Linear(widths[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        """``n`` predictions at ``n x d_in`` inputs."""
        return self.out(self.layers(x)).squeeze(-1)


class _StackedLinear(nn.Module):
    """``m`` independent linear layers applied to ``m x b x d_in`` inputs."""

    def __init__(self, m: int, d_in: int, d_out: int) -> None:
        super().__init__()
        layers = [nn.Linear(d_in, d_out) for _ in range(m)]  # PyTorch's default initialisation
        self.weight = nn.Parameter(torch.stack([lin.weight.detach().T for lin in layers]))
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in layers]).unsqueeze(1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class _StackedBatchNorm(nn.Module):
    """Batch normalisation of each member's ``b x d`` activations (``m x b x d`` input)."""

    def __init__(self, m: int, d: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(m * d)

    def forward(self, x: Tensor) -> Tensor:
        m, b, d = x.shape
        flat = x.transpose(0, 1).reshape(b, m * d)
        return self.bn(flat).reshape(b, m, d).transpose(0, 1)


class _StackedResidualLayer(nn.Module):
    def __init__(self, m: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _StackedLinear(m, d_in, d_out), _StackedBatchNorm(m, d_out), nn.ReLU()
        )
        self.skip: nn.Module = nn.Identity() if d_in == d_out else _StackedLinear(m, d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class StackedResidualMLP(nn.Module):
    """``m`` IRNet-style networks (as :class:`ResidualMLP`) evaluated as one module.

    Args:
        m: Number of networks.
        d_in: Number of input features.
        hidden: Widths of the hidden layers.
    """

    def __init__(self, m: int, d_in: int, hidden: list[int]) -> None:
        super().__init__()
        widths = [d_in, *hidden]
        self.layers = nn.Sequential(
            *[_StackedResidualLayer(m, a, b) for a, b in itertools.pairwise(widths)]
        )
        self.out = _StackedLinear(m, widths[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        """``m x n`` predictions at ``m x n x d_in`` inputs (each member its own rows)."""
        return self.out(self.layers(x)).squeeze(-1)


def auto_epochs(n: int) -> int:
    """The largest number of epochs when ``epochs`` is not set: ``min(200, 20 + 4 n)``.

    Below 64 rows an epoch is one step of the whole data, so a fit at ``n = 10`` takes 60
    steps instead of 200; from 45 rows on it is 200, and early stopping decides.
    """
    return min(200, 20 + 4 * n)


@register_surrogate("mlp_ensemble")
class ResidualMLPEnsemble(EnsembleSurrogate):
    """Deep ensemble of residual MLPs.

    How long it trains: at most ``epochs`` passes (default :func:`auto_epochs`, which grows
    with the number of rows ``n``). When the ensemble holds out its calibration rows
    (``recalibrate``, at least 5 held out) and ``early_stopping`` is on, the calibration fit
    watches the members' mean absolute error on those rows after every epoch from
    ``min_epochs`` on and stops ``patience`` epochs after the best one (early stopping,
    Prechelt, "Early stopping - but when?", Neural Networks: Tricks of the Trade, 1998),
    keeping the weights of the best epoch; the refit on all rows then runs that many epochs,
    its learning rate annealed over them. ``stopped_epochs`` records the epochs of the last
    fit.

    Options:
        n_members: Networks in the ensemble.
        hidden: Hidden-layer widths of each network.
        epochs: Most passes over the training data (``None``: :func:`auto_epochs`).
        early_stopping: Stop on the held-out calibration rows (see above).
        patience: Epochs without a better held-out error before the calibration fit stops.
        min_epochs: Epochs before the held-out error is watched (with a few dozen rows it
            is noisy, and a dip in the first epochs stopped fits that were still learning).
        batch_size: Minibatch size.
        lr: Adam learning rate (decayed by cosine annealing to zero over ``epochs``).
        weight_decay: Adam weight decay (AdamW).
        loss: ``"l1"`` (IRNet's) or ``"mse"``.
        device: ``"cpu"``, ``"cuda"``, ... (None: CUDA when present).
        threads: CPU threads of a fit on the CPU (PyTorch's intra-op threads, set for the
            fit and restored after; ``None``: PyTorch's setting). The default is one:
            minibatches of at most 64 rows gain nothing from more, and on a machine whose
            cores are busy, threads that wait for each other made a fit 20-50x slower.
    """

    class Options(EnsembleOptions):
        n_members: int = Field(5, ge=2)
        hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 128, 64], min_length=1)
        epochs: int | None = Field(None, ge=1)
        early_stopping: bool = True
        patience: int = Field(20, ge=1)
        min_epochs: int = Field(50, ge=1)
        batch_size: int = Field(64, ge=2)
        lr: float = Field(1e-3, gt=0)
        weight_decay: float = Field(1e-4, ge=0)
        loss: str = Field("l1", pattern="^(l1|mse)$")
        device: str | None = None
        threads: int | None = Field(1, ge=1)

    options: Options
    stopped_epochs: int | None = None

    def _fit_held_out(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        x_val: NDArray[np.float64],
        y_val: NDArray[np.float64],
    ) -> None:
        self._stop_at: int | None = None
        if self.options.early_stopping:
            self._train(x, y, (x_val, y_val))
            self._stop_at = self.stopped_epochs
        else:
            self._train(x, y, None)

    def _fit_members(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        self._train(x, y, None, getattr(self, "_stop_at", None))
        self._stop_at = None

    def _max_epochs(self, n: int) -> int:
        return self.options.epochs if self.options.epochs is not None else auto_epochs(n)

    def _train(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        held_out: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
        stop_at: int | None = None,
    ) -> None:
        """Train the stacked members; with ``held_out`` rows, stop early on them."""
        o = self.options
        dev = torch.device(o.device) if o.device is not None else default_device()
        with torch_threads(o.threads if dev.type == "cpu" else None):
            self._train_on(dev, x, y, held_out, stop_at)

    def _train_on(
        self,
        dev: torch.device,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        held_out: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
        stop_at: int | None,
    ) -> None:
        o = self.options
        self._device = dev
        self._x_mean, self._x_std = feature_scaling(x)
        self._y_mean, self._y_scale = float(y.mean()), float(y.std()) or 1.0
        tx = torch.as_tensor((x - self._x_mean) / self._x_std, dtype=torch.float32, device=dev)
        ty = torch.as_tensor((y - self._y_mean) / self._y_scale, dtype=torch.float32, device=dev)
        loss_fn = nn.L1Loss() if o.loss == "l1" else nn.MSELoss()
        n, m = tx.shape[0], o.n_members
        batch = min(o.batch_size, n)
        max_epochs = self._max_epochs(n if held_out is None else n + len(held_out[1]))
        # the refit anneals its learning rate over the epochs the held-out rows chose
        epochs = max_epochs if stop_at is None else min(stop_at, max_epochs)
        torch.manual_seed(o.seed)
        net = StackedResidualMLP(m, tx.shape[1], list(o.hidden)).to(dev)
        opt = torch.optim.AdamW(
            net.parameters(), lr=o.lr, weight_decay=o.weight_decay, foreach=True
        )
        steps_per_epoch = max(1, n // batch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        gens = [torch.Generator().manual_seed(o.seed * 1000 + k) for k in range(m)]
        if held_out is not None:
            vx = torch.as_tensor(
                (held_out[0] - self._x_mean) / self._x_std, dtype=torch.float32, device=dev
            ).expand(m, -1, -1)
            vy = torch.as_tensor(
                (held_out[1] - self._y_mean) / self._y_scale, dtype=torch.float32, device=dev
            )
        best, best_epoch, best_state = math.inf, 0, None
        done = 0
        for epoch in range(1, epochs + 1):
            net.train()
            # each member its own shuffle; the last partial batch is dropped (BatchNorm)
            perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
            for i in range(steps_per_epoch):
                idx = perm[:, i * batch : (i + 1) * batch]  # m x batch
                opt.zero_grad()
                loss = loss_fn(net(tx[idx]), ty[idx]) * m  # the sum of the members' losses
                loss.backward()
                opt.step()
                sched.step()
            done = epoch
            if held_out is None or epoch < min(o.min_epochs, epochs):
                continue
            net.eval()
            with torch.no_grad():
                err = float((net(vx) - vy).abs().mean())
            if err < best:
                best, best_epoch = err, epoch
                best_state = copy.deepcopy(net.state_dict())
            elif epoch - best_epoch >= o.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
            done = best_epoch
        net.eval()
        self._net = net
        self.stopped_epochs = done
        logger.debug("mlp_ensemble: %d rows, %d epochs (at most %d)", n, done, max_epochs)

    def _member_values(self, x: Tensor) -> Tensor:
        mean = torch.as_tensor(self._x_mean, dtype=torch.float32, device=self._device)
        std = torch.as_tensor(self._x_std, dtype=torch.float32, device=self._device)
        xs = (x.to(self._device, torch.float32) - mean) / std
        values = self._net(xs.unsqueeze(0).expand(self.options.n_members, *xs.shape))
        return (values * self._y_scale + self._y_mean).to(x)
