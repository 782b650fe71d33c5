"""Runs an experiment: every row of its table for every seed, then the report.

The folder it writes, and how a run is trusted, is :mod:`kdgm.experiments.rundir`: a fresh run needs an empty (or new)
folder, ``--resume`` needs a folder whose record matches the request, and a (row, seed) counts as done only through a
``result.json`` that carries the record's fingerprint, written atomically after the final evaluation. A killed run
leaves at most a checkpoint behind, from which ``--resume`` continues.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdgm import config as cfgmod
from kdgm.data.loader import BatchLoader
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, ExperimentData, Row, TrainConfig
from kdgm.experiments.rundir import (
    FORMAT, IDENTITY, RECORD, RESULT, Run, check_layout, fingerprint, load_run, read_record, row_config, seed_folder,
    slug, training_runs, write_json,
)
from kdgm.train.checkpoint import BEST, LAST, load_checkpoint, load_model_state
from kdgm.train.fabric import accelerator_of, configure_process, make_fabric
from kdgm.train.loop import fit
from kdgm.train.updater import PhasedUpdater, _unwrap

MAX_SEEDS = 1000
# The folder of the run being trained, once its record is written: what an interrupt message can point to.
active_run_dir: Path | None = None


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


def resolve(request: RunRequest) -> tuple[Experiment, TrainConfig, list[int]]:
    """Check every part of the request (experiment, preset, keys, types, data, batch size, ``select``) without
    writing anything."""
    from kdgm.experiments import EXPERIMENTS

    experiment = EXPERIMENTS[request.experiment]
    if request.devices > 1 and not experiment.data_parallel:
        raise UserError(f"{experiment.name} does not train data-parallel yet (its objectives call the model's sample "
                        "and log_prob, which DDP does not synchronise); use --jobs N to train runs side by side")
    if request.preset not in experiment.presets:
        raise UserError(
            f"unknown preset {request.preset!r} for {experiment.name} (known: {', '.join(experiment.presets)})"
        )
    preset = experiment.presets[request.preset]
    config = cfgmod.apply(experiment.config_class(), preset.values)
    config = cfgmod.apply(config, request.overrides, parse_strings=True)
    n_seeds = preset.seeds if request.seeds is None else request.seeds
    if not 1 <= n_seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be between 1 and {MAX_SEEDS}, got {n_seeds}")
    if config.select and config.select not in experiment.progress_metrics:
        known = ", ".join(experiment.progress_metrics) or "none"
        raise UserError(f"select={config.select!r} is not a metric of {experiment.name}'s periodic evaluation "
                        f"(known: {known})")
    for row in experiment.rows:
        row_config(experiment, config, row)  # every row's settings must apply, active or not
    for row in training_runs(experiment, config).values():
        run_config = row_config(experiment, config, row)
        data = experiment.data(run_config, 0)
        per_step = run_config.batch_size * max(request.devices, 1)
        if len(data.train) < per_step:
            raise UserError(f"batch_size={run_config.batch_size} (x {request.devices} devices) is larger than the "
                            f"{len(data.train)} training examples of {row.run_name!r}")
        experiment.check(run_config, data)
    return experiment, config, list(range(n_seeds))


def _threads(request: RunRequest) -> int:
    """Torch threads of each training process: the cores shared among ``--jobs`` or ``--devices`` processes."""
    share = max(request.jobs, request.devices)
    return max(1, (os.cpu_count() or 1) // share) if share > 1 else torch.get_num_threads()


def run_record(request: RunRequest, experiment: Experiment, config: TrainConfig, seeds: list[int]) -> dict[str, Any]:
    """The identity of a run: what ``config.yaml`` holds and ``--resume`` compares.

    The thread count is recorded but not compared: a resumed run uses the recorded one (results depend on it), so a
    run can resume on a machine with another number of cores.
    """
    return {
        "format": FORMAT,
        "experiment": experiment.name,
        "preset": request.preset,
        "seeds": seeds,
        "config": cfgmod.to_dict(config),
        "rows": {row.name: cfgmod.plain(dict(row.settings)) for row in experiment.rows},  # tuples as YAML reads them
        "device": accelerator_of(request.device),
        "devices": request.devices,
        "jobs": request.jobs,
        "threads": _threads(request),
    }


def _differences(saved: dict[str, Any], record: dict[str, Any]) -> str:
    """``key: saved -> requested`` for the identity fields (and config keys) that differ."""
    changes = []
    for key in IDENTITY:
        if key == "config" and isinstance(saved.get(key), dict):
            changes += [f"{k}: {saved[key].get(k)!r} -> {v!r}" for k, v in record[key].items() if saved[key].get(k) != v]
        elif saved.get(key) != record[key]:
            shown = lambda v: f"{len(v)} seeds" if key == "seeds" else repr(v)  # noqa: E731
            changes.append(f"{key}: {shown(saved.get(key))} -> {shown(record[key])}")
    return "; ".join(changes)


def prepare_folder(request: RunRequest, record: dict[str, Any]) -> Path:
    """Create the run folder and write its record, or, with ``--resume``, check that the folder is this run's."""
    run_dir = Path(request.out or Path("runs") / f"{record['experiment']}-{record['preset']}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; give a folder for the run")
    if request.resume:
        saved = read_record(run_dir) if (run_dir / RECORD).exists() else None
        if saved is None:
            raise UserError(f"nothing to resume in {run_dir} (no {RECORD}); run without --resume to start it")
        changed = _differences(saved, record)
        if changed:
            raise UserError(f"{run_dir} was started with different options ({changed}); resume with the same "
                            "options or use a new --out")
        run = load_run(run_dir)
        check_layout(run_dir, run.experiment, run.config, run.seeds)
        return run_dir
    if (run_dir / RECORD).exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --out DIR for a new one")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir} is not empty and holds no kdgm run; give --out a new or empty folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfgmod.write_yaml(run_dir / RECORD, record)
    except OSError as err:
        raise UserError(f"cannot write the run folder {run_dir}: {err.strerror or err}") from None
    return run_dir


