"""The command line as a user meets it: list, run (smoke of every experiment), report, sample, resume after
SIGKILL, DDP on two CPU processes, and every user error as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import kdgm_command, sentiment_data_dir
from kdgm.cli import main
from kdgm.experiments import EXPERIMENTS
from kdgm.experiments.rundir import load_run, slug, training_runs


def check_metrics(run_dir: Path, name: str, preset: str = "smoke") -> dict:
    """metrics.json has the documented shape, with finite numbers for every row and metric."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)
    experiment, config = run.experiment, run.config
    assert experiment is EXPERIMENTS[name]
    paper = experiment.paper_numbers(config)
    assert metrics["experiment"] == name and metrics["preset"] == preset
    active = [row for row in experiment.rows if experiment.row_active(row, config)]
    assert active and set(metrics["rows"]) == {row.name for row in active}
    for row in active:
        measured = 0
        for metric in experiment.metrics:
            entry = metrics["rows"][row.name][metric.key]
            assert set(entry) == {"mean", "std", "per_seed", "paper"}
            assert entry["paper"] == paper[row.name].get(metric.key)
            if entry["per_seed"]:  # a row may not have every metric (a count baseline has no nELBO)
                measured += 1
                assert len(entry["per_seed"]) == len(metrics["seeds"])
                assert math.isfinite(entry["mean"]) and entry["std"] >= 0
        assert measured, f"row {row.name} has no metric"
    report = (run_dir / "report.md").read_text()
    assert all(row.name in report for row in active) and "What differs from the paper" in report
    return metrics


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_smoke_run_of_every_experiment(name, tmp_path, cli_env, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    if EXPERIMENTS[name].needs_data:
        folder = sentiment_data_dir()
        if folder is None:
            pytest.skip(f"{name} needs the {EXPERIMENTS[name].needs_data} data folder: set KDGM_DATA_DIR or put ../shared/data beside the repository")
        monkeypatch.setenv("KDGM_DATA_DIR", str(folder))
    assert main(["run", name, "--preset", "smoke", "--out", str(run_dir), "--device", "cpu"]) == 0
    check_metrics(run_dir, name)
    assert list((run_dir / "figures").rglob("*.png"))
    # report rebuilds identically from the saved results
    before = (run_dir / "metrics.json").read_text()
    (run_dir / "metrics.json").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "metrics.json").read_text() == before
    # model figures redraw from the checkpoints
    model_figures = [p for p in (run_dir / "figures").rglob("*.png") if p.parent != run_dir / "figures"]
    for png in model_figures:
        png.unlink()
    assert main(["report", str(run_dir), "--figures"]) == 0
    assert all(png.exists() for png in model_figures)
    # the periodic evaluation logs exactly the metrics that select may name
    experiment, config = EXPERIMENTS[name], load_run(run_dir).config
    for row in training_runs(experiment, config).values():
        header = (run_dir / "rows" / slug(row.run_name) / "seed0" / "eval.csv")
        if config.eval_every and header.exists():
            assert header.read_text().splitlines()[0].split(",")[1:] == list(experiment.progress_metrics)
    # every diagnostic term the report plots and tabulates is logged by some run (a misspelt term shows nowhere)
    logged = set()
    for row in training_runs(experiment, config).values():
        train_log = run_dir / "rows" / slug(row.run_name) / "seed0" / "train.csv"
        logged |= set(train_log.read_text().splitlines()[0].split(",")) if train_log.exists() else set()
    assert set(experiment.curve_terms) <= logged, set(experiment.curve_terms) - logged
    if experiment.curve_terms:
        assert "## Training diagnostics" in (run_dir / "report.md").read_text()
    # samples, or one line saying the experiment has none
    capsys.readouterr()
    code = main(["sample", str(run_dir), "--n", "4"])
    if experiment.has_samples:
        png, txt = run_dir / "samples.png", run_dir / "samples.txt"
        assert code == 0 and (png.read_bytes()[:4] == b"\x89PNG" if png.exists() else len(txt.read_text().splitlines()) == 4)
    else:
        assert code == 2 and "has no generative samples" in _error_line(capsys)


