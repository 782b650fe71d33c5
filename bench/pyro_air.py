"""The peer for ``bench/air_step.py``: AIR as pyro's ``examples/air`` builds it, written here from its description.

Eslami et al. (2016) in pyro (pyro-ppl, an optional bench dependency: ``pip install -e '.[bench]'``), with the
example's default sizes: T = 3 steps on 50 × 50 images, raw pixels into a 256-unit LSTM cell (no embedding network),
a 200-unit MLP head for ``z_pres`` and ``z_where``, 784 → 200 → 2·50 glimpse encoder and 50 → 200 → 784 decoder
(sigmoid, output bias −2) on 28 × 28 windows, a second LSTM cell and MLP as the learned baseline for the presence
variables, Gaussian likelihood σ = 0.3, ``z_where = (s, x, y)`` with ``s`` the zoom (prior N(3, 0.1)) and
``(x, y) ~ N(0, 1)``, ``p(z_pres = 1) = 0.5``. Trained by ``SVI`` with ``TraceGraph_ELBO`` (the score-function
estimator with the baselines), Adam 1e-4 and 1e-3 for the baseline's parameters, as the example's defaults.

Only what the benchmark needs: :func:`pyro_air_step` returns a function that takes one (B, 1, 50, 50) batch through
one SVI step, and :func:`pyro_air_counts` counts the objects the guide infers.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pyro
import pyro.distributions as dist
import pyro.optim
from pyro import poutine
from pyro.infer import SVI, TraceGraph_ELBO

STEPS, WINDOW, Z_WHAT, HIDDEN, WIDTH = 3, 28, 50, 256, 200
WHERE_PRIOR_LOC, WHERE_PRIOR_SCALE = (3.0, 0.0, 0.0), (0.1, 1.0, 1.0)


def _affine(z_where: Tensor) -> Tensor:
    """(n, 2, 3) ``[[s, 0, x], [0, s, y]]`` of (n, 3) ``(s, x, y)``."""
    s, x, y = z_where.unbind(1)
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s, zero, x], 1), torch.stack([zero, s, y], 1)], 1)


def _inverse(z_where: Tensor) -> Tensor:
    """(n, 3) the inverse transform ``(1/s, −x/s, −y/s)``."""
    return torch.cat([torch.ones_like(z_where[:, :1]), -z_where[:, 1:]], 1) / z_where[:, :1]


def window_to_image(z_where: Tensor, windows: Tensor, size: int) -> Tensor:
    """(n, size, size) decoded (n, W·W) windows placed in the image by ``z_where``."""
    n = len(windows)
    grid = F.affine_grid(_affine(z_where), [n, 1, size, size], align_corners=False)
    return F.grid_sample(windows.view(n, 1, WINDOW, WINDOW), grid, align_corners=False).view(n, size, size)


def image_to_window(z_where: Tensor, images: Tensor) -> Tensor:
    """(n, W·W) the windows of (n, S, S) images that ``z_where`` attends to."""
    n = len(images)
    grid = F.affine_grid(_affine(_inverse(z_where)), [n, 1, WINDOW, WINDOW], align_corners=False)
    return F.grid_sample(images[:, None], grid, align_corners=False).view(n, -1)


class PyroAIR(nn.Module):
    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = size
        inputs = size * size + 3 + Z_WHAT + 1  # image, previous z_where, z_what, z_pres
        self.rnn = nn.LSTMCell(inputs, HIDDEN)
        self.predict = nn.Sequential(nn.Linear(HIDDEN, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1 + 3 + 3))
        self.encode = nn.Sequential(nn.Linear(WINDOW * WINDOW, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 2 * Z_WHAT))
        self.decode = nn.Sequential(nn.Linear(Z_WHAT, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WINDOW * WINDOW))
        self.bl_rnn = nn.LSTMCell(inputs, HIDDEN)
        self.bl_predict = nn.Sequential(nn.Linear(HIDDEN, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1))
        self.register_buffer("where_loc", torch.tensor(WHERE_PRIOR_LOC))
        self.register_buffer("where_scale", torch.tensor(WHERE_PRIOR_SCALE))

    def _decode(self, z_what: Tensor) -> Tensor:
        return torch.sigmoid(self.decode(z_what) - 2.0)  # output bias −2: objects start nearly transparent

    def model(self, x: Tensor) -> None:
        pyro.module("decode", self.decode)
        n = len(x)
        with pyro.plate("data", n):
            canvas, present = x.new_zeros(n, self.size, self.size), x.new_ones(n)
            for t in range(STEPS):
                present = pyro.sample(f"z_pres_{t}", dist.Bernoulli(0.5 * present))
                with poutine.mask(mask=present.bool()):
                    z_where = pyro.sample(f"z_where_{t}", dist.Normal(self.where_loc.expand(n, 3),
                                                                      self.where_scale.expand(n, 3)).to_event(1))
                    z_what = pyro.sample(f"z_what_{t}", dist.Normal(x.new_zeros(n, Z_WHAT), 1.0).to_event(1))
                objects = window_to_image(z_where, self._decode(z_what), self.size)  # (n, S, S)
                canvas = canvas + objects * present[:, None, None]
            pyro.sample("obs", dist.Normal(canvas.view(n, -1), 0.3).to_event(1), obs=x.view(n, -1))

    def guide(self, x: Tensor) -> Tensor:
        for name in ("rnn", "predict", "encode", "bl_rnn", "bl_predict"):
            pyro.module(name, getattr(self, name))
        n = len(x)
        flat = x.view(n, -1)
        state = bl_state = None
        present, z_where, z_what = x.new_ones(n), x.new_zeros(n, 3), x.new_zeros(n, Z_WHAT)
        counts = x.new_zeros(n)
        with pyro.plate("data", n):
            for t in range(STEPS):
                inputs = torch.cat([flat, z_where, z_what, present[:, None]], 1)
                state = self.rnn(inputs, state)
                raw = self.predict(state[0])
                p = torch.sigmoid(raw[:, 0])
                bl_state = self.bl_rnn(inputs.detach(), bl_state)
                baseline = self.bl_predict(bl_state[0]).squeeze(1) * present  # (n,) zero once finished
                present = pyro.sample(f"z_pres_{t}", dist.Bernoulli(p * present),
                                      infer=dict(baseline=dict(baseline_value=baseline)))
                with poutine.mask(mask=present.bool()):
                    z_where = pyro.sample(f"z_where_{t}", dist.Normal(raw[:, 1:4] + self.where_loc,
                                                                      F.softplus(raw[:, 4:]) * self.where_scale
                                                                      ).to_event(1))
                    loc, scale = self.encode(image_to_window(z_where, x)).chunk(2, 1)
                    z_what = pyro.sample(f"z_what_{t}", dist.Normal(loc, F.softplus(scale) + 1e-4).to_event(1))
                counts = counts + present
        return counts


def pyro_air_step(size: int = 50, lr: float = 1e-4, baseline_lr: float = 1e-3) -> tuple[PyroAIR, Callable]:
    """(model, step): ``step(x)`` takes (B, 1, S, S) images through one SVI step and returns the loss."""
    pyro.clear_param_store()
    air = PyroAIR(size)

    def learning_rates(module_name: str, param_name: str) -> dict:
        return {"lr": baseline_lr if module_name.startswith("bl_") else lr}

    svi = SVI(lambda x: air.model(x[:, 0]), lambda x: air.guide(x[:, 0]),
              pyro.optim.Adam(learning_rates), loss=TraceGraph_ELBO())
    return air, svi.step


@torch.no_grad()
def pyro_air_counts(air: PyroAIR, x: Tensor) -> Tensor:
    """(B,) object counts the guide infers for (B, 1, S, S) images (one sample)."""
    return air.guide(x[:, 0]).long()