def train_one(fabric, experiment: Experiment, config: TrainConfig, seed: int, folder: Path, *,
              identity: str | None = None, resume: bool = False, threads: int | None = None, init: Path | None = None,
              figures_dir: Path | None = None, progress_bar: bool | None = None, desc: str = "train") -> dict[str, Any]:
    """The flow for one row and one seed: data → model → phases → fit → metrics (→ figures).

    Args:
        identity: the run's fingerprint, stored in its checkpoints; a checkpoint with another one is refused.
        resume: continue from ``folder``'s last checkpoint if there is one (a fresh run refuses to find one).
        threads: torch threads of this process (the run's recorded count, so that a resumed run computes alike).
        init: a checkpoint whose model weights this run starts from (fine-tuning a pre-trained run).
    """
    configure_process(fabric, seed, config.deterministic)
    if threads is not None and fabric.device.type == "cpu":
        torch.set_num_threads(threads)
    data = experiment.data(config, seed)
    model = experiment.build_model(config, data)
    if init is not None:  # before the phases: an experiment may build them from the pre-trained model
        if not init.exists():
            raise UserError(f"{init} is missing: the run this one fine-tunes has no final checkpoint")
        load_model_state(model, load_checkpoint(init, identity=identity)["model"], init)
    updater = PhasedUpdater(model, experiment.phases(config, model, data))
    loader = BatchLoader(data.train, config.batch_size, seed=seed, rank=fabric.global_rank, world_size=fabric.world_size)
    raw = model  # evaluation bypasses the DDP wrapper: every rank evaluates the same full test set

    def evaluate() -> dict[str, float]:
        raw.eval()
        with torch.no_grad():
            metrics = experiment.evaluate(config, raw, data.test, final=False)
        raw.train()
        return metrics

    result = fit(
        fabric, updater, loader, max_steps=config.steps, folder=folder, resume=resume, identity=identity,
        evaluate=evaluate if config.eval_every else None, eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every, log_every=config.log_every, select=config.select,
        select_lower=any(m.key == config.select and m.lower_is_better for m in experiment.metrics),
        tensorboard=config.tensorboard, desc=desc, progress_bar=progress_bar,
    )
    best = folder / "checkpoints" / BEST
    if config.select and best.exists():  # model selection: evaluate the weights that did best on dev
        load_model_state(_unwrap(raw), load_checkpoint(best, identity=identity)["model"], best)
    raw.eval()
    with torch.no_grad():
        metrics = experiment.evaluate(config, raw, data.test, final=True)
    if figures_dir is not None and fabric.global_rank == 0:
        figures_dir.mkdir(parents=True, exist_ok=True)
        experiment.figures(config, raw, data.test, figures_dir)
    return {"seed": seed, "steps": result.steps, "resumed_from": result.resumed_from,
            "train_seconds": round(result.seconds, 2), "metrics": metrics}


def _pending(run: Run, rows: list[Row] | None = None) -> list[tuple[Row, int]]:
    """The (row, seed) training runs (of ``rows``, default all) without this run's ``result.json`` yet, in table
    order (a run that others start from comes before them)."""
    rows = list(training_runs(run.experiment, run.config).values()) if rows is None else rows
    return [(row, seed) for row in rows for seed in run.seeds if run.read_result(row, seed) is None]