def test_sample_writes_a_png(tmp_path, cli_env, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(run_dir), "--set", "tensorboard=false"]) == 0
    assert main(["sample", str(run_dir), "--n", "16", "--row", "IWAE (k=5)"]) == 0
    png = run_dir / "samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdgm: error: ")
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "vae-mnsit"], "unknown experiment 'vae-mnsit'; did you mean vae-mnist?"),
        (["run", "vae-mnist", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "vae-mnist", "--set", "stpes=3"], "did you mean steps?"),
        (["run", "vae-mnist", "--set", "steps=three"], "steps: expected an integer"),
        (["run", "vae-mnist", "--set", "steps"], "--set expects key=value"),
        (["run", "vae-mnist", "--seeds", "two"], "--seeds: expected int"),
        (["run", "vae-mnist", "--device", "tpu"], "unknown --device 'tpu'"),
        (["run", "vae-mnist", "--jobs", "0"], "--jobs must be at least 1"),
        (["run", "asr-count", "--set", "box_bounds=[30,20,3]"], "box_bounds needs (c_min, c_max, eps)"),
        (["run", "vae-mnist", "--jobs", "2", "--devices", "2"], "use either --jobs"),
        (["run", "vae-mnist", "--data-dir", "/nonexistent/mnist"], "MNIST folder /nonexistent/mnist does not exist"),
        (["run", "sentiment-but", "--data-dir", "/nonexistent/text"], "sentiment data folder not found"),
        (["runn"], "invalid choice"),
        (["report", "/nonexistent/run"], "not a kdgm run folder"),
        (["sample", "/nonexistent/run"], "not a kdgm run folder"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, message, tmp_path, cli_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_existing_run_and_bad_resume_are_user_errors(tmp_path, cli_env, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(run_dir), "--set", "tensorboard=false"]) == 0
    capsys.readouterr()
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(run_dir)]) == 2
    assert "already holds a run" in _error_line(capsys)
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(run_dir), "--resume", "--set", "steps=7"]) == 2
    assert "started with different options (steps: 20 -> 7" in _error_line(capsys)
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in _error_line(capsys)
    # a corrupt checkpoint of an unfinished run
    seed_dir = run_dir / "rows" / slug("IWAE (k=5)") / "seed0"
    (seed_dir / "result.json").unlink()
    (seed_dir / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
    assert main(["run", "vae-mnist", "--preset", "smoke", "--out", str(run_dir), "--resume", "--set", "tensorboard=false"]) == 2
    assert "is corrupt" in _error_line(capsys)
    assert not (seed_dir / "result.json").exists()


@pytest.mark.slow
def test_console_exit_code_and_stderr(tmp_path, cli_env):
    proc = subprocess.run(kdgm_command("run", "nope"), capture_output=True, text=True, env=cli_env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["kdgm: error: unknown experiment 'nope' (known: " + ", ".join(EXPERIMENTS) + ")"]


def _killed_and_resumed(run_dir: Path, args: list[str], env) -> Path:
    """Start ``kdgm run args``, SIGKILL it once its first checkpoint is on disk, resume it; the killed row's seed0."""
    proc = subprocess.Popen(kdgm_command(*args, "--out", str(run_dir)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt = run_dir / "rows" / slug("VAE (ELBO)") / "seed0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()
    assert not (run_dir / "metrics.json").exists()
    resumed = subprocess.run(kdgm_command(*args, "--out", str(run_dir), "--resume"), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return ckpt.parent.parent


def _same_results(a: Path, b: Path, rows: tuple[str, ...]) -> None:
    for row in rows:
        first, second = (json.loads((folder / "rows" / slug(row) / "seed0" / "result.json").read_text())["metrics"]
                         for folder in (a, b))
        assert first == second, row  # exactly equal, not approximately


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    args = ["run", "vae-mnist", "--preset", "smoke", "--device", "cpu", "--set", "steps=400",
            "--set", "checkpoint_every=25", "--set", "eval_every=100", "--set", "tensorboard=false"]
    seed_dir = _killed_and_resumed(run_dir, args, cli_env)
    result = json.loads((seed_dir / "result.json").read_text())
    assert result["steps"] == 400 and result["resumed_from"] >= 25
    straight = subprocess.run(kdgm_command(*args, "--out", str(tmp_path / "straight")), env=cli_env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    _same_results(run_dir, tmp_path / "straight", ("VAE (ELBO)", "IWAE (k=5)"))
    eval_log = (seed_dir / "eval.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in eval_log[1:]] == ["100", "200", "300", "400"]  # each step logged once
    check_metrics(run_dir, "vae-mnist")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_resumes_exactly(tmp_path, cli_env):
    """Two data-parallel CPU processes train; killed and resumed, they reach the uninterrupted run's numbers (rank 1
    restarts its noise from (rank, step) at every checkpoint, which a resumed run repeats)."""
    args = ["run", "vae-mnist", "--preset", "smoke", "--device", "cpu", "--devices", "2", "--set", "steps=150",
            "--set", "checkpoint_every=25", "--set", "tensorboard=false"]
    proc = subprocess.run(kdgm_command(*args, "--out", str(tmp_path / "straight")), env=cli_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = check_metrics(tmp_path / "straight", "vae-mnist")
    log = (tmp_path / "straight" / "rows" / slug("VAE (ELBO)") / "seed0" / "train.csv").read_text().splitlines()
    assert log[-1].startswith("150,")
    assert metrics["rows"]["VAE (ELBO)"]["nll"]["mean"] < 550  # trained, not NaN
    seed_dir = _killed_and_resumed(tmp_path / "run", args, cli_env)
    assert json.loads((seed_dir / "result.json").read_text())["resumed_from"] >= 25
    _same_results(tmp_path / "run", tmp_path / "straight", ("VAE (ELBO)",))


@pytest.mark.slow
def test_jobs_train_every_row_and_seed_in_parallel_processes(tmp_path, cli_env):
    """--jobs 2 trains the independent row x seed runs side by side and reaches what the serial run reaches."""
    runs = {}
    for jobs in (1, 2):
        run_dir = tmp_path / f"jobs{jobs}"
        proc = subprocess.run(
            kdgm_command("run", "vae-mnist", "--preset", "smoke", "--seeds", "2", "--jobs", str(jobs),
                         "--out", str(run_dir), "--set", "deterministic=true"),
            env=cli_env, capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[jobs] = check_metrics(run_dir, "vae-mnist")
    for row, metrics in runs[1]["rows"].items():
        for key, entry in metrics.items():
            assert runs[2]["rows"][row][key]["per_seed"] == pytest.approx(entry["per_seed"], rel=1e-3), (row, key)


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker processes")
def test_jobs_workers_die_with_a_killed_run(tmp_path, cli_env):
    """A SIGKILLed `kdgm run --jobs 2` leaves no worker training into the folder that a --resume would use."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(kdgm_command("run", "vae-mnist", "--preset", "smoke", "--seeds", "2", "--jobs", "2",
                                         "--set", "steps=5000", "--out", str(run_dir)),
                            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(run_dir.glob("rows/*/seed*/train.csv")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "no worker started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers) \
            and time.time() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]
    for pid in alive:  # leave the machine clean whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not alive


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "zombie"
