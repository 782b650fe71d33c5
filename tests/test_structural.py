"""ASR (Xu et al. 2019): the count distribution against brute force, R^num, F^o_1…7, the penalty wrapper, scene metrics."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kdgm.knowledge.structural import (
    COUNT_WEIGHTS, OVERLAP_NAMES, OVERLAP_WEIGHTS, StructuralPenalty, count_distribution, count_functionals,
    log_count_distribution, overlap_functionals, where_to_boxes, where_to_pixels,
)
from kdgm.metrics.scenes import (
    InkThresholdCounter, best_square_miou, box_iou, count_accuracy, inferred_boxes, ink_threshold_counts, matched_miou,
    squared_error,
)
from kdgm.objectives.base import LossOutput

SIZE = 50


def _where(pixel_boxes, dtype=torch.float64) -> torch.Tensor:
    """(T, 1, 3) z_where of square boxes given as (centre_x, centre_y, side) in pixels of a 50 x 50 image."""
    t = torch.tensor(pixel_boxes, dtype=dtype)  # (T, 3)
    cx, cy, side = t.unbind(-1)
    return torch.stack([side / SIZE, 2 * cx / SIZE - 1, 2 * cy / SIZE - 1], -1)[:, None]


def _outputs(pixel_boxes, present=None, requires_grad=False):
    z_where = _where(pixel_boxes).requires_grad_(requires_grad)
    T = z_where.shape[0]
    z_pres = torch.ones(T, 1, dtype=torch.float64) if present is None else torch.tensor(present, dtype=torch.float64)
    pres_prob = torch.full((T, 1), 0.7, dtype=torch.float64, requires_grad=requires_grad)
    return SimpleNamespace(z_where=z_where, z_pres=z_pres.reshape(T, 1), pres_prob=pres_prob)


# --- count distribution and R^num ----------------------------------------------------------------------------------


def test_count_distribution_sums_to_one_even_at_saturated_probabilities():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 5, generator=g)  # (T, B)
    p[:, 0] = 1.0  # a saturated float32 sigmoid
    p[2, 1] = 0.0
    q = count_distribution(p)  # (B, T+1)
    assert q.shape == (5, 7)
    assert torch.allclose(q.sum(1), torch.ones(5), atol=1e-5)
    p.requires_grad_(True)
    log_q = log_count_distribution(p)
    log_q.sum().backward()
    assert torch.isfinite(log_q).all() and torch.isfinite(p.grad).all()


def test_count_distribution_matches_enumeration_of_trajectories():
    p = torch.tensor([[0.9, 0.2], [0.6, 0.5], [0.3, 0.99]], dtype=torch.float64)  # (T=3, B=2) fixed conditionals
    T, B = p.shape
    expected = torch.zeros(B, T + 1, dtype=torch.float64)
    for z in itertools.product([0, 1], repeat=T):
        prob = torch.ones(B, dtype=torch.float64)
        alive = True
        for t, zt in enumerate(z):
            if alive:
                prob = prob * (p[t] if zt else 1 - p[t])
            elif zt:  # a step after termination cannot be present
                prob = prob * 0
            alive = alive and bool(zt)
        expected[:, sum(z)] += prob
    assert torch.allclose(count_distribution(p), expected, atol=1e-12)


def test_air_count_distribution_is_exact_for_every_count_whatever_count_was_sampled():
    """q(n | x) of the count penalty against enumeration on a 3-step AIR guide with fixed noise.

    Brute force: for each count n, run the guide with z_pres forced to (1, …, 1, 0, …) and multiply the probabilities
    of those presence bits under its own conditionals. The model's ``pres_prob`` from one sampled trajectory must give
    the same q(n | x) for every n, also above the sampled count (a guide that feeds an absent object as zeros gets
    those counts wrong: issue 13's defect).
    """
    from kdgm.models.air import AIR

    torch.manual_seed(0)
    T, B = 3, 64
    model = AIR(image_size=16, max_steps=T, z_what_dim=4, glimpse_size=8, hidden=16, embed_dim=16,
                encoder_hidden=(16,), decoder_hidden=(16,), baseline_hidden=8).double()
    with torch.no_grad():  # presence logits spread around 0 so that every count gets sampled
        model.guide_head.weight[0].mul_(20.0)
    x = torch.rand(B, 1, 16, 16, dtype=torch.float64)

    def guide_run(forced: list[int] | None) -> list:
        """The guide's T states under seed 1; ``forced`` overrides the sampled presence bits (same noise)."""
        torch.manual_seed(1)
        gates = model.guide_rnn.base(model.embed(x.flatten(1)), B)
        state, states = model.initial_guide_state(x), []
        for t in range(T):
            state = model.guide_step(x, gates, state)
            if forced is not None:  # a prefix of ones, as the guide's own samples
                state = state._replace(z_pres=torch.full_like(state.z_pres, float(forced[t])))
            states.append(state)
        return states

    with torch.no_grad():
        exact = torch.zeros(B, T + 1, dtype=torch.float64)
        for n in range(T + 1):
            bits = [1] * n + [0] * (T - n)
            states = guide_run(bits)
            prob = torch.ones(B, dtype=torch.float64)
            for t in range(min(n + 1, T)):  # steps whose bit is random: all earlier present
                p_t = torch.sigmoid(states[t].pres_logit)
                prob = prob * (p_t if bits[t] else 1 - p_t)
            exact[:, n] = prob
        torch.manual_seed(1)
        out = model(x)
    assert torch.allclose(exact.sum(1), torch.ones(B, dtype=torch.float64))
    sampled = out.count
    assert (sampled <= T - 2).any(), "the check needs images whose sampled count leaves later counts unsampled"
    assert torch.allclose(count_distribution(out.pres_prob), exact, atol=1e-12)


def test_num_instance_is_zero_iff_each_image_commits_to_an_allowed_count():
    F = count_functionals((1, 3))["num_instance"]
    one = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)  # q(n = 1) = 1
    three = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)  # p_T := 0, so q(n = 3) = 1
    two = torch.tensor([[1.0], [1.0], [0.0]], dtype=torch.float64)  # q(n = 2) = 1, not allowed
    assert float(F(SimpleNamespace(pres_prob=torch.cat([one, three], 1)), None)) == pytest.approx(0, abs=1e-9)
    assert float(F(SimpleNamespace(pres_prob=two), None)) > 10
    undecided = torch.tensor([[1.0], [0.5], [1.0]], dtype=torch.float64)  # half on 1, half on 3
    assert float(F(SimpleNamespace(pres_prob=undecided), None)) == pytest.approx(math.log(2))


