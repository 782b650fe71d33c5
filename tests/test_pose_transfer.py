"""pose-transfer's pieces: the rows' phases (base: no constraint; fixed: a frozen copy of the parser, no φ-step;
learned: a φ-step that changes its own copy), one initialisation for all rows, the part-IoU and part-colour metrics
on hand-made cases, config errors, samples, and a smoke run through the command line."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import step_every_phase

from kdgm.cli import main
from kdgm.errors import UserError
from kdgm.experiments import EXPERIMENTS
from kdgm.experiments.pose_transfer import (
    BASE, FIXED, LEARNED, PoseTransfer, PoseTransferConfig, part_colour_error, part_iou, pose_image,
)
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.regularized import ImplicitMStep
from kdgm.models.pose import PartAgreement, PoseGeneratorLoss
from kdgm.objectives.adversarial import DiscriminatorLoss

TINY = dict(size=16, pairs=16, width=4, parser_width=4, parser_steps=2, judge_pairs=8, eval_pairs=6,
            progress_pairs=3, batch_size=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@pytest.fixture
def tiny(kdgm_cache, monkeypatch):
    """(experiment, data) of 16x16 figures with barely trained parsers, cached in the session's cache."""
    monkeypatch.setenv("KDGM_CACHE_DIR", str(kdgm_cache))
    experiment = PoseTransfer()
    return experiment, experiment.data(PoseTransferConfig(**TINY))


def _config(constraint: str) -> PoseTransferConfig:
    return PoseTransferConfig(**TINY, constraint=constraint)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("constraint", ["none", "fixed", "learned"])
def test_rows_wire_their_phases(constraint, tiny):
    experiment, data = tiny
    row = next(r for r in experiment.rows if r.settings["constraint"] == constraint)
    assert row.name == {"none": BASE, "fixed": FIXED, "learned": LEARNED}[constraint]
    config = _config(constraint)
    torch.manual_seed(0)
    model = experiment.build_model(config, data)
    phases = experiment.phases(config, model, data)
    assert [p.name for p in phases] == ["critic", "generator"] + (["phi"] if constraint == "learned" else [])
    assert isinstance(phases[0].objective, DiscriminatorLoss) and phases[0].objective.loss == "nonsaturating"
    generator = phases[1].objective
    if constraint == "none":
        assert isinstance(generator, PoseGeneratorLoss) and generator.l1 == config.l1
        assert not phases[1].modules
    else:
        assert isinstance(generator, ImplicitMStep) and isinstance(generator.base, PoseGeneratorLoss)
        assert generator.pr.samples == 1 and generator.pr.alpha == config.alpha
        constraint_module = phases[1].modules["constraint"]  # checkpointed with the run
        assert isinstance(constraint_module, PartAgreement) and generator.pr.constraint is constraint_module
        assert constraint_module.parser is not data.constraint_parser  # a copy: the φ-step must not edit the cache
        assert constraint_module.learnable == (constraint == "learned")
        assert _states_equal(constraint_module.parser.state_dict(), data.constraint_parser.state_dict())
    if constraint == "learned":
        phi = phases[2]
        assert isinstance(phi.objective, TeacherLikelihood) and phi.objective.knowledge is generator.pr
        phi_params = {id(p) for group in phi.optimizer.param_groups for p in group["params"]}
        assert phi_params == {id(p) for p in constraint_module.parameters()}

    batch = data.train.batch(torch.arange(4))
    parser = phases[1].modules["constraint"].parser if constraint != "none" else None
    before = {k: v.clone() for k, v in parser.state_dict().items()} if parser is not None else None
    step_every_phase(model, phases, batch)
    if parser is not None:  # only the φ-step moves the parser
        assert _states_equal(parser.state_dict(), before) == (constraint == "fixed")
        assert _states_equal(data.constraint_parser.state_dict(), before)  # the cached parser is untouched


def test_all_rows_start_from_the_same_initialisation(tiny):
    experiment, data = tiny
    states = []
    for row in experiment.rows:
        torch.manual_seed(3)
        states.append(experiment.build_model(_config(row.settings["constraint"]), data).state_dict())
    assert _states_equal(states[0], states[1]) and _states_equal(states[0], states[2])


def test_part_iou_on_hand_made_maps():
    true = torch.zeros(1, 4, 4, dtype=torch.long)
    true[0, 0, :] = 1  # class 1: the top row (4 pixels)
    true[0, 3, :2] = 2  # class 2: 2 pixels
    assert part_iou(true.clone(), true) == 1.0
    disjoint = torch.zeros_like(true)
    disjoint[0, 1, :] = 1
    disjoint[0, 2, :2] = 2
    assert part_iou(disjoint, true) == 0.0
    partial = true.clone()
    partial[0, 0, 2:] = 0  # class 1 keeps 2 of its 4 pixels ...
    partial[0, 1, :2] = 1  # ... and claims 2 others: IoU 2 / 6; class 2 is exact: IoU 1
    assert part_iou(partial, true) == pytest.approx((2 / 6 + 1) / 2)
    # background (class 0) is left out unless asked for; all-background maps agree vacuously
    assert part_iou(torch.zeros_like(true), torch.zeros_like(true)) == 1.0


