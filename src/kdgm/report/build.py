"""``metrics.json`` and ``report.md`` of a run folder, rebuilt from its per-seed ``result.json`` files.

``metrics.json`` has the shape other tools compare runs by::

    {"experiment": NAME, "preset": P, "seeds": [...],
     "rows": {ROW: {METRIC: {"mean": m, "std": s, "per_seed": [...], "paper": p_or_null}}}}

``std`` is the sample standard deviation over seeds (0 with a single seed).
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path
from typing import Any

from kdgm import config as cfgmod
from kdgm.experiments.rundir import Run, load_run, seed_folder, slug, training_runs, write_json
from kdgm.report.diagnostics import training_diagnostics
from kdgm.report.figures import plot_curves
from kdgm.train.logs import read_csv


def collect(run: Run) -> dict[str, Any]:
    """Aggregate every finished (row, seed) of a run folder into the ``metrics.json`` structure."""
    experiment, config, record = run.experiment, run.config, run.record
    paper = experiment.paper_numbers(config)
    rows: dict[str, Any] = {}
    for row in experiment.rows:
        if not experiment.row_active(row, config):
            continue
        results = [result for seed in run.seeds if (result := run.read_result(row, seed)) is not None]
        rows[row.name] = {}
        for metric in experiment.metrics:
            key = row.metric_key(metric.key)
            values = [r["metrics"][key] for r in results if key in r["metrics"]]
            rows[row.name][metric.key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
                "per_seed": values,
                "paper": paper[row.name].get(metric.key),
            }
    return {"experiment": experiment.name, "preset": record["preset"], "seeds": record["seeds"], "rows": rows}


def _cell(value: float | None, std: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"


def _curves(run_dir: Path, experiment, config, seed: int) -> list[Path]:
    """Training loss, the experiment's diagnostic training terms (``curve_terms``) and evaluation curves of the
    first seed of every training run: one figure per quantity, every run on it."""
    curves: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = {}  # (kind, key) -> run -> curve
    for name, row in training_runs(experiment, config).items():
        folder = seed_folder(run_dir, row, seed)
        log = read_csv(folder / "train.csv")
        for key in ("loss", *experiment.curve_terms):
            if key in log:
                curves.setdefault(("training", key), {})[name] = (log["step"], log[key])
        log = read_csv(folder / "eval.csv")
        for key in (k for k in log if k != "step"):
            curves.setdefault(("evaluation", key), {})[name] = (log["step"], log[key])
    paths = []
    for (kind, key), runs in curves.items():
        title = f"training {key}" if kind == "training" else f"held-out {key}"
        paths.append(plot_curves(runs, run_dir / "figures" / f"{kind}_{slug(key)}.png", title, experiment.name))
    return paths


def set_beyond_preset(run: Run) -> dict[str, Any]:
    """The config values a run changed from its preset (``--set``), without the data folder (where the data lies on
    this machine, not what was computed): the report names them, so that its command reproduces the run."""
    preset = run.experiment.presets.get(run.record["preset"])
    if preset is None:
        return {}
    expected = cfgmod.to_dict(cfgmod.apply(run.experiment.config_class(), preset.values))
    return {key: value for key, value in run.record["config"].items()
            if key != "data_dir" and expected.get(key) != value}


def _assignment(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` parses it back (lists and booleans as JSON, which YAML reads)."""
    shown = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={shown}"


def render(run: Run, metrics: dict[str, Any]) -> str:
    """The Markdown report: the paper-style table, the set-up differences, the figures."""
    run_dir, record, experiment, config = run.path, run.record, run.experiment, run.config
    preset = experiment.presets.get(record["preset"])
    seeds = record["seeds"]
    lines = [
        f"# {experiment.name}: {experiment.title}",
        "",
        f"Paper: {experiment.paper}, {experiment.table}. Preset `{record['preset']}`, {len(seeds)} seed(s) per row; "
        "ours is mean ± sample std over seeds.",
        "",
    ]
    # a table without any paper number (the lectures give none) has no paper columns
    with_paper = any(entry["paper"] is not None for row in metrics["rows"].values() for entry in row.values())
    header = ["Row"]
    for m in experiment.metrics:
        header += [f"{m.label} {'↓' if m.lower_is_better else '↑'}"] + (["paper"] if with_paper else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in experiment.rows:
        if row.name not in metrics["rows"]:
            continue
        cells = [row.name]
        for metric in experiment.metrics:
            entry = metrics["rows"][row.name][metric.key]
            n = len(entry["per_seed"])
            ours = _cell(entry["mean"], entry["std"], metric.digits) + (f" (n={n})" if 0 < n != len(seeds) else "")
            paper = "—" if entry["paper"] is None else f"{entry['paper']:.{metric.digits}f}"
            cells += [ours, paper] if with_paper else [ours]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [row.name for row in experiment.rows if row.name not in metrics["rows"]]
    if skipped:
        lines += ["", f"Not run at this preset: {', '.join(skipped)}."]
    lines += ["", "## What differs from the paper's set-up", ""]
    if preset is not None and preset.note:
        lines.append(f"- Preset `{record['preset']}`: {preset.note}.")
    changed = [_assignment(key, value) for key, value in set_beyond_preset(run).items()]
    if changed:
        lines.append(f"- Set beyond the preset: {', '.join(f'`{item}`' for item in changed)}.")
    lines += [f"- {line}" for line in experiment.differences(config)]
    lines += experiment.report_sections(metrics, run)
    lines += training_diagnostics(run_dir, experiment, config, seeds)
    lines += ["", "## Per-seed results", ""]
    for row in experiment.rows:
        if row.name not in metrics["rows"]:
            continue
        per_seed = ", ".join(
            f"{m.key}=[{', '.join(f'{v:.{m.digits}f}' for v in metrics['rows'][row.name][m.key]['per_seed'])}]"
            for m in experiment.metrics
        )
        lines.append(f"- {row.name}: {per_seed}")
    figures = sorted((run_dir / "figures").rglob("*.png")) if (run_dir / "figures").exists() else []
    if figures:
        lines += ["", "## Figures", ""]
        for path in figures:
            rel = path.relative_to(run_dir).as_posix()
            lines += [f"![{rel}]({rel})", ""]
    command = f"kdgm run {experiment.name} --preset {record['preset']} --seeds {len(seeds)}"
    command += "".join(f" --set {shlex.quote(item)}" for item in changed)
    lines += ["", f"Config: `config.yaml`. Reproduce: `{command}`.", ""]
    return "\n".join(lines)


def build_report(run_dir: Path) -> Path:
    """Write ``metrics.json``, the curve figures and ``report.md``; return the report's path."""
    run = load_run(Path(run_dir))  # read config.yaml once for all three parts
    metrics = collect(run)
    _curves(run.path, run.experiment, run.config, metrics["seeds"][0])
    write_json(run.path / "metrics.json", metrics)
    report = run.path / "report.md"
    report.write_text(render(run, metrics))
    return report
