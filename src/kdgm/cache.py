"""A small on-disk cache for data sets that are decoded or rendered once and reused.

The folder is ``$KDGM_CACHE_DIR`` or ``~/.cache/kdgm``. Entries are ``.npz`` files written atomically
(a temporary file renamed into place), so two processes (DDP ranks, parallel tests) never read a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    """The cache folder, created on first use."""
    path = Path(os.environ.get("KDGM_CACHE_DIR", Path.home() / ".cache" / "kdgm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(name: str, **params) -> str:
    """A file-safe key: ``name`` plus a short hash of the JSON-encoded parameters."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


def cached_arrays(key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load the arrays stored under ``key``, building and storing them first if absent or unreadable."""
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a damaged entry (a truncated write, a disk error) is rebuilt below
    arrays = build()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arrays
