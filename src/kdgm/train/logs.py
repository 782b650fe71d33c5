"""Training logs: CSV files (one row per log step) and, optionally, TensorBoard event files.

CSV columns are fixed by the first row written; a resumed run first drops the rows logged after its checkpoint (a
killed run may have logged steps it never saved), then appends, so every step appears once.
"""

from __future__ import annotations

import csv
from pathlib import Path


class CSVLog:
    """Appends rows of named numbers to ``path``; the header is written once."""

    def __init__(self, path: Path, after_step: int = 0) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
            self.columns = rows[0]
            kept = [row for row in rows[1:] if row and float(row[0]) <= after_step]  # column 0 is the step
            if len(kept) < len(rows) - 1:
                with path.open("w", newline="") as handle:
                    csv.writer(handle).writerows([self.columns, *kept])

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_fmt(row.get(c)) for c in self.columns])


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def read_csv(path: Path) -> dict[str, list[float]]:
    """Columns of a log written by :class:`CSVLog`, as floats (empty cells become NaN)."""
    if not path.exists():
        return {}
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows] for key in rows[0]}


class RunLog:
    """The logs of one training run: ``train.csv``, ``eval.csv`` and TensorBoard events under ``tb/``.

    Args:
        after_step: the step training continues from; CSV rows of later steps (from a killed run) are dropped.
    """

    def __init__(self, folder: Path, tensorboard: bool = True, after_step: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.train = CSVLog(folder / "train.csv", after_step)
        self.eval = CSVLog(folder / "eval.csv", after_step)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tb"))

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        getattr(self, kind).write({"step": step, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
