"""The end of training in numbers: each run's diagnostic training terms (an E-step's effective sample size, f on
data and on samples, a critic's loss) averaged over the last part of its training, mean ± std over seeds.

The curves show how a term moved (first seed); this table says where it ended, over every seed, so that a report
can say why a row did what it did — a constraint whose q keeps few samples, a critic that never left chance — in
numbers that a reader can compare between rows.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from kdgm.experiments.rundir import seed_folder, training_runs
from kdgm.train.logs import read_csv


def tail_mean(steps: Sequence[float], values: Sequence[float], share: float) -> float | None:
    """Mean of the finite values logged in the last ``share`` of the steps (None: none there)."""
    if not steps:
        return None
    start = steps[-1] - share * (steps[-1] - steps[0])
    tail = [v for s, v in zip(steps, values) if s >= start and math.isfinite(v)]
    return statistics.fmean(tail) if tail else None


def training_diagnostics(run_dir: Path, experiment, config, seeds: Sequence[int], share: float = 0.1) -> list[str]:
    """Markdown lines: a table of the experiment's ``curve_terms`` per training run (mean ± std over seeds of each
    seed's mean over the last ``share`` of its logged steps); no lines when no run logged any of them."""
    terms = list(experiment.curve_terms)
    table: dict[str, dict[str, list[float]]] = {}  # run -> term -> per-seed tail means
    for name, row in training_runs(experiment, config).items():
        for seed in seeds:
            log = read_csv(seed_folder(run_dir, row, seed) / "train.csv")
            for term in terms:
                value = tail_mean(log.get("step", []), log.get(term, []), share)
                if value is not None:
                    table.setdefault(name, {}).setdefault(term, []).append(value)
    if not table:
        return []
    present = [t for t in terms if any(t in cells for cells in table.values())]
    lines = ["", f"## Training diagnostics (mean of the last {share:.0%} of each run's steps; mean ± std over seeds)",
             "", "| Run | " + " | ".join(f"`{t}`" for t in present) + " |", "|" + "---|" * (len(present) + 1)]
    for name, cells in table.items():
        shown = []
        for term in present:
            values = cells.get(term, [])
            std = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            shown.append(f"{statistics.fmean(values):.3f}{std}" if values else "—")
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return lines
