"""Runs an experiment: every row of its table for every seed, then the report.

Run folder layout::

    RUN_DIR/
      config.yaml                 resolved config, preset, seeds, row settings (written before training starts)
      rows/ROW/seedS/             one training run: checkpoints/last.ckpt, train.csv, eval.csv, tb/, result.json
      figures/                    PNG figures (sample grids, reconstructions, training curves)
      metrics.json, report.md     rebuilt from the result.json files by ``kdgm report``

A run is trusted only through ``result.json`` files, written atomically after the final evaluation; a killed run
leaves at most a checkpoint behind, from which ``--resume`` continues.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdgm import config as cfgmod
from kdgm.data.loader import BatchLoader
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, Row, TrainConfig
from kdgm.train.checkpoint import BEST, LAST, load_checkpoint
from kdgm.train.fabric import configure_process, make_fabric
from kdgm.train.loop import fit
from kdgm.train.updater import PhasedUpdater, _unwrap

RESULT = "result.json"


@dataclass
class RunRequest:
    """What ``kdgm run`` was asked to do."""

    experiment: str
    preset: str = "quick"
    seeds: int | None = None
    device: str = "auto"
    devices: int = 1
    jobs: int = 1
    out: Path | None = None
    resume: bool = False
    overrides: dict[str, str] = field(default_factory=dict)
    progress_bar: bool | None = None


def slug(name: str) -> str:
    """A folder name for a row label (``"VAE (IWAE, k=5)"`` → ``"vae-iwae-k-5"``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def row_config(experiment: Experiment, base: TrainConfig, row: Row) -> TrainConfig:
    """The config of one row: the base config with the row's defining settings applied."""
    return cfgmod.apply(base, row.settings)


def resolve(request: RunRequest) -> tuple[Experiment, TrainConfig, list[int]]:
    """Check every part of the request (experiment, preset, keys, types, data) without writing anything."""
    from kdgm.experiments import EXPERIMENTS

    experiment = EXPERIMENTS[request.experiment]
    if request.preset not in experiment.presets:
        raise UserError(
            f"unknown preset {request.preset!r} for {experiment.name} (known: {', '.join(experiment.presets)})"
        )
    preset = experiment.presets[request.preset]
    config = cfgmod.apply(experiment.config_class(), preset.values)
    config = cfgmod.apply(config, request.overrides, parse_strings=True)
    n_seeds = preset.seeds if request.seeds is None else request.seeds
    if n_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {n_seeds}")
    for row in experiment.rows:
        row_config(experiment, config, row)
    experiment.check(config)
    return experiment, config, list(range(n_seeds))


def _config_record(experiment: Experiment, preset: str, config: TrainConfig, seeds: list[int]) -> dict[str, Any]:
    return {
        "experiment": experiment.name,
        "preset": preset,
        "seeds": seeds,
        "config": cfgmod.to_dict(config),
        "rows": {row.name: dict(row.settings) for row in experiment.rows},
    }


def prepare_folder(request: RunRequest, record: dict[str, Any]) -> Path:
    """Create (or, with ``--resume``, check) the run folder and write ``config.yaml``."""
    run_dir = Path(request.out or Path("runs") / f"{record['experiment']}-{record['preset']}")
    config_path = run_dir / "config.yaml"
    if request.resume:
        if not config_path.exists():
            raise UserError(f"nothing to resume in {run_dir} (no config.yaml); run without --resume to start it")
        saved = cfgmod.read_yaml(config_path)
        for key in ("experiment", "preset", "config", "rows"):
            if saved.get(key) != record[key]:
                raise UserError(
                    f"{run_dir} was started with a different {key}; resume with the same options or use a new --out"
                )
    elif config_path.exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --out DIR for a new one")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfgmod.write_yaml(config_path, record)
    return run_dir


def train_one(fabric, experiment: Experiment, config: TrainConfig, seed: int, folder: Path, *,
              figures_dir: Path | None = None, progress_bar: bool | None = None, desc: str = "train") -> dict[str, Any]:
    """The flow for one row and one seed: data → model → phases → fit → metrics (→ figures)."""
    configure_process(fabric, seed, config.deterministic)
    train, test = experiment.data(config)
    model = experiment.build_model(config)
    updater = PhasedUpdater(model, experiment.phases(config, model))
    loader = BatchLoader(train, config.batch_size, seed=seed, rank=fabric.global_rank, world_size=fabric.world_size)
    raw = model  # evaluation bypasses the DDP wrapper: every rank evaluates the same full test set

    def evaluate() -> dict[str, float]:
        raw.eval()
        with torch.no_grad():
            metrics = experiment.evaluate(config, raw, test, final=False)
        raw.train()
        return metrics

    result = fit(
        fabric, updater, loader, max_steps=config.steps, folder=folder,
        evaluate=evaluate if config.eval_every else None, eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every, log_every=config.log_every, select=config.select,
        tensorboard=config.tensorboard, desc=desc, progress_bar=progress_bar,
    )
    best = folder / "checkpoints" / BEST
    if config.select and best.exists():  # model selection: evaluate the weights that did best on dev
        _unwrap(raw).load_state_dict(load_checkpoint(best)["model"])
    raw.eval()
    with torch.no_grad():
        metrics = experiment.evaluate(config, raw, test, final=True)
    if figures_dir is not None and fabric.global_rank == 0:
        figures_dir.mkdir(parents=True, exist_ok=True)
        experiment.figures(config, raw, test, figures_dir)
    return {"seed": seed, "steps": result.steps, "resumed_from": result.resumed_from,
            "train_seconds": round(result.seconds, 2), "metrics": metrics}


def training_runs(experiment: Experiment, config: TrainConfig | None = None) -> dict[str, Row]:
    """Each training run once, with the first row that names it (rows sharing a run read views of it); with a
    config, only the runs of the rows it makes active."""
    runs: dict[str, Row] = {}
    for row in experiment.rows:
        if config is not None and not experiment.row_active(row, config):
            continue
        first = runs.setdefault(row.run_name, row)
        if first.settings != row.settings:
            raise ValueError(f"rows {first.name!r} and {row.name!r} share run {row.run_name!r} but not its settings")
    return runs


def seed_folder(run_dir: Path, row: Row, seed: int) -> Path:
    return run_dir / "rows" / slug(row.run_name) / f"seed{seed}"


def _pending(experiment: Experiment, config: TrainConfig, seeds: list[int], run_dir: Path) -> list[tuple[Row, int]]:
    """The (row, seed) training runs without a ``result.json`` yet, in table order."""
    return [(row, seed) for row in training_runs(experiment, config).values() for seed in seeds
            if not (seed_folder(run_dir, row, seed) / RESULT).exists()]


def _train_and_record(fabric, experiment: Experiment, config: TrainConfig, row: Row, seed: int, first_seed: int,
                      run_dir: Path, progress_bar: bool | None) -> None:
    folder = seed_folder(run_dir, row, seed)
    figures_dir = run_dir / "figures" / slug(row.run_name) if seed == first_seed else None
    outcome = train_one(fabric, experiment, row_config(experiment, config, row), seed, folder,
                        figures_dir=figures_dir, progress_bar=progress_bar, desc=f"{row.run_name} seed {seed}")
    if fabric.global_rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RESULT, {"run": row.run_name, **outcome})
    fabric.barrier()