def test_num_marginal_is_zero_iff_the_batch_marginal_is_uniform_over_the_allowed_counts():
    F = count_functionals((1, 3))["num_marginal"]
    one = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)
    three = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
    assert float(F(SimpleNamespace(pres_prob=torch.cat([one, three], 1)), None)) == pytest.approx(0, abs=1e-9)
    undecided = torch.tensor([[1.0], [0.5], [1.0]], dtype=torch.float64)
    assert float(F(SimpleNamespace(pres_prob=undecided), None)) == pytest.approx(0, abs=1e-9)
    # all images on n = 1: KL(uniform ‖ (1, ~0)) is large
    assert float(F(SimpleNamespace(pres_prob=torch.cat([one, one], 1)), None)) > 5


def test_count_functionals_reject_counts_beyond_the_steps():
    F = count_functionals((1, 4))["num_instance"]
    with pytest.raises(ValueError, match="exceed"):
        F(SimpleNamespace(pres_prob=torch.full((3, 2), 0.5)), None)


# --- overlap functionals F^o_1…7 -----------------------------------------------------------------------------------


def test_where_to_pixels_and_boxes():
    z_where = torch.tensor([[0.2, -1.0, 1.0], [0.5, 0.0, 0.0]])
    cx, cy, side = where_to_pixels(z_where, SIZE)
    assert cx.tolist() == [0.0, 25.0] and cy.tolist() == [50.0, 25.0] and side.tolist() == [10.0, 25.0]
    assert where_to_boxes(z_where, SIZE)[1].tolist() == [12.5, 12.5, 37.5, 37.5]


GOOD = [(10.0, 10.0, 15.0), (40.0, 10.0, 15.0), (25.0, 40.0, 15.0)]  # three 15 px squares, apart, inside


