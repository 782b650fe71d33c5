"""Metrics of multi-object scene models (Xu et al. 2019, section 6): ACC, SE, mIoU, and the ink-threshold baseline.

- ACC: ``1(n_inferred == n_true)`` averaged over images (:func:`count_accuracy`).
- SE: squared error between an image and its reconstruction, summed over pixels (:func:`squared_error`).
- mIoU: per image, ``max_π Σ_{i ≤ min(n_inf, n_gt)} IoU(z^{π_i}, gt^i) / max(n_inf, n_gt)``
  (:func:`matched_miou`). The paper sums over the first ``min`` ground-truth objects with π a permutation of the
  inferred ones; read order-free, that is the best partial one-to-one assignment between inferred and true boxes,
  which the Hungarian algorithm finds exactly. Unmatched boxes (either side) count as IoU 0 through the
  ``max(n_inf, n_gt)`` denominator.
- The count baseline of section 6.1, "a rule that thresholds the total ink of the image"
  (:class:`InkThresholdCounter`).

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixels with area ``(x_max − x_min) · (y_max − y_min)``, the convention
of :class:`kdgm.data.batch.SceneBatch`; :func:`inferred_boxes` converts AIR's ``z_where`` to it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from kdgm.nn.spatial import where_to_boxes


def count_accuracy(inferred, true) -> float:
    """ACC: the fraction of images whose inferred number of objects equals the true one; (B,) each."""
    inferred, true = torch.as_tensor(inferred), torch.as_tensor(true)
    if inferred.shape != true.shape or inferred.numel() == 0:
        raise ValueError(f"need two equal, non-empty shapes, got {tuple(inferred.shape)} and {tuple(true.shape)}")
    return float((inferred.long() == true.long()).float().mean())


def squared_error(x: Tensor, recon: Tensor) -> Tensor:
    """SE: (B,) ``Σ_pixels (x − recon)²`` of (B, 1, S, S) images and reconstructions."""
    if x.shape != recon.shape:
        raise ValueError(f"images {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ in shape")
    return (x - recon).pow(2).flatten(1).sum(1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(..., N, M) IoU of every box of a (..., N, 4) with every box of b (..., M, 4), batch dims broadcast.

    Two empty boxes (zero area, e.g. padding rows) have IoU 0, not NaN.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    a, b = a[..., :, None, :], b[..., None, :, :]  # (..., N, 1, 4), (..., 1, M, 4)
    width = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    height = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = width * height  # (..., N, M)

    def area(box: Tensor) -> Tensor:
        return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)

    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def inferred_boxes(z_where: Tensor, z_pres: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """AIR's (T, B, 3) ``z_where`` and (T, B) ``z_pres`` as (B, T, 4) pixel boxes, present ones first, and (B,)
    counts, the input :func:`matched_miou` takes."""
    present = z_pres.detach() > 0.5  # (T, B)
    # a stable sort puts the present steps first without reordering them, should a model skip a step
    order = torch.argsort((~present).long().T, dim=1, stable=True)  # (B, T)
    boxes = where_to_boxes(z_where.detach(), size).transpose(0, 1)  # (B, T, 4)
    boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
    return boxes, present.sum(0)


def matched_miou(pred_boxes, pred_counts, true_boxes: Tensor, true_counts) -> Tensor:
    """mIoU of each image: ``Σ IoU over the best one-to-one matching / max(n_inferred, n_true)``.

    The matching maximises the summed IoU (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment`` on −IoU;
    a greedy highest-IoU-first matching can be worse). An image with no inferred and no true object scores 1.0: the
    prediction is exactly right, and 0/0 would otherwise be undefined.

    Args:
        pred_boxes: (B, T, 4) tensor with rows past ``pred_counts`` ignored, or a list of B (n_b, 4) tensors.
        pred_counts: (B,) inferred numbers of objects.
        true_boxes: (B, N, 4) ground truth, rows past ``true_counts`` ignored.
        true_counts: (B,) true numbers of objects.

    Returns:
        (B,) float64 per-image mIoU in [0, 1]; average it for the paper's number.
    """
    pred_counts = torch.as_tensor(pred_counts).long().tolist()
    true_counts = torch.as_tensor(true_counts).long().tolist()
    true_boxes = torch.as_tensor(true_boxes)
    if isinstance(pred_boxes, (list, tuple)):
        width = max([len(b) for b in pred_boxes] + [1])
        padded = torch.zeros((len(pred_boxes), width, 4), dtype=torch.float64)
        for b, boxes in enumerate(pred_boxes):
            padded[b, : len(boxes)] = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        pred_boxes = padded
    pred_boxes = torch.as_tensor(pred_boxes)
    if not len(pred_boxes) == len(pred_counts) == len(true_boxes) == len(true_counts):
        raise ValueError("pred_boxes, pred_counts, true_boxes and true_counts must have the same batch size")
    iou = box_iou(pred_boxes.double(), true_boxes.double()).cpu().numpy()  # (B, T, N) all pairs in one batched op
    scores = np.empty(len(iou))
    for b, (n_pred, n_true) in enumerate(zip(pred_counts, true_counts)):
        if n_pred == 0 and n_true == 0:
            scores[b] = 1.0
            continue
        pairs = iou[b, :n_pred, :n_true]  # (n_pred, n_true); rectangular: min(n_pred, n_true) pairs are matched
        rows, cols = linear_sum_assignment(pairs, maximize=True)
        scores[b] = pairs[rows, cols].sum() / max(n_pred, n_true)
    return torch.from_numpy(scores)


def square_iou(width: Tensor, height: Tensor, side: Tensor) -> Tensor:
    """IoU of a ``width`` × ``height`` box with the square of side ``side`` centred on it (broadcast shapes).

    Centring maximises the overlap of a box and a square of given sizes, so this is the best IoU a square window of
    that side can reach on the box.
    """
    inter = torch.minimum(side, width) * torch.minimum(side, height)
    return inter / (width * height + side * side - inter)


def best_square_miou(true_boxes: Tensor, true_counts, c_min: float = 0.0, c_max: float = math.inf,
                     eps: float = math.inf, resolution: float = 0.05) -> Tensor:
    """(B,) the highest mIoU that square windows (AIR's: one scale for both sides) can reach on each scene, with
    every side in ``[c_min, c_max]`` (the ASR overlap penalty's F6) and all sides of a scene within ``eps`` of one
    another (F7), i.e. in ``[a, a + eps]`` for some a.

    An upper bound on the mIoU of any model of that kind under those bounds: windows may overlap and leave the image
    here (F1–F5 are relaxed), and each window is centred on its object and given its best side, which is
    ``clip(√(w·h), lo, hi)`` (the IoU of a centred square is unimodal in its side, largest at √(w·h)). With a finite
    ``eps`` the interval's start a is searched on a grid of step ``resolution`` pixels.

    Args:
        true_boxes: (B, N, 4) boxes ``(x_min, y_min, x_max, y_max)``, rows past ``true_counts`` ignored.
        true_counts: (B,) objects per scene (each counted as in :func:`matched_miou`: a perfect prediction of the
            count, its windows matched one-to-one).
    """
    boxes = torch.as_tensor(true_boxes, dtype=torch.float64)
    counts = torch.as_tensor(true_counts).long()
    if not 0 <= c_min <= c_max or eps < 0:
        raise ValueError(f"need 0 <= c_min <= c_max and eps >= 0, got c_min={c_min}, c_max={c_max}, eps={eps}")
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]  # (B, N)
    real = torch.arange(boxes.shape[1])[None, :] < counts[:, None]  # (B, N)
    width, height = torch.where(real, width, 1.0), torch.where(real, height, 1.0)  # padding: any positive box
    best = (width * height).sqrt()  # (B, N) the unconstrained best side
    if eps >= c_max - c_min:  # F7 cannot bind inside F6's range
        starts = torch.tensor([c_min], dtype=torch.float64)
        eps = c_max - c_min
    else:
        starts = torch.arange(c_min, c_max - eps + resolution / 2, resolution, dtype=torch.float64).clamp(max=c_max - eps)
    side = torch.minimum(torch.maximum(best[None], starts[:, None, None]), starts[:, None, None] + eps)  # (A, B, N)
    iou = square_iou(width[None], height[None], side) * real[None]  # (A, B, N)
    per_scene = iou.sum(2).max(0).values  # (B,) the best start for each scene
    return torch.where(counts > 0, per_scene / counts.clamp(min=1), torch.ones_like(per_scene))


class InkThresholdCounter:
    """Section 6.1's baseline: count objects by thresholding the total ink (sum of pixels) of the image.

    For sorted allowed counts c_1 < … < c_K, :meth:`fit` places K − 1 increasing thresholds on the training images'
    ink that maximise training accuracy, exactly: a dynamic programme over the cut points between consecutive
    distinct ink values (images of equal ink fall on the same side), each threshold the midpoint of its cut.
    :meth:`predict` answers c_k for ink in (τ_{k−1}, τ_k].

    Args:
        allowed: the possible numbers of objects, e.g. (1, 3).
    """

    def __init__(self, allowed: Sequence[int]) -> None:
        self.allowed = tuple(sorted({int(c) for c in allowed}))
        if not self.allowed:
            raise ValueError("InkThresholdCounter needs at least one allowed count")
        self.thresholds: np.ndarray | None = None  # (K − 1,) increasing

    @staticmethod
    def ink(x) -> np.ndarray:
        """(B,) total ink of (B, ...) images."""
        x = torch.as_tensor(x)
        return x.reshape(len(x), -1).double().sum(1).cpu().numpy()

    def fit(self, x, counts) -> InkThresholdCounter:
        """Choose the thresholds on training images x (B, 1, S, S) with true counts (B,); returns self."""
        ink = self.ink(x)
        counts = torch.as_tensor(counts).long().cpu().numpy()
        if len(ink) != len(counts) or len(ink) == 0:
            raise ValueError(f"need as many counts as images (at least one), got {len(counts)} and {len(ink)}")
        order = np.argsort(ink, kind="stable")
        ink, counts = ink[order], counts[order]
        m, k_classes = len(ink), len(self.allowed)
        # cut j puts the j smallest inks below it; cuts inside a run of equal inks are not thresholds
        valid = np.ones(m + 1, bool)
        valid[1:m] = ink[1:] > ink[:-1]
        # hits[k, j]: images among the j smallest whose true count is allowed[k]
        onehot = counts[None, :] == np.asarray(self.allowed)[:, None]  # (K, M)
        hits = np.concatenate([np.zeros((k_classes, 1), np.int64), np.cumsum(onehot, axis=1)], axis=1)  # (K, M+1)

        # best[j]: most training images right with classes 1..k filling the j smallest inks (last cut at j)
        best = hits[0].astype(np.float64)  # k = 1: class 1 takes images [0, j)
        best[~valid] = -np.inf
        back = []  # per class k ≥ 2: the previous cut that achieves best at each j
        for k in range(1, k_classes):
            candidate = best - hits[k]  # (M+1,) value of ending class k−1 at j', before class k's hits
            running = np.maximum.accumulate(candidate)  # best over j' ≤ j
            # the latest j' ≤ j that attains the running maximum
            argbest = np.maximum.accumulate(np.where(candidate == running, np.arange(m + 1), 0))
            best = running + hits[k]
            best[~valid] = -np.inf
            back.append(argbest)
        cuts = [m]  # the last class ends after every image
        for argbest in reversed(back):
            cuts.append(int(argbest[cuts[-1]]))
        cuts = cuts[:0:-1]  # K − 1 cuts, increasing

        def midpoint(j: int) -> float:
            if j == 0:
                return -np.inf
            if j == m:
                return np.inf
            return 0.5 * (ink[j - 1] + ink[j])

        self.thresholds = np.asarray([midpoint(j) for j in cuts], np.float64)
        return self

    def predict(self, x) -> Tensor:
        """(B,) long counts for images x (B, 1, S, S)."""
        if self.thresholds is None:
            raise RuntimeError("call fit() before predict()")
        index = np.searchsorted(self.thresholds, self.ink(x), side="left")  # number of thresholds below the ink
        return torch.as_tensor(np.asarray(self.allowed)[index], dtype=torch.long)


def ink_threshold_counts(x, allowed: Sequence[int], train_x, train_counts) -> Tensor:
    """(B,) counts of images x predicted by an :class:`InkThresholdCounter` fitted on the training images."""
    return InkThresholdCounter(allowed).fit(train_x, train_counts).predict(x)
