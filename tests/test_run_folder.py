"""A run folder is the unit of trust: bad requests, leftovers, foreign files, non-finite training, full disks and
interrupts each end in one line on stderr with exit code 2 (1 for a bug), and nothing a later run would trust is
written."""

from __future__ import annotations

import errno
import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import sentiment_data_dir
from kdgm import cache
from kdgm import config as cfgmod
from kdgm.cli import main
from kdgm.experiments import EXPERIMENTS, runner
from kdgm.experiments.base import Row
from kdgm.experiments.rundir import slug
from kdgm.experiments.vae_mnist import VAEMnist
from kdgm.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint

SMOKE = ["run", "vae-mnist", "--preset", "smoke", "--set", "tensorboard=false"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what "nothing written" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdgm: error: ")
    return err


def refused(args: list[str], message: str, capsys, folder: Path, code: int = 2) -> str:
    """Run ``kdgm ARGS`` and check: exit ``code``, one line containing ``message``, ``folder`` unchanged."""
    before = snapshot(folder)
    assert main(args) == code
    line = error_line(capsys)
    assert message in line, line
    assert snapshot(folder) == before
    return line


@pytest.fixture
def finished_run(tmp_path, cli_env, capsys) -> Path:
    run_dir = tmp_path / "run"
    assert main([*SMOKE, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    return run_dir


def _leftovers(folder: Path, kind: str) -> None:
    seed = folder / "rows" / "vae-elbo" / "seed0"
    seed.mkdir(parents=True)
    if kind == "checkpoint":
        save_checkpoint({"step": 5, "model": {}, "rng": {}}, seed / "checkpoints")
    elif kind == "results":
        (seed / "result.json").write_text(json.dumps({"metrics": {"nll": 1.0}}))
    else:
        (folder / "report.md").write_text("my own notes")


@pytest.mark.parametrize("kind", ["checkpoint", "results", "user files"])
def test_a_fresh_run_refuses_a_folder_with_leftovers(kind, tmp_path, cli_env, capsys):
    folder = tmp_path / "old"
    _leftovers(folder, kind)
    refused([*SMOKE, "--out", str(folder)], "is not empty and holds no kdgm run", capsys, tmp_path)


def test_out_that_is_a_file_or_cannot_be_written(tmp_path, cli_env, capsys):
    (tmp_path / "a-file").write_text("x")
    refused([*SMOKE, "--out", str(tmp_path / "a-file")], "is a file", capsys, tmp_path)
    refused([*SMOKE, "--out", "/proc/kdgm-run"], "cannot write the run folder /proc/kdgm-run", capsys, tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "lr=nan"], "lr: expected a finite number, got 'nan'"),
        (["--set", "lr=inf"], "lr: expected a finite number"),
        (["--set", "batch_size=70000"], "batch_size=70000 (x 1 devices) is larger than the 60000 training examples"),
        (["--set", "select=accuracy", "--set", "eval_every=5"], "select='accuracy' is not a metric of vae-mnist"),
        (["--set", "hidden=[0]"], "hidden must be positive and finite, got [0]"),
        (["--seeds", "1000000000"], "--seeds must be between 1 and 1000"),
        (["--device", "mps"], "--device mps was asked for but no Apple GPU"),
    ],
)
def test_bad_requests_write_nothing(args, message, tmp_path, cli_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused([*SMOKE, *args], message, capsys, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_sentiment_config_errors_write_nothing(tmp_path, cli_env, capsys, monkeypatch):
    folder = sentiment_data_dir()
    if folder is None:
        pytest.skip("needs the sentiment data folder: set KDGM_DATA_DIR or put ../shared/data beside the repository")
    monkeypatch.chdir(tmp_path)
    base = ["run", "sentiment-but", "--preset", "smoke", "--data-dir", str(folder)]
    refused([*base, "--set", "train_examples=-5"], "train_examples must be >= 0", capsys, tmp_path)
    refused([*base, "--set", "train_examples=20"], "larger than the 20 training examples", capsys, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_other_options_foreign_files_and_foreign_results(finished_run, capsys):
    run_dir = finished_run
    resume = [*SMOKE, "--out", str(run_dir), "--resume"]
    refused([*resume, "--jobs", "2"], "started with different options (jobs: 1 -> 2)", capsys, run_dir)
    refused([*resume, "--seeds", "3"], "(seeds: 1 seeds -> 3 seeds)", capsys, run_dir)
    (run_dir / "notes.txt").write_text("mine")
    refused(resume, "holds notes.txt, which a kdgm run does not write", capsys, run_dir)
    (run_dir / "notes.txt").unlink()
    stray = run_dir / "rows" / "some-other-row" / "seed0"
    stray.mkdir(parents=True)
    refused(resume, "holds rows/some-other-row, a training run this experiment's config does not have", capsys, run_dir)
    stray.parent.rename(run_dir / "rows" / "vae-elbo" / "seed7")
    refused(resume, "a seed outside this run's seeds [0]", capsys, run_dir)
    shutil.rmtree(run_dir / "rows" / "vae-elbo" / "seed7")
    result = run_dir / "rows" / slug("VAE (ELBO)") / "seed0" / "result.json"
    data = json.loads(result.read_text())
    result.write_text(json.dumps({**data, "fingerprint": "0" * 16}))
    refused(resume, "result.json was not written by this run", capsys, run_dir)
    result.write_text(json.dumps(data))
    assert main(resume) == 0  # the folder is its own again: nothing left to train


def test_resume_finishes_a_run_whose_results_were_removed(finished_run, capsys):
    seed = finished_run / "rows" / slug("VAE (ELBO)") / "seed0"
    (seed / "result.json").unlink()
    assert main([*SMOKE, "--out", str(finished_run), "--resume"]) == 0
    assert json.loads((seed / "result.json").read_text())["resumed_from"] == 20  # the final checkpoint, reused


def test_non_finite_training_is_one_line_and_saves_nothing_non_finite(tmp_path, cli_env, capsys):
    run_dir = tmp_path / "run"
    assert main([*SMOKE, "--out", str(run_dir), "--set", "lr=1e6", "--set", "checkpoint_every=1"]) == 2
    line = error_line(capsys)
    assert "training went non-finite at step" in line and "Lower lr" in line
    for ckpt in run_dir.rglob(LAST):
        assert all(torch.isfinite(t).all() for t in load_checkpoint(ckpt)["model"].values())
    assert not list(run_dir.rglob("result.json"))


def test_a_bug_inside_training_is_one_line_with_exit_code_1(tmp_path, cli_env, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("shapes do not\nmatch")

    monkeypatch.setattr(VAEMnist, "evaluate", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback file goes to the test's folder
    assert main([*SMOKE, "--out", str(tmp_path / "run")]) == 1
    line = error_line(capsys)
    assert "internal error RuntimeError: shapes do not match (traceback in " in line
    assert "RuntimeError" in Path(line.split("traceback in ")[1].split(";")[0]).read_text()


def test_interrupt_says_whether_there_is_anything_to_resume(tmp_path, cli_env, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "active_run_dir", None)
    monkeypatch.setattr(runner, "resolve", interrupt)
    assert main([*SMOKE, "--out", str(tmp_path / "a")]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(runner, "active_run_dir", None)
    monkeypatch.setattr(runner, "_run_all", interrupt)
    assert main([*SMOKE, "--out", str(tmp_path / "b")]) == 130
    assert "--resume (run folder " in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*SMOKE, "--out", str(tmp_path / "b"), "--resume"]) == 0


def test_sample_out_that_cannot_be_a_png(finished_run, tmp_path, capsys):
    refused(["sample", str(finished_run), "--out", str(tmp_path)], "must be a .png (images) or .txt", capsys, tmp_path)
    refused(["sample", str(finished_run), "--out", str(tmp_path / "s.txt")], "samples are images; give a .png path",
            capsys, tmp_path)
    refused(["sample", str(finished_run), "--out", str(tmp_path / "no" / "such.png")], "does not exist", capsys,
            tmp_path)
    refused(["sample", str(finished_run), "--row", "IWAE"], "unknown row 'IWAE'", capsys, tmp_path)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"step": 1, "model": {"w": torch.ones(2)}}, tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(Exception, match="cannot write checkpoint .*No space left on device; the previous checkpoint"):
        save_checkpoint({"step": 2, "model": {"w": torch.zeros(2)}}, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / LAST)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temporary file left behind


def test_a_truncated_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("KDGM_CACHE_DIR", str(tmp_path))
    built = cache.cached_arrays("entry", lambda: {"a": torch.arange(5).numpy()})
    path = tmp_path / "entry.npz"
    path.write_bytes(path.read_bytes()[:40])  # a write cut short
    again = cache.cached_arrays("entry", lambda: {"a": torch.arange(5).numpy()})
    assert (again["a"] == built["a"]).all()
    assert (cache.cached_arrays("entry", lambda: pytest.fail("rebuilt twice"))["a"] == built["a"]).all()


class _FineTuned(VAEMnist):
    """vae-mnist with a fine-tuning row that starts from the first row's weights (and barely moves them)."""

    name = "vae-finetune-test"
    rows = (Row("pre", {"objective": "elbo", "k": 1}), Row("fine", {"objective": "iwae", "k": 2, "lr": 1e-12},
                                                           init_from="pre"))


def test_a_fine_tuning_row_starts_from_its_base_run_of_the_same_seed(tmp_path, cli_env, capsys):
    if _FineTuned.name not in EXPERIMENTS:
        EXPERIMENTS.register(_FineTuned.name, _FineTuned())
    run_dir = tmp_path / "run"
    assert main(["run", _FineTuned.name, "--preset", "smoke", "--seeds", "2", "--out", str(run_dir),
                 "--set", "tensorboard=false"]) == 0
    def weights(row: str, seed: int) -> dict[str, torch.Tensor]:
        return load_checkpoint(run_dir / "rows" / row / f"seed{seed}" / "checkpoints" / LAST)["model"]

    for seed in (0, 1):  # each seed's fine-tuning starts from (and, at lr 1e-12, stays at) that seed's base
        pre, fine = weights("pre", seed), weights("fine", seed)
        for key in pre:
            torch.testing.assert_close(fine[key], pre[key], msg=key)
    first = "encoder.1.0.weight"
    assert not torch.equal(weights("pre", 0)[first], weights("pre", 1)[first])


def test_a_fine_tuning_row_starts_from_the_dev_selected_weights_of_its_base(tmp_path, cli_env, capsys):
    """Where the base run selected its weights on dev (best.ckpt), the fine-tuning row starts from those, the
    weights the base row's line of the table reports, not from its last step."""
    if _FineTuned.name not in EXPERIMENTS:
        EXPERIMENTS.register(_FineTuned.name, _FineTuned())
    run_dir = tmp_path / "run"
    args = ["run", _FineTuned.name, "--preset", "smoke", "--seeds", "1", "--out", str(run_dir),
            "--set", "tensorboard=false"]
    assert main(args) == 0
    pre, fine = run_dir / "rows" / "pre" / "seed0", run_dir / "rows" / "fine" / "seed0"
    last = load_checkpoint(pre / "checkpoints" / LAST)
    selected = {key: value * 0.9 if value.is_floating_point() else value  # weights unlike the last step's
                for key, value in last["model"].items()}
    save_checkpoint({"step": 1, "value": 0.0, "model": selected, "identity": last["identity"]},
                    pre / "checkpoints", BEST)
    shutil.rmtree(fine)  # train the fine-tuning row again, from the selected weights
    assert main(args + ["--resume"]) == 0
    tuned = load_checkpoint(fine / "checkpoints" / LAST)["model"]
    for key in selected:  # lr 1e-12: the fine-tuning row stays where it started
        torch.testing.assert_close(tuned[key], selected[key], msg=key)


def test_the_report_names_what_was_set_beyond_the_preset_and_its_command_reproduces_the_run(tmp_path, cli_env):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(SMOKE + ["--set", "lr=0.002", "--set", "hidden=[24]", "--out", str(first)]) == 0
    report = (first / "report.md").read_text()
    assert "- Set beyond the preset: `lr=0.002`, `tensorboard=false`, `hidden=[24]`." in report
    command = re.search(r"Reproduce: `kdgm (.*)`\.", report).group(1)
    assert main(shlex.split(command) + ["--out", str(again)]) == 0
    assert cfgmod.read_yaml(again / "config.yaml") == cfgmod.read_yaml(first / "config.yaml")


def test_experiments_that_cannot_train_data_parallel_say_so(tmp_path, cli_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["run", "template-infill", "--devices", "2"], "does not train data-parallel yet", capsys, tmp_path)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiments_run_record_reads_back_equal(name, tmp_path):
    """--resume compares the saved record with a new one: row settings with tuples (asr-count's) must survive YAML,
    or the run could never be resumed."""
    from kdgm import config as cfgmod

    experiment = EXPERIMENTS[name]
    config = experiment.presets["smoke"]
    record = runner.run_record(runner.RunRequest(name, "smoke"), experiment, config, [0])
    cfgmod.write_yaml(tmp_path / "config.yaml", record)
    assert cfgmod.read_yaml(tmp_path / "config.yaml") == record


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("gan-mnist", ["--set", "eval_samples=20000"], "eval_samples and progress_samples must be at most 10000"),
        ("gan-mnist", ["--set", "beta1=1"], "beta1 and beta2 must be below 1"),
        ("gan-mnist", ["--set", "constraint=fixed"], "the class constraint needs a class-conditional generator"),
        ("gan-mnist", ["--set", "loss=dual"], "loss"),
        ("flows-mnist", ["--set", "pr_weight=-1"], "pr_weight must be"),
        ("flows-mnist", ["--set", "pr_samples=0"], "pr_samples"),
        ("flows-mnist", ["--set", "levels=3"], "glow on 28x28 images takes at most 2 levels"),
    ],
)
def test_experiment_config_errors_write_nothing(name, args, message, tmp_path, cli_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["run", name, "--preset", "smoke", *args], message, capsys, tmp_path)
    assert not (tmp_path / "runs").exists()
