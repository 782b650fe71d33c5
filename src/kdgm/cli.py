"""The ``kdgm`` command line: ``list``, ``run``, ``report``, ``sample``.

User errors (unknown experiment, preset or key, a value of the wrong type, missing data, a corrupt checkpoint, a
folder that cannot be written, training that went non-finite) print one line on stderr and exit with code 2;
nothing is written before the request has been checked. Any other exception is a bug: it prints one line too, exits
with code 1 and leaves its traceback in a file the line names (``KDGM_DEBUG=1`` raises it instead).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
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
    from kdgm.experiments.rundir import read_record
    from kdgm.report.build import build_report

    run_dir = Path(args.run_dir)
    read_record(run_dir)  # one line if this is not a run folder
    if args.figures:
        from kdgm.experiments.runner import redraw_figures

        print(f"figures: {len(redraw_figures(run_dir))} drawn")
    print(f"report: {build_report(run_dir)}")


def _sample(args) -> None:
    import torch

    from kdgm.experiments.rundir import load_run
    from kdgm.experiments.runner import load_trained
    from kdgm.report.figures import save_image_grid

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    run_dir = Path(args.run_dir)
    experiment = load_run(run_dir).experiment
    if not experiment.has_samples:
        raise UserError(f"experiment {experiment.name} has no generative samples (it trains classifiers)")
    path = Path(args.out) if args.out else None
    if path is not None and (path.is_dir() or path.suffix.lower() not in (".png", ".txt")):
        raise UserError(f"--out {path} must be a .png (images) or .txt (text) file path")
    if path is not None and not path.parent.is_dir():
        raise UserError(f"--out {path}: the folder {path.parent} does not exist")
    experiment, _, data, model = load_trained(run_dir, args.row or None)
    with torch.no_grad():
        samples = experiment.samples(model, args.n, torch.Generator().manual_seed(args.seed), data)
    kind = ".txt" if isinstance(samples, list) else ".png"
    if path is not None and path.suffix.lower() != kind:
        raise UserError(f"--out {path}: {experiment.name} samples are {'text' if kind == '.txt' else 'images'}; "
                        f"give a {kind} path")
    if isinstance(samples, list):  # text: one sample per line
        path = path or run_dir / "samples.txt"
        path.write_text("\n".join(samples) + "\n")
        print("\n".join(samples[:10]))
    else:
        path = save_image_grid(samples, path or run_dir / "samples.png")
    print(f"samples: {path}")


def _interrupted() -> str:
    from kdgm.experiments import runner

    if runner.active_run_dir is None:
        return "interrupted before the run folder was written; nothing to resume"
    return f"interrupted; continue with the same command and --resume (run folder {runner.active_run_dir})"


def _internal_error(err: BaseException) -> str:
    """One line for a bug, with the traceback saved to a file the line names."""
    fd, path = tempfile.mkstemp(prefix="kdgm-error-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(traceback.format_exception(err)))
    message = " ".join(str(err).split())[:200]
    return f"internal error {type(err).__name__}: {message} (traceback in {path}; please report it)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdgm`` command; returns the exit code."""
    import torch

    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        command = args.command
        {"list": lambda _: _list(), "run": _run, "report": _report, "sample": _sample}[command](args[command])
    except UserError as err:
        print(f"kdgm: error: {' '.join(str(err).split())}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"kdgm: {_interrupted()}", file=sys.stderr)
        return 130
    except torch.OutOfMemoryError:
        print("kdgm: error: out of memory on the device; lower batch_size (--set batch_size=...)", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written, a full disk, a file where a folder should be
        where = f" {err.filename}" if err.filename else ""
        print(f"kdgm: error: cannot access{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: one line for the user, the traceback in a file
        if os.environ.get("KDGM_DEBUG"):
            raise
        print(f"kdgm: error: {_internal_error(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
