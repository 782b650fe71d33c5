"""Report sections against hand-computed cases: the training-diagnostics table (kdgm.report.diagnostics) from
synthetic logs, and the paired differences (kdgm.report.paired)."""

from __future__ import annotations

import pytest

from kdgm.experiments import EXPERIMENTS
from kdgm.experiments.rundir import seed_folder, training_runs
from kdgm.report.diagnostics import tail_mean, training_diagnostics
from kdgm.train.logs import CSVLog


def test_tail_mean_averages_the_finite_values_of_the_last_share_of_the_steps():
    steps = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert tail_mean(steps, [float(s) for s in steps], 0.1) == pytest.approx(95.0)  # steps 90 and 100
    assert tail_mean(steps, [float(s) for s in steps[:-1]] + [float("nan")], 0.1) == pytest.approx(90.0)
    assert tail_mean(steps, [float(s) for s in steps], 0.5) == pytest.approx(75.0)
    assert tail_mean([], [], 0.1) is None


def test_the_table_has_one_line_per_run_that_logged_a_term_and_mean_and_std_over_seeds(tmp_path):
    experiment = EXPERIMENTS["template-infill"]
    learned = training_runs(experiment)["With learned constraint"]
    for seed, ess in ((0, lambda s: s / 100), (1, lambda s: 0.5)):
        folder = seed_folder(tmp_path, learned, seed)
        folder.mkdir(parents=True)
        log = CSVLog(folder / "train.csv")
        for step in range(0, 101, 10):
            log.write({"step": step, "loss": 1.0, "ess_share": ess(step)})
    lines = training_diagnostics(tmp_path, experiment, None, [0, 1])
    assert lines[3] == "| Run | `ess_share` |"
    # seed 0: mean of 0.9 and 1.0 = 0.95; seed 1: 0.5; over seeds 0.725 ± std(0.95, 0.5) = 0.318
    assert lines[5:] == ["| With learned constraint | 0.725 ± 0.318 |"]
    assert training_diagnostics(tmp_path / "empty", experiment, None, [0]) == []


def test_paired_differences_pair_seed_by_seed_and_skip_a_row_without_results():
    from kdgm.report.paired import paired_differences

    entry = lambda values: {"per_seed": values}  # noqa: E731
    metrics = {"rows": {"base": {"ppl": entry([100.0, 200.0])}, "pr": {"ppl": entry([110.0, 190.0])},
                        "unfinished": {"ppl": entry([])}}}
    lines = paired_differences(metrics, [("pr", "base"), ("unfinished", "base")], ["ppl"], relative=True)
    # +10 % and −5 %: mean +2.5, std of (10, −5) = 10.61
    assert lines[3:] == ["- pr − base: ppl: +2.50 ± 10.61 (per seed: +10.00, -5.00)"]