@pytest.mark.parametrize(
    "name, boxes, expected",
    [
        ("overlap", [(10, 10, 15), (20, 10, 15), (25, 40, 15)], 2 * 5.0),  # (15+15)/2 − 10 per ordered pair
        ("inside_left", [(5, 10, 15), (40, 10, 15), (25, 40, 15)], 2.5),
        ("inside_right", [(10, 10, 15), (45, 10, 15), (25, 40, 15)], 2.5),
        ("inside_top", [(10, 5, 15), (40, 10, 15), (25, 40, 15)], 2.5),
        ("inside_bottom", [(10, 10, 15), (40, 10, 15), (25, 46, 15)], 3.5),
        ("scale_range", [(10, 10, 10), (40, 10, 15), (25, 40, 15)], 2.0),  # 12 − 10
        ("scale_equal", [(10, 10, 15), (40, 10, 15), (25, 40, 19)], 4 * 1.0),  # (19 − 15 − 3), 2 pairs x 2 orders
    ],
)
def test_each_overlap_functional_is_zero_when_satisfied_and_positive_when_violated(name, boxes, expected):
    functionals = overlap_functionals(SIZE, c_min=12, c_max=25, eps=3)
    assert set(functionals) == set(OVERLAP_NAMES)
    assert float(functionals[name](_outputs(GOOD), None)) == 0
    assert float(functionals[name](_outputs(boxes), None)) == pytest.approx(expected)


def test_overlap_functionals_ignore_absent_objects_and_average_over_the_batch():
    functionals = overlap_functionals(SIZE)
    too_big = [(10, 10, 15), (40, 10, 15), (25, 25, 40)]  # a third, huge box that overlaps everything
    assert float(functionals["scale_range"](_outputs(too_big, present=[1, 1, 0]), None)) == 0
    assert float(functionals["overlap"](_outputs(too_big, present=[1, 1, 0]), None)) == 0
    # scale_range of box 3 is 40 − 25 = 15 in image 1 and 0 in image 2 (absent): the mean is 7.5
    both = SimpleNamespace(
        z_where=torch.cat([_where(too_big), _where(too_big)], 1),
        z_pres=torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64),
    )
    assert float(functionals["scale_range"](both, None)) == pytest.approx(7.5)


def test_overlap_default_bounds_accept_the_scene_sizes():
    functionals = overlap_functionals()  # defaults for the 50 x 50 scenes
    mnist = [(12, 12, 20), (38, 12, 20), (25, 38, 20)]  # Multi-MNIST digits: 19–20 px
    assert sum(float(F(_outputs(mnist), None)) for F in functionals.values()) == 0


# --- StructuralPenalty ---------------------------------------------------------------------------------------------


class _DummyBase:
    """A base objective that returns a fixed loss and hands the given outputs through."""

    def __init__(self, outputs):
        self.outputs = outputs

    def __call__(self, model, batch) -> LossOutput:
        total = torch.tensor(3.0, dtype=torch.float64)
        return LossOutput(total, {"nelbo": total.detach()}, outputs=self.outputs)


def test_penalty_adds_weighted_positive_parts_and_passes_gradients():
    bad = [(4, 4, 10), (12, 10, 15), (46, 46, 19)]  # overlaps, sticks out on every side, too small, unequal
    outputs = _outputs(bad, requires_grad=True)
    functionals = {**count_functionals((1, 3)), **overlap_functionals(SIZE)}
    functionals["negative"] = lambda out, batch: torch.tensor(-5.0, dtype=torch.float64)  # satisfied: adds 0
    weights = {**COUNT_WEIGHTS, **OVERLAP_WEIGHTS, "negative": 7.0}
    objective = StructuralPenalty(_DummyBase(outputs), functionals, weights)
    out = objective(None, None)

    expected = sum(weights[n] * max(float(F(outputs, None).detach()), 0.0) for n, F in functionals.items())
    assert float(out.total.detach()) == pytest.approx(3.0 + expected)
    assert float(out.terms["penalty"]) == pytest.approx(expected)
    assert float(out.terms["F/negative"]) == -5.0 and "nelbo" in out.terms and out.outputs is outputs
    assert all(float(out.terms[f"F/{n}"]) > 0 for n in OVERLAP_NAMES)

    out.total.backward()
    assert outputs.z_where.grad is not None and outputs.z_where.grad.abs().sum() > 0
    assert outputs.pres_prob.grad is not None and outputs.pres_prob.grad.abs().sum() > 0


