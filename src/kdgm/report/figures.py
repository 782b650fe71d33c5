"""PNG figures: image grids and training curves (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one (H', W') or (H', W', 3) array."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    array = grid.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def save_image_grid(images: Tensor, path: Path, nrow: int | None = None) -> Path:
    """Write (N, C, H, W) images in [0, 1] as one PNG grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image_grid(images, nrow), cmap="gray", vmin=0.0, vmax=1.0)
    return path


def plot_curves(series: dict[str, tuple[list[float], list[float]]], path: Path, ylabel: str, title: str) -> Path:
    """One line per named (steps, values) series."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (steps, values) in series.items():
        ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


STEP_COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.9, 0.2], [0.3, 0.5, 1.0], [1.0, 0.9, 0.2], [1.0, 0.3, 1.0]])


def draw_boxes(images: Tensor, boxes: Tensor, present: Tensor, zoom: int = 1) -> Tensor:
    """Grey images with the outline of each present box in the colour of its step.

    Args:
        images: (N, 1, S, S) in [0, 1].
        boxes: (N, T, 4) pixel boxes ``(x_min, y_min, x_max, y_max)``.
        present: (N, T) which boxes to draw.
        zoom: enlarge the images this many times (nearest neighbour) first, so that a one-pixel outline does not
            hide a small object.

    Returns:
        (N, 3, zoom·S, zoom·S) RGB images.
    """
    images = images.detach().float().cpu().repeat_interleave(zoom, -1).repeat_interleave(zoom, -2)
    boxes = boxes * zoom
    n, _, size, _ = images.shape
    rgb = images.expand(n, 3, size, size).clone()
    grid = torch.arange(size, dtype=torch.float32)
    for t in range(boxes.shape[1]):
        x0, y0, x1, y1 = (boxes[:, t, i].detach().float().cpu().round()[:, None] for i in range(4))  # (N, 1)
        x1, y1 = x1 - 1, y1 - 1  # the last pixel inside a half-open box
        inside_x = (grid >= x0) & (grid <= x1)  # (N, S)
        inside_y = (grid >= y0) & (grid <= y1)
        edge_x = (grid == x0) | (grid == x1)
        edge_y = (grid == y0) | (grid == y1)
        outline = (edge_y[:, :, None] & inside_x[:, None, :]) | (inside_y[:, :, None] & edge_x[:, None, :])  # (N, S, S)
        outline &= present[:, t].cpu().bool()[:, None, None]
        colour = STEP_COLOURS[t % len(STEP_COLOURS)][None, :, None, None]  # (1, 3, 1, 1)
        rgb = torch.where(outline[:, None], colour.expand_as(rgb), rgb)
    return rgb
