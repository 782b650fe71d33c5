"""Paired differences between rows of a table, seed by seed: the comparison that seed noise does not swamp (rows
trained from the same seed share data order, initialisation and, for fine-tuning rows, the pre-trained model)."""

from __future__ import annotations

import statistics
from typing import Any, Sequence


def paired_differences(metrics: dict[str, Any], pairs: Sequence[tuple[str, str]], keys: Sequence[str],
                       relative: bool = False, digits: int = 2) -> list[str]:
    """Markdown lines ``- A − B: key: mean ± std`` over the seeds both rows have, for each (A, B) of ``pairs``.

    Args:
        metrics: the ``metrics.json`` structure.
        relative: report ``100 (A − B) / B`` in percent instead of ``A − B``.
    """
    rows = metrics["rows"]
    lines = ["", "## Paired differences (same seed)" + (", relative (%)" if relative else ""), ""]
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        cells = []
        for key in keys:
            x, y = rows[a][key]["per_seed"], rows[b][key]["per_seed"]
            diffs = [100 * (u - v) / v if relative else u - v for u, v in zip(x, y)]
            if diffs:
                std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                per_seed = ", ".join(f"{d:+.{digits}f}" for d in diffs)
                cells.append(f"{key}: {statistics.fmean(diffs):+.{digits}f} ± {std:.{digits}f} (per seed: {per_seed})")
        if cells:  # a row without finished seeds yet (a partial run folder) has nothing to pair
            lines.append(f"- {a} − {b}: " + "; ".join(cells))
    return lines