def test_penalty_convenience_constructors_and_errors():
    outputs = _outputs(GOOD)
    assert float(StructuralPenalty.for_overlap(_DummyBase(outputs))(None, None).total) == 3.0
    counted = StructuralPenalty.for_counts(_DummyBase(outputs), (1, 3))(None, None)
    assert set(counted.terms) >= {"F/num_instance", "F/num_marginal", "penalty"}
    with pytest.raises(ValueError, match="missing"):
        StructuralPenalty(_DummyBase(outputs), overlap_functionals(), COUNT_WEIGHTS)
    with pytest.raises(ValueError, match="outputs=None"):
        StructuralPenalty.for_overlap(_DummyBase(None))(None, None)


# --- scene metrics -------------------------------------------------------------------------------------------------


def test_count_accuracy_and_squared_error():
    assert count_accuracy(torch.tensor([1, 3, 3, 1]), torch.tensor([1, 3, 1, 1])) == 0.75
    x = torch.zeros(2, 1, 4, 4)
    recon = torch.zeros(2, 1, 4, 4)
    recon[1, 0, :2, :2] = 0.5
    assert squared_error(x, recon).tolist() == [0.0, 1.0]


def test_box_iou_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [0, 0, 0, 0]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert torch.allclose(iou[0], torch.tensor([1 / 3, 1.0, 0.0]))
    assert (iou[1] == 0).all()  # empty boxes: 0, not NaN


TRUE = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 35, 35], [40, 0, 50, 10]]])  # (1, 3, 4)


def test_miou_is_one_for_identical_boxes_in_any_order_and_zero_for_disjoint_ones():
    for perm in itertools.permutations(range(3)):
        assert float(matched_miou(TRUE[:, list(perm)], [3], TRUE, [3])[0]) == pytest.approx(1.0)
    disjoint = TRUE + torch.tensor([0.0, 15, 0, 15])  # every box moved down, clear of every true box
    assert float(matched_miou(disjoint, [3], TRUE, [3])[0]) == 0.0


def test_miou_divides_by_the_larger_count_and_scores_empty_scenes_one():
    two = matched_miou([TRUE[0, [2, 0]]], [2], TRUE, [3])  # list input, 2 of 3 found exactly
    assert float(two[0]) == pytest.approx(2 / 3)
    padded = torch.cat([TRUE[:, :1], torch.zeros(1, 2, 4)], 1)
    extra = matched_miou(TRUE, [3], padded, [1])  # 3 inferred, 1 true
    assert float(extra[0]) == pytest.approx(1 / 3)
    assert matched_miou(torch.zeros(2, 3, 4), [0, 0], torch.zeros(2, 3, 4), [0, 2]).tolist() == [1.0, 0.0]


def test_hungarian_matching_beats_greedy():
    truth = torch.tensor([[[0.0, 0, 10, 10], [10, 0, 20, 10]]])  # A, B side by side
    pred = torch.tensor([[[0.0, 0, 4, 10], [0, 0, 19, 10]]])  # a sliver of A; a wide box over A and most of B
    iou = box_iou(pred[0], truth[0])  # [[0.4, 0], [10/19, 0.45]]
    # greedy: take the largest IoU (wide box with A), then the best left (sliver with B, IoU 0)
    i, j = divmod(int(iou.argmax()), 2)
    greedy = float(iou[i, j] + iou[1 - i, 1 - j]) / 2
    hungarian = float(matched_miou(pred, [2], truth, [2])[0])
    assert greedy == pytest.approx((10 / 19) / 2)
    assert hungarian == pytest.approx((0.4 + 0.45) / 2)
    assert hungarian > greedy + 0.1


def test_inferred_boxes_from_z_where_round_trip_to_miou_one():
    z_where = torch.cat([_where([(5, 5, 10)]), _where([(27.5, 27.5, 15)]), _where([(45, 5, 10)])])  # (3, 1, 3)
    boxes, counts = inferred_boxes(z_where, torch.tensor([[1.0], [1.0], [0.0]]), SIZE)
    assert counts.tolist() == [2]
    assert torch.allclose(boxes[0, :2], TRUE[0, :2].double())
    assert float(matched_miou(boxes, counts, TRUE, [2])[0]) == pytest.approx(1.0)


