"""Atomic, pickle-free checkpoints.

A checkpoint is one ``torch.save`` file of plain containers and tensors (model, optimizer and scheduler state
dicts, RNG states, step). It is written to a temporary file in the same folder, flushed to disk, then renamed over
``last.ckpt``: a kill at any moment leaves either the previous complete checkpoint or the new one, never a torn
file. Loading uses ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects, so a checkpoint
from someone else cannot run code.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdgm.errors import UserError

LAST = "last.ckpt"
BEST = "best.ckpt"


def rng_state() -> dict[str, Any]:
    """The states of every random generator a run draws from, as tensors and plain containers."""
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    state["python"] = list(random.getstate()[1])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], folder: Path, name: str = LAST) -> Path:
    """Write ``state`` to ``folder/name`` atomically (temporary file, fsync, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling code; a damaged file is a :class:`UserError`."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a kdgm checkpoint ({reason[:120]}); delete it to start that run again") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise UserError(f"checkpoint {path} is not a kdgm checkpoint (no step/model entries); delete it to start that run again")
    return state
