"""A spatial transformer (Jaderberg et al. 2015) for attention windows, as in Attend-Infer-Repeat.

AIR (Eslami et al. 2016) reads an object out of a scene through a square attention window and writes a decoded
object back into the scene through the inverse transform; Xu et al. 2019 (section 4.2) place their structural
constraints on the same window parameters. :func:`glimpse` is ``affine_grid`` + ``grid_sample``; :func:`write` is
the same bilinear resampling computed separably (see its docstring). Both are batched, with no loop over images or
objects.

The ``z_where`` convention, shared by every function in this module and by :mod:`kdgm.models.air`:

- ``z_where = (s, x, y)`` of shape ``(..., 3)``;
- ``s`` is the window side divided by the image side (the window is square, as in AIR), so ``s = 1`` covers the
  whole image and ``s = 0.4`` is a 20-pixel window on a 50-pixel image;
- ``(x, y)`` is the window centre in normalised image coordinates, ``-1`` at the left (top) edge of the image and
  ``+1`` at its right (bottom) edge; ``x`` grows to the right, ``y`` grows downwards, like pixel columns and rows.

So the window spans ``[x - s, x + s] x [y - s, y + s]`` in normalised coordinates. Grids use
``align_corners=False``: ``±1`` are the outer edges of the border pixels, which makes ``s`` exactly a ratio of
sides in pixels and makes :func:`where_to_boxes` agree with the half-open pixel boxes of
:class:`kdgm.data.batch.SceneBatch` (pixel column ``c`` covers ``[c, c + 1)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# (3, 6): theta = z_where @ _GLIMPSE_BASIS gives the flattened 2x3 matrix [[s, 0, x], [0, s, y]]
_GLIMPSE_BASIS = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # s on the diagonal
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # x translation
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # y translation
    ]
)

MIN_WRITE_SCALE = 1e-3  # a sampled scale at or below 0 has no inverse; writing clamps it to this tiny window


def _theta(z_where: Tensor) -> Tensor:
    """(B, 2, 3) affine matrices mapping window coordinates to image coordinates for (B, 3) ``z_where``."""
    basis = _GLIMPSE_BASIS.to(device=z_where.device, dtype=z_where.dtype)
    return (z_where @ basis).view(-1, 2, 3)  # (B, 2, 3)


def glimpse(images: Tensor, z_where: Tensor, size: int) -> Tensor:
    """Cut the window ``z_where`` out of each image and resample it to ``size x size`` pixels (bilinear).

    Args:
        images: (B, C, S, S) images.
        z_where: (B, 3) windows ``(s, x, y)`` in the module's convention.
        size: side of the returned glimpses in pixels.

    Returns:
        (B, C, size, size) glimpses; window parts outside the image read as zero.
    """
    b, c = images.shape[:2]
    grid = F.affine_grid(_theta(z_where), [b, c, size, size], align_corners=False)  # (B, size, size, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _hat(u: Tensor, n: int, transposed: bool = False) -> Tensor:
    """Linear-interpolation weights ``max(0, 1 - |u_k - j|)`` of source pixels ``j < n`` at coordinates ``u``.

    Args:
        u: (B, K) continuous source pixel coordinates (pixel centres at integers).
        n: number of source pixels.
        transposed: lay the weights out as (B, n, K) instead of (B, K, n), built that way rather than transposed
            afterwards so that the matrix products read contiguous memory.

    Returns:
        (B, K, n) or (B, n, K) weights; a coordinate outside the source only gets weight from the border pixel it
        overlaps, so the outside reads as zero (``padding_mode="zeros"``).
    """
    j = torch.arange(n, device=u.device, dtype=u.dtype)
    diff = u.unsqueeze(1) - j.view(1, n, 1) if transposed else u.unsqueeze(-1) - j
    return F.relu(1.0 - diff.abs())


def write(objects: Tensor, z_where: Tensor, canvas: int) -> Tensor:
    """Place each object into the window ``z_where`` of an empty ``canvas x canvas`` image (inverse of
    :func:`glimpse`).

    The result equals ``grid_sample(objects, affine_grid(inverse(z_where)), align_corners=False)`` (bilinear, zero
    padding), but computed separably: a scale-and-shift window has no rotation, so bilinear resampling factorises
    into a row interpolation matrix ``R_y`` (canvas x g) and a column one ``R_x``, and
    ``out = R_y @ object @ R_x^T`` is two small batched matrix products. For AIR's (T·B, 1, 20, 20) ->
    (T·B, 1, 50, 50) writes this measured about 2x faster than ``grid_sample`` forward and backward on one CPU
    thread (7-9 ms against 18 ms for 192 objects), and it stays fast when a second thread is starved.

    Args:
        objects: (B, C, g, g) object appearances, filling their whole window.
        z_where: (B, 3) windows ``(s, x, y)``; ``s`` is clamped to ``MIN_WRITE_SCALE`` because a sample at or below
            zero (possible under a Gaussian ``z_where``) has no inverse transform.
        canvas: side of the returned images in pixels.

    Returns:
        (B, C, canvas, canvas) images, zero outside the windows.
    """
    b, c, g = objects.shape[:3]
    s = z_where[:, :1].clamp_min(MIN_WRITE_SCALE).unsqueeze(-1)  # (B, 1, 1)
    centre = z_where[:, 1:].unsqueeze(-1)  # (B, 2, 1) x then y
    # canvas pixel i has normalised centre p_i = (2i + 1)/canvas - 1; the inverse window maps it to
    # q = (p - centre)/s, which is object pixel coordinate ((q + 1) g - 1)/2 (align_corners=False)
    p = (torch.arange(canvas, device=z_where.device, dtype=z_where.dtype) * 2 + 1) / canvas - 1  # (canvas,)
    u = ((p - centre) / s + 1) * (g / 2) - 0.5  # (B, 2, canvas)
    rows = _hat(u[:, 1], g)  # (B, canvas, g)
    cols_t = _hat(u[:, 0], g, transposed=True)  # (B, g, canvas)
    if c > 1:  # every channel of an object shares its window
        rows, cols_t = rows.repeat_interleave(c, dim=0), cols_t.repeat_interleave(c, dim=0)
    out = torch.bmm(torch.bmm(rows, objects.reshape(b * c, g, g)), cols_t)  # (B*C, canvas, canvas)
    return out.view(b, c, canvas, canvas)


def where_to_boxes(z_where: Tensor, canvas: int) -> Tensor:
    """Pixel boxes ``(x_min, y_min, x_max, y_max)`` of windows ``(..., 3)`` on a ``canvas``-pixel image.

    Same convention as :class:`kdgm.data.batch.SceneBatch` boxes: continuous pixel coordinates with the image
    spanning ``[0, canvas]``, so ``x_max - x_min = s * canvas`` is the window side in pixels.

    Returns:
        (..., 4) float boxes.
    """
    cx, cy, side = where_to_pixels(z_where, canvas)  # (...) each
    half = side / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)  # (..., 4)


def where_to_pixels(z_where: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """AIR's ``z_where = (s, x, y)`` (..., 3) in pixels of a ``size`` x ``size`` image.

    Returns:
        centre_x, centre_y, side, each (...): ``centre = (coordinate + 1) / 2 · size`` (0 at the left/top edge),
        ``side = s · size``.
    """
    s, x, y = z_where.unbind(-1)
    return (x + 1) / 2 * size, (y + 1) / 2 * size, s * size