def final_weights(folder: Path) -> Path:
    """The checkpoint whose weights a run's table line reports: ``best.ckpt`` where the run selected its weights
    on dev (``select``), else ``last.ckpt``. Fine-tuning rows start from it, and ``kdgm sample`` draws from it."""
    best = folder / "checkpoints" / BEST
    return best if best.exists() else folder / "checkpoints" / LAST


def _train_and_record(fabric, run: Run, row: Row, seed: int, resume: bool, progress_bar: bool | None) -> None:
    folder = seed_folder(run.path, row, seed)
    figures_dir = run.path / "figures" / slug(row.run_name) if seed == run.seeds[0] else None
    identity = fingerprint(run.record)
    init = None
    if row.init_from:
        source = training_runs(run.experiment, run.config)[row.init_from]
        init = final_weights(seed_folder(run.path, source, seed))
    outcome = train_one(fabric, run.experiment, row_config(run.experiment, run.config, row), seed, folder,
                        identity=identity, resume=resume, threads=run.record["threads"], init=init,
                        figures_dir=figures_dir,
                        progress_bar=progress_bar, desc=f"{row.run_name} seed {seed}")
    if fabric.global_rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RESULT, {"run": row.run_name, "fingerprint": identity, **outcome})
    fabric.barrier()


def _run_all(fabric, run_dir: Path, resume: bool, progress_bar: bool | None, parent: int | None = None) -> None:
    if parent is not None and parent != os.getpid():  # a DDP rank spawned by ``kdgm run``: it must die with it
        _die_with_parent(parent)
    run = load_run(run_dir)
    for row, seed in _pending(run):
        _train_and_record(fabric, run, row, seed, resume, progress_bar)


def _run_job(task: tuple) -> None:
    """One (row, seed) run in a worker process of ``--jobs``: its own single-process Fabric and thread share."""
    run_dir, row_name, seed, device, resume = task
    run = load_run(run_dir)
    row = next(row for row in run.experiment.rows if row.name == row_name)
    fabric = make_fabric(device, 1, run.config.precision)
    fabric.launch(_train_and_record, run, row, seed, resume, False)


