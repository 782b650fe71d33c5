"""The training loop and its plumbing: loader order and shards, atomic and pickle-free checkpoints, exact resume,
configs and overrides."""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from kdgm import config as cfgmod
from kdgm.data.batch import ImageBatch
from kdgm.data.loader import BatchLoader, endless
from kdgm.errors import NonFiniteError, UserError
from kdgm.experiments.base import TrainConfig
from kdgm.models.vae import VAE
from kdgm.objectives.elbo import ELBO
from kdgm.train.checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kdgm.train.fabric import make_fabric
from kdgm.train.loop import fit
from kdgm.train.logs import read_csv
from kdgm.train.optim import WarmupCosine
from kdgm.train.updater import Phase, PhasedUpdater


class Tiny:
    """A 40-example binary image data set."""

    def __init__(self, n: int = 40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g)

    def __len__(self):
        return len(self.x)

    def batch(self, index):
        return ImageBatch(self.x[index], index)


def test_loader_is_seeded_and_covers_each_epoch():
    data = Tiny(40)
    loader = BatchLoader(data, 8, seed=3)
    first = torch.cat([b.y for b in loader])
    again = torch.cat([b.y for b in BatchLoader(data, 8, seed=3)])
    assert torch.equal(first, again) and sorted(first.tolist()) == list(range(40))
    loader.set_epoch(1)
    assert not torch.equal(torch.cat([b.y for b in loader]), first)
    assert torch.equal(torch.cat([b.y for b in loader.iter_from(2)]), torch.cat([b.y for b in loader])[16:])


def test_loader_shards_are_disjoint_and_complete():
    data = Tiny(40)
    shards = [torch.cat([b.y for b in BatchLoader(data, 5, seed=1, rank=r, world_size=2)]) for r in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(40))
    assert len(BatchLoader(data, 6, world_size=2, drop_last=False)) == 4


def test_checkpoint_round_trip_restores_rng(tmp_path):
    torch.manual_seed(0)
    state = {"step": 7, "model": {"w": torch.randn(3)}, "rng": rng_state()}
    save_checkpoint(state, tmp_path)
    expected = torch.rand(4)
    loaded = load_checkpoint(tmp_path / LAST)
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected)
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["w"], state["model"]["w"])


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"step": 1, "model": {}}, tmp_path)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # a kill between opening the temporary file and the rename

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "model": {}}, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / LAST)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temporary file left behind


def test_corrupt_or_foreign_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "torn.ckpt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "torn.ckpt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump({"step": 0, "model": Evil()}, handle)
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "evil.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="not a kdgm checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def _updater(lr=1e-2, hidden=(32,), extra_phase=False):
    torch.manual_seed(0)
    model = VAE(z_dim=4, hidden=hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(12, 2))
    phases = [Phase("main", ELBO(), optimizer, scheduler)]
    if extra_phase:  # a second phase drawing its own batches, as a φ-step on held-out data does
        decoder = torch.optim.SGD(model.parameters(), lr=1e-3)
        phases.append(Phase("held_out", ELBO(), decoder, batches=endless(BatchLoader(Tiny(24), 8, seed=9))))
    return model, PhasedUpdater(model, phases)


def _train(folder, max_steps, checkpoint_every=0, resume=True, identity=None, **kwargs):
    model, updater = _updater(**kwargs)
    loader = BatchLoader(Tiny(40), 8, seed=5)
    result = fit(make_fabric("cpu"), updater, loader, max_steps=max_steps, folder=folder, resume=resume,
                 identity=identity, checkpoint_every=checkpoint_every, log_every=1, tensorboard=False,
                 progress_bar=False)
    return model, result


