"""The training loop and its plumbing: loader order and shards, atomic and pickle-free checkpoints, exact resume,
configs and overrides."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import pytest
import torch

from kdgm import config as cfgmod
from kdgm.data.batch import ImageBatch
from kdgm.data.loader import BatchLoader
from kdgm.errors import UserError
from kdgm.experiments.base import TrainConfig
from kdgm.models.vae import VAE
from kdgm.objectives.elbo import ELBO
from kdgm.train.checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
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


def _train(folder, max_steps, checkpoint_every=0):
    fabric = make_fabric("cpu")
    torch.manual_seed(0)
    model = VAE(z_dim=4, hidden=(32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(12, 2))
    updater = PhasedUpdater(model, [Phase("main", ELBO(), optimizer, scheduler)])
    loader = BatchLoader(Tiny(40), 8, seed=5)
    result = fit(fabric, updater, loader, max_steps=max_steps, folder=folder, checkpoint_every=checkpoint_every,
                 log_every=1, tensorboard=False, progress_bar=False)
    return model, result


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    straight, _ = _train(tmp_path / "a", 12)
    _train(tmp_path / "b", 7)  # "killed" after 7 steps: its last checkpoint is at step 7
    resumed, result = _train(tmp_path / "b", 12)
    assert result.resumed_from == 7 and result.steps == 12
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    log = read_csv(tmp_path / "b" / "train.csv")
    assert log["step"] == list(map(float, range(1, 13)))


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
    with pytest.raises(UserError, match="steps must be at least 1"):
        cfgmod.apply(Cfg(), {"steps": "0"}, parse_strings=True)
    with pytest.raises(UserError, match="key=value"):
        cfgmod.parse_assignments(["steps5"])


def test_config_yaml_round_trip(tmp_path):
    cfg = cfgmod.apply(Cfg(), {"counts": (2, 4), "grad_clip": 1.5})
    cfgmod.write_yaml(tmp_path / "c.yaml", cfgmod.to_dict(cfg))
    assert cfgmod.from_dict(Cfg, cfgmod.read_yaml(tmp_path / "c.yaml")) == cfg