def test_best_square_miou_matches_a_brute_force_search_over_square_windows():
    """The bound against windows placed and sized by brute force: every centre and side on a 0.5 px grid."""
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 20, size=(6, 2, 2))  # (B, N, 2)
    sides = rng.integers(3, 12, size=(6, 2, 2))  # (B, N, 2) widths and heights
    boxes = torch.tensor(np.concatenate([corners, corners + sides], 2), dtype=torch.float64)  # (B, N, 4)
    counts = torch.tensor([2, 2, 2, 1, 2, 2])
    c_min, c_max, eps = 4.0, 11.0, 1.5
    grid = torch.arange(0, 40.5, 0.5, dtype=torch.float64)
    x0, y0 = torch.meshgrid(grid, grid, indexing="ij")  # every top-left corner of a window
    for b in range(len(boxes)):
        best = 0.0
        for s in itertools.product(torch.arange(c_min, c_max + 0.25, 0.5).tolist(), repeat=int(counts[b])):
            if max(s) - min(s) > eps:
                continue
            total = 0.0
            for box, side in zip(boxes[b], s):
                windows = torch.stack([x0, y0, x0 + side, y0 + side], -1).view(-1, 4)  # every placement
                total += float(box_iou(windows, box[None]).max())
            best = max(best, total / int(counts[b]))
        bound = float(best_square_miou(boxes[b:b + 1], counts[b:b + 1], c_min, c_max, eps, resolution=0.01)[0])
        assert best - 1e-9 <= bound <= best + 0.02  # the grids are 0.5 px; the bound searches finer


def test_best_square_miou_closed_forms():
    square = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    assert float(best_square_miou(square, [1])[0]) == pytest.approx(1.0)
    assert float(best_square_miou(square, [1], c_min=20.0)[0]) == pytest.approx(0.25)  # 100 / 400
    wide = torch.tensor([[[0.0, 0.0, 16.0, 8.0]]])  # aspect 1/2: the best square has side sqrt(128)
    r = math.sqrt(0.5)
    assert float(best_square_miou(wide, [1])[0]) == pytest.approx(r / (2 - r))
    assert best_square_miou(torch.zeros(1, 2, 4), [0]).tolist() == [1.0]  # an empty scene, as matched_miou


def _blob_images(counts, rng, size=20):
    """Images with ``count`` non-overlapping 4 x 4 blobs of random brightness in distinct cells of a 4 x 4 grid."""
    x = np.zeros((len(counts), 1, size, size), np.float32)
    for b, count in enumerate(counts):
        for cell in rng.choice(16, size=count, replace=False):
            r, c = divmod(int(cell), 4)
            x[b, 0, 5 * r : 5 * r + 4, 5 * c : 5 * c + 4] = rng.uniform(0.6, 1.0)
    return torch.from_numpy(x)


def test_ink_threshold_counter_recovers_one_versus_three_blobs():
    rng = np.random.default_rng(0)
    train_counts = torch.tensor([1, 3] * 30)
    test_counts = torch.tensor([3, 1] * 10)
    train_x, test_x = _blob_images(train_counts.tolist(), rng), _blob_images(test_counts.tolist(), rng)
    predicted = ink_threshold_counts(test_x, (3, 1), train_x, train_counts)
    assert predicted.dtype == torch.long
    assert count_accuracy(predicted, test_counts) == 1.0
    counter = InkThresholdCounter((1, 3)).fit(train_x, train_counts)
    assert 16 * 1.0 < counter.thresholds[0] < 3 * 16 * 0.6  # between one bright and three dim blobs
    assert torch.equal(counter.predict(test_x), predicted)


def test_ink_thresholds_maximise_training_accuracy_exactly():
    rng = np.random.default_rng(1)
    allowed = (0, 2, 5)
    counts = rng.choice(allowed, size=24)
    ink = counts + rng.normal(0, 1.2, size=24)  # overlapping classes: the best thresholds are not obvious
    ink[3] = ink[4]  # a tie must stay on one side
    x = torch.from_numpy(ink).reshape(-1, 1, 1, 1)
    fitted = count_accuracy(InkThresholdCounter(allowed).fit(x, counts).predict(x), torch.from_numpy(counts))
    cuts = np.concatenate([[-np.inf], np.sort(ink), [np.inf]])
    best = max(
        np.mean(np.asarray(allowed)[np.searchsorted([lo, hi], ink, side="left")] == counts)
        for lo, hi in itertools.combinations_with_replacement(cuts, 2)
    )
    assert fitted == pytest.approx(best)