@pytest.mark.parametrize("extra_phase", [False, True], ids=["one-phase", "phase-with-own-batches"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, extra_phase):
    straight, _ = _train(tmp_path / "a", 12, extra_phase=extra_phase)
    ckpt = tmp_path / "b" / "checkpoints" / LAST
    _train(tmp_path / "b", 7, extra_phase=extra_phase)
    at_step_7 = ckpt.read_bytes()
    _train(tmp_path / "b", 9, extra_phase=extra_phase)
    ckpt.write_bytes(at_step_7)  # as if killed after logging steps 8 and 9 but before saving them
    resumed, result = _train(tmp_path / "b", 12, extra_phase=extra_phase)
    assert result.resumed_from == 7 and result.steps == 12
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name  # bit-identical, not merely close
    log = read_csv(tmp_path / "b" / "train.csv")
    assert log["step"] == list(map(float, range(1, 13)))


def test_a_fresh_fit_refuses_an_old_checkpoint_and_resume_refuses_a_foreign_one(tmp_path):
    _train(tmp_path, 4, identity="run-a")
    with pytest.raises(UserError, match="earlier run's checkpoint; pass resume=True"):
        _train(tmp_path, 8, resume=False, identity="run-a")
    with pytest.raises(UserError, match="written by another run"):
        _train(tmp_path, 8, identity="run-b")
    with pytest.raises(UserError, match=r"'encoder.*' has shape .* there and .* here"):
        _train(tmp_path, 8, identity="run-a", hidden=(16,))
    with pytest.raises(UserError, match="no optimizer state for phase 'held_out'"):
        _train(tmp_path, 8, identity="run-a", extra_phase=True)
    assert load_checkpoint(tmp_path / "checkpoints" / LAST)["step"] == 4  # refused runs wrote nothing


def test_non_finite_training_keeps_the_last_good_checkpoint_and_names_the_step(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite at step (\d+); the last good checkpoint is step (\d+)") as err:
        _train(tmp_path, 40, checkpoint_every=1, lr=1e12)  # --set lr=1e12: finite for a step or two, then not
    bad, good = map(int, re.search(r"step (\d+); the last good checkpoint is step (\d+)", str(err.value)).groups())
    kept = load_checkpoint(tmp_path / "checkpoints" / LAST)
    assert kept["step"] == good < bad
    assert all(torch.isfinite(t).all() for t in kept["model"].values())


def _nan_loss(model, total):
    return total * float("nan")


def _infinite_gradient(model, total):
    return total + torch.sqrt(next(model.parameters()).abs().sum() * 0)  # value 0, gradient +inf


@pytest.mark.parametrize(
    "fault, step, lr, grad_clip, log_every",
    [
        (_nan_loss, 5, 0.0, None, 10),
        # a finite loss whose gradient is infinite: clip_grad_norm_ would raise RuntimeError (an internal error)
        (_infinite_gradient, 3, 1e-3, 1.0, 1),
    ],
    ids=["nan-loss", "infinite-gradient-under-grad-clip"],
)
def test_a_fault_at_a_known_step_is_a_non_finite_error_at_that_step(fault, step, lr, grad_clip, log_every, tmp_path):
    class FaultAtStep(ELBO):
        calls = 0

        def __call__(self, model, batch):
            out = super().__call__(model, batch)
            FaultAtStep.calls += 1
            return out if FaultAtStep.calls != step else type(out)(fault(model, out.total), out.terms)

    model = VAE(z_dim=4, hidden=(32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    updater = PhasedUpdater(model, [Phase("main", FaultAtStep(), optimizer, grad_clip=grad_clip)])
    with pytest.raises(NonFiniteError, match=f"non-finite at step {step}; nothing was saved"):
        fit(make_fabric("cpu"), updater, BatchLoader(Tiny(40), 8), max_steps=20, folder=tmp_path,
            checkpoint_every=10, log_every=log_every, tensorboard=False, progress_bar=False)
    assert not (tmp_path / "checkpoints" / LAST).exists()


def test_fit_sets_train_mode_and_an_updater_fits_twice(tmp_path):
    model, updater = _updater()
    model.eval()
    loader = BatchLoader(Tiny(40), 8, seed=5)
    fit(make_fabric("cpu"), updater, loader, max_steps=2, progress_bar=False)
    assert model.training
    result = fit(make_fabric("cpu"), updater, loader, max_steps=3, progress_bar=False)  # continues on a new Fabric
    assert result.steps == 3


@pytest.mark.parametrize("lower, best_step", [(False, 4), (True, 2)], ids=["higher-is-better", "lower-is-better"])
def test_select_keeps_the_weights_of_the_best_evaluation(tmp_path, lower, best_step):
    """Model selection: best.ckpt holds the weights of the step whose metric was best (a perplexity: the lowest)."""
    model, updater = _updater()
    scores = iter([3.0, 1.0, 2.0, 5.0, 4.0])  # evaluations at steps 1..4, then the final one at step 5
    weights = {}

    def evaluate():
        weights[len(weights) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"metric": next(scores)}

    fit(make_fabric("cpu"), updater, BatchLoader(Tiny(40), 8, seed=5), max_steps=5, folder=tmp_path,
        evaluate=evaluate, eval_every=1, select="metric", select_lower=lower, tensorboard=False, progress_bar=False)
    best = load_checkpoint(tmp_path / "checkpoints" / BEST)
    assert best["step"] == best_step
    for key, value in best["model"].items():
        torch.testing.assert_close(value, weights[best_step][key], msg=key)


def test_stale_temporary_checkpoint_files_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".last.ckpt.abc.tmp").write_bytes(b"half a checkpoint")
    _train(tmp_path, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [LAST]


def test_numpy_rng_position_survives_a_checkpoint():
    np.random.seed(0)
    np.random.random(3)  # mid-block: position != 624
    state = rng_state()
    expected = np.random.random(4)
    np.random.random(100)
    set_rng_state(state)
    assert np.array_equal(np.random.random(4), expected)


def test_endless_batches_resume_where_they_stopped():
    loader = BatchLoader(Tiny(24), 8, seed=2)
    straight = [b.y for b, _ in zip(endless(loader), range(7))]
    first = endless(BatchLoader(Tiny(24), 8, seed=2))
    [next(first) for _ in range(4)]
    again = endless(BatchLoader(Tiny(24), 8, seed=2))
    again.load_state_dict(first.state_dict())
    assert all(torch.equal(a, b.y) for a, b in zip(straight[4:], [next(again) for _ in range(3)]))


def test_warmup_cosine_schedule():
    rule = WarmupCosine(total_steps=10, warmup_steps=2)
    assert [rule(s) for s in (0, 1)] == [0.5, 1.0]
    assert rule(2) == pytest.approx(1.0) and rule(10) == pytest.approx(0.0)
    assert WarmupCosine(10, 0, cosine=False)(9) == 1.0


@dataclass
class Cfg(TrainConfig):
    counts: tuple[int, ...] = (1, 3)
    name: str = "a"
    scale: float | None = None


def test_overrides_are_type_checked():
    cfg = cfgmod.apply(Cfg(), {"steps": "5", "lr": "3e-4", "counts": "[2, 4]", "scale": "null", "deterministic": "true"},
                       parse_strings=True)
    assert (cfg.steps, cfg.lr, cfg.counts, cfg.scale, cfg.deterministic) == (5, 3e-4, (2, 4), None, True)
    assert cfgmod.apply(Cfg(), {"lr": "1"}, parse_strings=True).lr == 1.0
    with pytest.raises(UserError, match="steps: expected an integer"):
        cfgmod.apply(Cfg(), {"steps": "many"}, parse_strings=True)
    with pytest.raises(UserError, match="did you mean steps"):
        cfgmod.apply(Cfg(), {"stesp": "5"}, parse_strings=True)
    with pytest.raises(UserError, match="lr_schedule: expected one of"):
        cfgmod.apply(Cfg(), {"lr_schedule": "linear"}, parse_strings=True)
    with pytest.raises(UserError, match="steps must be positive"):
        cfgmod.apply(Cfg(), {"steps": "0"}, parse_strings=True)
    for value in ("nan", ".nan", "inf", "-.inf", "1e999"):
        with pytest.raises(UserError, match="lr: expected a finite number"):
            cfgmod.apply(Cfg(), {"lr": value}, parse_strings=True)
    with pytest.raises(UserError, match="lr must be positive and finite"):
        Cfg(lr=float("nan")).validate()  # built in Python, past the command-line parser
    with pytest.raises(UserError, match="key=value"):
        cfgmod.parse_assignments(["steps5"])


def test_config_yaml_round_trip(tmp_path):
    cfg = cfgmod.apply(Cfg(), {"counts": (2, 4), "grad_clip": 1.5})
    cfgmod.write_yaml(tmp_path / "c.yaml", cfgmod.to_dict(cfg))
    assert cfgmod.from_dict(Cfg, cfgmod.read_yaml(tmp_path / "c.yaml")) == cfg
