"""The run folder: its layout, its identity, and the only ways kdgm reads one back.

Layout::

    RUN_DIR/
      config.yaml                 the identity: experiment, preset, resolved config, seeds, rows, device, devices,
                                  jobs (written before training starts; a resumed run must match it), and the
                                  thread count (a resumed run takes it)
      rows/RUN/seedS/             one training run: checkpoints/last.ckpt, train.csv, eval.csv, tb/, result.json
      figures/                    PNG figures (sample grids, reconstructions, training curves)
      metrics.json, report.md     rebuilt from the result.json files by ``kdgm report``
      samples.png, samples.txt    written by ``kdgm sample``

A run folder is the unit of trust (``DESIGN.md``): ``config.yaml`` records what produced it, every ``result.json``
and checkpoint carries the fingerprint of that record, and an entry the record does not explain is never loaded —
:func:`check_layout` refuses a folder that holds one. Both the runner (which writes folders) and the report (which
reads them) go through this module, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdgm import config as cfgmod
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, Row, TrainConfig

RECORD = "config.yaml"
RESULT = "result.json"
FORMAT = 2  # version of the record; folders of another version are refused with a clear line
# What a run writes at the top of its folder, besides rows/ and figures/.
TOP_FILES = {RECORD, "metrics.json", "report.md", "samples.png", "samples.txt"}
SEED_FILES = {"checkpoints", "train.csv", "eval.csv", "tb", RESULT}
# The fields of the record that make two runs the same run; a resumed run must match every one.
# The thread count is recorded beside them but not compared: a resumed run takes the recorded one instead.
IDENTITY = ("format", "experiment", "preset", "seeds", "config", "rows", "device", "devices", "jobs")


def slug(name: str) -> str:
    """A folder name for a row label (``"VAE (IWAE, k=5)"`` → ``"vae-iwae-k-5"``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename); no temporary file survives a failed write."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fingerprint(record: dict[str, Any]) -> str:
    """A short hash of the identity fields of a record: result files and checkpoints carry it."""
    identity = {key: record.get(key) for key in IDENTITY}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_runs(experiment: Experiment, config: TrainConfig | None = None) -> dict[str, Row]:
    """Each training run once, with the first row that names it (rows sharing a run read views of it); with a
    config, only the runs of the rows it makes active."""
    runs: dict[str, Row] = {}
    for row in experiment.rows:
        if config is not None and not experiment.row_active(row, config):
            continue
        if row.init_from and row.init_from not in runs:
            raise ValueError(f"row {row.name!r} starts from run {row.init_from!r}, which is not an earlier active run")
        first = runs.setdefault(row.run_name, row)
        if (first.settings, first.init_from) != (row.settings, row.init_from):
            raise ValueError(f"rows {first.name!r} and {row.name!r} share run {row.run_name!r} but not its settings")
    return runs


def row_config(experiment: Experiment, base: TrainConfig, row: Row) -> TrainConfig:
    """The config of one row: the base config with the row's defining settings applied, then the experiment's
    :meth:`~kdgm.experiments.base.Experiment.run_config` (e.g. fine-tuning rows' own step count)."""
    return experiment.run_config(cfgmod.apply(base, row.settings))


def seed_folder(run_dir: Path, row: Row, seed: int) -> Path:
    return Path(run_dir) / "rows" / slug(row.run_name) / f"seed{seed}"


def read_record(run_dir: Path) -> dict[str, Any]:
    """The ``config.yaml`` record of a run folder; a folder without one is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a kdgm run folder (no such folder)")
    path = run_dir / RECORD
    if not path.is_file():
        raise UserError(f"{run_dir} is not a kdgm run folder (no {RECORD})")
    record = cfgmod.read_yaml(path)
    missing = [key for key in (*IDENTITY, "threads") if key not in record]
    if missing:
        raise UserError(f"{path} was written by another kdgm version (no {', '.join(missing)}); "
                        "rerun the experiment into a new folder")
    return record


@dataclass
class Run:
    """A run folder read back: its record, its experiment and its typed base config."""

    path: Path
    record: dict[str, Any]
    experiment: Experiment
    config: TrainConfig

    @property
    def seeds(self) -> list[int]:
        return list(self.record["seeds"])

    def read_result(self, row: Row, seed: int) -> dict[str, Any] | None:
        """The finished result of (row, seed), or None when that run has not finished."""
        return read_result(seed_folder(self.path, row, seed) / RESULT, fingerprint(self.record))


def load_run(run_dir: Path) -> Run:
    """Read a run folder's record and rebuild its experiment and config (the only way kdgm opens a run)."""
    from kdgm.experiments import EXPERIMENTS

    record = read_record(run_dir)
    experiment = EXPERIMENTS[record["experiment"]]
    return Run(Path(run_dir), record, experiment, cfgmod.from_dict(experiment.config_class, record["config"]))


def read_result(path: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """A ``result.json`` that this run wrote, or None if absent; a foreign or damaged one is refused."""
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path} is corrupt ({type(err).__name__}); delete it and run kdgm run --resume") from None
    if not isinstance(result, dict) or result.get("fingerprint") != expected_fingerprint:
        raise UserError(f"{path} was not written by this run (its fingerprint differs); delete it, or the folder")
    return result


def check_layout(run_dir: Path, experiment: Experiment, config: TrainConfig, seeds: list[int]) -> None:
    """Refuse a run folder that holds an entry the run's record does not explain (a file the user put there, a
    row or seed of another run); remove the temporary files of writes that a kill interrupted."""
    run_dir = Path(run_dir)
    runs = {slug(name) for name in training_runs(experiment, config)}
    seed_names = {f"seed{seed}" for seed in seeds}

    def refuse(path: Path, why: str) -> None:
        raise UserError(f"{run_dir} holds {path.relative_to(run_dir)}, {why}; move it away or use a new --out")

    for path in run_dir.iterdir():
        if path.name.endswith(".tmp") and path.name.startswith("."):
            path.unlink()  # an atomic write cut short: never read, safe to drop
        elif path.name in ("rows", "figures"):
            if not path.is_dir():
                refuse(path, "which should be a folder")
        elif path.name not in TOP_FILES:
            refuse(path, "which a kdgm run does not write")
    rows = run_dir / "rows"
    for run in sorted(rows.iterdir()) if rows.is_dir() else []:
        if run.name not in runs:
            refuse(run, "a training run this experiment's config does not have")
        for seed in sorted(run.iterdir()):
            if seed.name not in seed_names:
                refuse(seed, f"a seed outside this run's seeds {seeds}")
            for entry in seed.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    entry.unlink()
                elif entry.name not in SEED_FILES:
                    refuse(entry, "which a kdgm training run does not write")
