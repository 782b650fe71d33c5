"""Training time per step of each row of a run, read back from its results (a report section)."""

from __future__ import annotations


def seconds_per_step(experiment, run) -> list[str]:
    """Markdown lines: seconds per training step of each row, mean over its seeds (wall time of the training run,
    evaluations during training included)."""
    lines = ["", "## Seconds per step (training wall time / steps, mean over seeds)", ""]
    for row in experiment.rows:
        times = [r["train_seconds"] / max(1, r["steps"] - r["resumed_from"])
                 for seed in run.seeds if (r := run.read_result(row, seed))]
        if times:
            lines.append(f"- {row.name}: {sum(times) / len(times):.3f} s")
    return lines