def _run_all(fabric, experiment: Experiment, config: TrainConfig, seeds: list[int], run_dir: Path,
             progress_bar: bool | None) -> None:
    for row, seed in _pending(experiment, config, seeds, run_dir):
        _train_and_record(fabric, experiment, config, row, seed, seeds[0], run_dir, progress_bar)


def _run_job(task: tuple) -> None:
    """One (row, seed) run in a worker process of ``--jobs``: its own single-process Fabric and thread share."""
    experiment_name, config, row, seed, first_seed, run_dir, device, threads = task
    from kdgm.experiments import EXPERIMENTS

    torch.set_num_threads(threads)
    fabric = make_fabric(device, 1, config.precision)
    fabric.launch(_train_and_record, EXPERIMENTS[experiment_name], config, row, seed, first_seed, run_dir, False)


def _run_parallel(request: RunRequest, experiment: Experiment, config: TrainConfig, seeds: list[int],
                  run_dir: Path) -> None:
    """Train the pending (row, seed) runs in ``request.jobs`` processes, each with its share of the CPU cores.

    The runs are independent, so this is the cheapest parallelism on a many-core CPU where one small model cannot
    use every core; the results are the same files ``_run_all`` writes, so a killed parallel run resumes either way.
    """
    import multiprocessing

    from tqdm import tqdm

    pending = _pending(experiment, config, seeds, run_dir)
    threads = max(1, (os.cpu_count() or 1) // request.jobs)
    tasks = [(experiment.name, config, row, seed, seeds[0], run_dir, request.device, threads) for row, seed in pending]
    with multiprocessing.get_context("spawn").Pool(min(request.jobs, max(1, len(tasks)))) as pool:
        done = pool.imap_unordered(_run_job, tasks)
        for _ in tqdm(done, total=len(tasks), desc=f"{experiment.name} runs", disable=request.progress_bar is False):
            pass


def run(request: RunRequest) -> Path:
    """Validate, prepare the folder, train every row × seed (on ``--devices`` processes, or ``--jobs`` runs at a
    time), write the report."""
    from kdgm.report.build import build_report

    if request.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {request.jobs}")
    if request.jobs > 1 and request.devices > 1:
        raise UserError("use either --jobs (independent runs side by side) or --devices (one run data-parallel)")
    experiment, config, seeds = resolve(request)
    fabric = make_fabric(request.device, request.devices, config.precision)
    run_dir = prepare_folder(request, _config_record(experiment, request.preset, config, seeds))
    if request.jobs > 1:
        _run_parallel(request, experiment, config, seeds, run_dir.resolve())
    else:
        fabric.launch(_run_all, experiment, config, seeds, run_dir.resolve(), request.progress_bar)
    build_report(run_dir)
    return run_dir


def load_run(run_dir: Path) -> tuple[dict[str, Any], Experiment, TrainConfig]:
    """(``config.yaml`` record, experiment, typed base config) of a run folder."""
    from kdgm.experiments import EXPERIMENTS

    record = read_run_config(run_dir)
    experiment = EXPERIMENTS[record["experiment"]]
    return record, experiment, cfgmod.from_dict(experiment.config_class, record["config"])


def _restore(run_dir: Path, experiment: Experiment, config: TrainConfig, row: Row, seed: int):
    """(row config, model in eval mode) with the weights of ``row``'s last checkpoint for ``seed``."""
    ckpt = seed_folder(run_dir, row, seed) / "checkpoints" / LAST
    if not ckpt.exists():
        raise UserError(f"no checkpoint for row {row.name!r} seed {seed} in {run_dir}; train it with kdgm run first")
    cfg = row_config(experiment, config, row)
    model = experiment.build_model(cfg)
    _unwrap(model).load_state_dict(load_checkpoint(ckpt)["model"])
    return cfg, model.eval()


def load_trained_model(run_dir: Path, row_name: str | None = None, seed: int | None = None):
    """(experiment, row config, model) with the weights of a finished or checkpointed run."""
    run_dir = Path(run_dir)
    record, experiment, config = load_run(run_dir)
    rows = {row.name: row for row in experiment.rows}
    if row_name is not None and row_name not in rows:
        raise UserError(f"unknown row {row_name!r} (rows: {', '.join(rows)})")
    row = rows[row_name] if row_name is not None else experiment.rows[0]
    cfg, model = _restore(run_dir, experiment, config, row, record["seeds"][0] if seed is None else seed)
    return experiment, cfg, model


def redraw_figures(run_dir: Path) -> list[Path]:
    """Draw each training run's model figures again from the first seed's checkpoint (after the figure code
    changed, or for a run whose figures were lost); returns the files written."""
    run_dir = Path(run_dir)
    record, experiment, config = load_run(run_dir)
    seed = record["seeds"][0]
    paths = []
    for row in training_runs(experiment, config).values():
        if not (seed_folder(run_dir, row, seed) / "checkpoints" / LAST).exists():
            continue
        cfg, model = _restore(run_dir, experiment, config, row, seed)
        _, test = experiment.data(cfg)
        with torch.no_grad():
            paths += experiment.figures(cfg, model, test, run_dir / "figures" / slug(row.run_name))
    return paths


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise UserError(f"{run_dir} is not a kdgm run folder (no config.yaml)")
    return cfgmod.read_yaml(path)