def _die_with_parent(parent: int) -> None:
    """A ``--jobs`` worker or a DDP rank must not outlive a killed ``kdgm run``: it would go on writing into the run
    folder that a ``--resume`` then trains into as well (or finish the row there, so that the resumed run skips it).
    On Linux the kernel kills it with its parent (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _run_parallel(request: RunRequest, run_dir: Path) -> None:
    """Train the pending (row, seed) runs in ``request.jobs`` processes, each with its share of the CPU cores.

    The runs are independent, so this is the cheapest parallelism on a many-core CPU where one small model cannot
    use every core; the results are the same files ``_run_all`` writes, so a killed parallel run resumes either way.
    A fine-tuning run starts as soon as the run it starts from has finished for its seed (not after every seed's).
    """
    import multiprocessing
    import time

    from tqdm import tqdm

    run = load_run(run_dir)
    waiting = _pending(run)
    unfinished = {(row.run_name, seed) for row, seed in waiting}
    running: dict[tuple[str, int], Any] = {}
    processes = min(request.jobs, max(1, len(waiting)))
    with multiprocessing.get_context("spawn").Pool(processes, _die_with_parent, (os.getpid(),)) as pool, \
            tqdm(total=len(waiting), desc=f"{run.experiment.name} runs", disable=request.progress_bar is False) as bar:
        while waiting or running:
            ready = [(row, seed) for row, seed in waiting if (row.init_from, seed) not in unfinished]
            for row, seed in ready:  # queued in table order; the pool starts them as workers free up
                task = (run_dir, row.name, seed, request.device, request.resume)
                running[(row.run_name, seed)] = pool.apply_async(_run_job, (task,))
                waiting.remove((row, seed))
            for key, result in list(running.items()):
                if result.ready():
                    result.get()  # re-raises a worker's error here, as one line through the CLI
                    del running[key]
                    unfinished.discard(key)
                    bar.update(1)
            time.sleep(0.2)
        pool.close()  # let the workers exit on their own: terminating them leaks their semaphores (a warning at exit)
        pool.join()


def run(request: RunRequest) -> Path:
    """Validate, prepare the folder, train every row × seed (on ``--devices`` processes, or ``--jobs`` runs at a
    time), write the report."""
    global active_run_dir
    from kdgm.report.build import build_report

    if request.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {request.jobs}")
    if request.jobs > 1 and request.devices > 1:
        raise UserError("use either --jobs (independent runs side by side) or --devices (one run data-parallel)")
    accelerator_of(request.device)  # an unavailable device is refused before any data is loaded
    experiment, config, seeds = resolve(request)
    fabric = make_fabric(request.device, request.devices, config.precision)
    run_dir = prepare_folder(request, run_record(request, experiment, config, seeds)).resolve()
    active_run_dir = run_dir
    if request.jobs > 1:
        _run_parallel(request, run_dir)
    else:
        fabric.launch(_run_all, run_dir, request.resume, request.progress_bar, os.getpid())
    if fabric.global_rank == 0:
        draw_comparisons(run_dir)
    build_report(run_dir)
    return run_dir


def _restore(run: Run, row: Row, seed: int, data: ExperimentData | None = None
             ) -> tuple[TrainConfig, ExperimentData, torch.nn.Module]:
    """(row config, data, model in eval mode) with the final weights of ``row`` for ``seed``
    (:func:`final_weights`); ``data`` reuses data already loaded for another row of the same seed."""
    ckpt = final_weights(seed_folder(run.path, row, seed))
    if not ckpt.exists():
        raise UserError(f"no checkpoint for row {row.name!r} seed {seed} in {run.path}; train it with kdgm run first")
    cfg = row_config(run.experiment, run.config, row)
    data = run.experiment.data(cfg, seed) if data is None else data
    model = run.experiment.build_model(cfg, data)
    load_model_state(_unwrap(model), load_checkpoint(ckpt, identity=fingerprint(run.record))["model"], ckpt)
    return cfg, data, model.eval()


def load_trained_model(run_dir: Path | str, row_name: str | None = None, seed: int | None = None):
    """(experiment, row config, model) with the weights of a finished or checkpointed run."""
    experiment, cfg, _, model = load_trained(run_dir, row_name, seed)
    return experiment, cfg, model


def load_trained(run_dir: Path | str, row_name: str | None = None, seed: int | None = None):
    """(experiment, row config, data, model): :func:`load_trained_model` with the run's data."""
    run = load_run(Path(run_dir))
    rows = {row.name: row for row in run.experiment.rows}
    if row_name is not None and row_name not in rows:
        raise UserError(f"unknown row {row_name!r} (rows: {', '.join(rows)})")
    if seed is not None and seed not in run.seeds:
        raise UserError(f"seed {seed} is not among the run's seeds {run.seeds}")
    row = rows[row_name] if row_name is not None else run.experiment.rows[0]
    cfg, data, model = _restore(run, row, run.seeds[0] if seed is None else seed)
    return run.experiment, cfg, data, model


def redraw_figures(run_dir: Path) -> list[Path]:
    """Draw each training run's model figures again from the first seed's checkpoint (after the figure code
    changed, or for a run whose figures were lost), then the comparison figures; returns the files written."""
    run = load_run(Path(run_dir))
    keep = _draws_comparisons(run.experiment)  # then each model serves its own figures and the comparison
    paths, models, test = [], {}, None
    for row, cfg, data, model in _first_seed_models(run):
        with torch.no_grad():
            paths += run.experiment.figures(cfg, model, data.test, run.path / "figures" / slug(row.run_name))
        if keep:
            models[row.name], test = model, data.test
    return paths + _comparisons(run, models, test)


def draw_comparisons(run_dir: Path) -> list[Path]:
    """The experiment's figures across rows (:meth:`Experiment.comparison_figures`) from the first seed's
    checkpoints of every trained row; nothing when the experiment draws none or no row has a checkpoint."""
    run = load_run(Path(run_dir))
    if not _draws_comparisons(run.experiment):
        return []
    models, test = {}, None
    for row, _, data, model in _first_seed_models(run, share_data=True):
        models[row.name], test = model, data.test
    return _comparisons(run, models, test)


def _draws_comparisons(experiment: Experiment) -> bool:
    return type(experiment).comparison_figures is not Experiment.comparison_figures


def _first_seed_models(run: Run, share_data: bool = False):
    """(row, row config, data, model) of every training run with a checkpoint for the first seed; ``share_data``
    loads the data once for all rows (the comparison figures' experiments: rows that differ only by method)."""
    seed, data = run.seeds[0], None
    for row in training_runs(run.experiment, run.config).values():
        if (seed_folder(run.path, row, seed) / "checkpoints" / LAST).exists():
            cfg, data, model = _restore(run, row, seed, data if share_data else None)
            yield row, cfg, data, model


def _comparisons(run: Run, models: dict[str, torch.nn.Module], test: Any) -> list[Path]:
    if not models or not _draws_comparisons(run.experiment):
        return []
    with torch.no_grad():
        return run.experiment.comparison_figures(models, test, run.path / "figures")
