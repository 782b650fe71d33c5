"""The ``kdgm`` command line: ``list``, ``run``, ``report``, ``sample``.

User errors (unknown experiment, preset or key, a value of the wrong type, missing data, a corrupt checkpoint)
print one line on stderr and exit with code 2; nothing is written before the request has been checked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from kdgm.errors import UserError


class _Parser(ArgumentParser):
    """jsonargparse's parser, with its multi-line validation messages folded into one line."""

    def error(self, message: str, ex: Exception | None = None):  # noqa: D102
        raise UserError(_one_line(str(message)))


def _one_line(message: str) -> str:
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"(?:Given|Got) value: (.*)", message)
    expected = re.findall(r"Expected a <class '([^']+)'>", message)
    if key and given:
        wanted = " or ".join(e for e in expected if e != "NoneType") or "another type"
        return f"--{key.group(1)}: expected {wanted}, got {given.group(1).strip()!r}"
    return " ".join(message.split())


def _parser() -> ArgumentParser:
    parser = _Parser(prog="kdgm", description="Deep generative models with knowledge constraints.")
    commands = parser.add_subcommands(dest="command", required=True)

    commands.add_subcommand("list", _Parser(), help="List the experiments, each with its paper and table.")

    run = _Parser()
    run.add_argument("name", type=str, help="Experiment name (see kdgm list).")
    run.add_argument("--preset", type=str, default="quick", help="smoke | quick | paper (or the experiment's own).")
    run.add_argument("--seeds", type=int, default=0, help="Seeds per row (0: the preset's number).")
    run.add_argument("--device", type=str, default="auto", help="cpu | cuda | mps | auto.")
    run.add_argument("--devices", type=int, default=1, help="Processes for data-parallel training (DDP).")
    run.add_argument("--jobs", type=int, default=1,
                     help="Independent row x seed runs trained side by side, sharing the CPU cores.")
    run.add_argument("--out", type=str, default="", help="Run folder (default runs/NAME-PRESET).")
    run.add_argument("--resume", action="store_true", help="Continue a killed run from its last checkpoint.")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="Override a config value (repeatable), e.g. --set steps=500.")
    run.add_argument("--data-dir", type=str, default="", help="Folder with the experiment's data files.")
    commands.add_subcommand("run", run, help="Train every row of an experiment's table for each seed; write the report.")

    report = _Parser()
    report.add_argument("run_dir", type=str, help="A run folder written by kdgm run.")
    report.add_argument("--figures", action="store_true", help="Also draw the model figures again from checkpoints.")
    commands.add_subcommand("report", report, help="Rebuild metrics.json and report.md from a run's saved results.")

    sample = _Parser()
    sample.add_argument("run_dir", type=str, help="A run folder written by kdgm run.")
    sample.add_argument("--n", type=int, default=64, help="Number of samples.")
    sample.add_argument("--row", type=str, default="", help="Row of the table (default: the first).")
    sample.add_argument("--seed", type=int, default=0, help="Random seed of the samples.")
    sample.add_argument("--out", type=str, default="", help="PNG path (default RUN_DIR/samples.png).")
    commands.add_subcommand("sample", sample, help="Write a grid of samples from a trained model as a PNG.")
    return parser


def _list() -> None:
    from kdgm.experiments import EXPERIMENTS

    for name, experiment in EXPERIMENTS.items():
        presets = ", ".join(experiment.presets)
        print(f"{name:<16} {experiment.title}\n{'':<16} {experiment.paper}; {experiment.table}\n{'':<16} presets: {presets}")


def _run(args) -> None:
    from kdgm.config import parse_assignments
    from kdgm.experiments.runner import RunRequest, run

    overrides = parse_assignments(args.overrides)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    request = RunRequest(
        experiment=args.name, preset=args.preset, seeds=args.seeds or None, device=args.device,
        devices=args.devices, jobs=args.jobs, out=Path(args.out) if args.out else None, resume=args.resume,
        overrides=overrides,
    )
    run_dir = run(request)
    report = (run_dir / "report.md").read_text().splitlines()
    print("\n".join(line for line in report if line.startswith("|")))  # the table, paper beside ours
    print(f"report: {run_dir / 'report.md'}")


def _report(args) -> None:
    from kdgm.report.build import build_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} is not a kdgm run folder (no config.yaml)")
    if args.figures:
        from kdgm.experiments.runner import redraw_figures

        print(f"figures: {len(redraw_figures(run_dir))} drawn")
    print(f"report: {build_report(run_dir)}")


def _sample(args) -> None:
    import torch

    from kdgm.experiments.runner import load_trained_model
    from kdgm.report.figures import save_image_grid

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    run_dir = Path(args.run_dir)
    experiment, _, model = load_trained_model(run_dir, args.row or None)
    images = experiment.samples(model, args.n, torch.Generator().manual_seed(args.seed))
    path = Path(args.out) if args.out else run_dir / "samples.png"
    print(f"samples: {save_image_grid(images, path)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdgm`` command; returns the exit code."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        command = args.command
        {"list": lambda _: _list(), "run": _run, "report": _report, "sample": _sample}[command](args[command])
    except UserError as err:
        print(f"kdgm: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("kdgm: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