def test_part_iou_background_case_by_count():
    true = torch.zeros(1, 4, 4, dtype=torch.long)
    true[0, 0, :] = 1
    pred = torch.zeros_like(true)
    pred[0, 1, :] = 1
    # class 1: 0 / 8; class 0: true has 12 pixels, pred has 12, they share rows 2-3 (8): 8 / 16
    assert part_iou(pred, true) == 0.0
    assert part_iou(pred, true, background=True) == pytest.approx((8 / 16 + 0) / 2)


def test_part_colour_error_on_a_hand_case():
    parts = torch.tensor([[[0, 1], [1, 2]]])  # (1, 2, 2): a background pixel, two head pixels, one torso pixel
    target = torch.zeros(1, 3, 2, 2)
    target[0, 0] = 1.0  # everything red
    generated = target.clone()
    generated[0, 0, 0, 1] = 0.5  # one head pixel half red: the head's mean red is 0.75 instead of 1
    generated[0, :, 0, 0] = 0.3  # the background pixel is not scored
    mean, per_part = part_colour_error(generated, target, parts)
    head = 0.25 / 3  # |0.75 - 1| in red, 0 in green and blue, averaged over the 3 channels
    assert per_part == pytest.approx({"head": head, "torso": 0.0})
    assert mean == pytest.approx((head + 0.0) / 2)  # over (image, part present)
    assert part_colour_error(target, target, parts)[0] == 0.0


def test_pose_image_is_grey_in_range():
    heatmaps = torch.rand(2, 14, 8, 8)
    image = pose_image(heatmaps)
    assert image.shape == (2, 3, 8, 8) and image.min() >= 0 and image.max() <= 1
    assert torch.equal(image[:, 0], image[:, 2])


@pytest.mark.parametrize("values, message", [
    (dict(size=48), "size must be one of"),
    (dict(progress_pairs=10, eval_pairs=5), "progress_pairs"),
    (dict(alpha=0.0), "alpha must be positive"),
    (dict(l1=-1.0), "l1 must be >= 0"),
    (dict(f_penalty=float("nan")), "f_penalty"),
    (dict(parser_steps=0), "parser_steps must be positive"),
])
def test_impossible_configs_are_one_line_errors(values, message):
    with pytest.raises(UserError, match=message):
        PoseTransferConfig(**values).validate()


def test_samples_are_generated_targets_of_the_first_test_pairs(tiny):
    experiment, data = tiny
    config = _config("none")
    model = experiment.build_model(config, data)
    generator = torch.Generator().manual_seed(0)
    few = experiment.samples(model, 4, generator, data)
    assert few.shape == (4, 3, 16, 16) and few.min() >= 0 and few.max() <= 1
    more = experiment.samples(model, 10, generator, data)  # more than the 6 test pairs: the split is extended
    assert more.shape == (10, 3, 16, 16) and torch.allclose(more[:4], few)
    metrics = experiment.evaluate(config, model, data.test, final=True)
    assert {"ssim", "part_iou", "l1", "colour", "judge_iou_real"} <= set(metrics)
    assert set(experiment.evaluate(config, model, data.test, final=False)) == set(experiment.progress_metrics)


def test_smoke_run_through_the_command_line(tmp_path, kdgm_cache, monkeypatch):
    monkeypatch.setenv("KDGM_CACHE_DIR", str(kdgm_cache))
    run_dir = tmp_path / "run"
    assert main(["run", "pose-transfer", "--preset", "smoke", "--out", str(run_dir), "--device", "cpu"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["rows"]) == [BASE, FIXED, LEARNED]
    assert [metrics["rows"][row]["ssim"]["paper"] for row in metrics["rows"]] == [0.676, 0.679, 0.727]
    assert EXPERIMENTS["pose-transfer"].data_parallel is False
    for row in ("base-model", "with-fixed-constraint", "with-learned-constraint"):
        assert (run_dir / "figures" / row / "transfers.png").exists()
    comparison = run_dir / "figures" / "comparison.png"  # pairs x (source, pose, base, fixed, learned, target)
    assert comparison.exists()
    report = (run_dir / "report.md").read_text()
    assert "Paired differences" in report and "figures/comparison.png" in report
    comparison.unlink()
    assert main(["report", str(run_dir), "--figures"]) == 0  # redrawn from the checkpoints
    assert comparison.exists()
