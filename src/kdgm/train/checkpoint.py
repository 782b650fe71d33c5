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

from torch import Tensor

from kdgm.errors import UserError

LAST = "last.ckpt"
BEST = "best.ckpt"


def rng_state() -> dict[str, Any]:
    """The states of every random generator a run draws from, as tensors and plain containers."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_position": torch.tensor([position, has_gauss]), "numpy_gauss": torch.tensor(cached_gauss)}
    state["python"] = list(random.getstate()[1])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    # the position inside the key block matters: restoring 624 instead would skip to a fresh block of draws
    position, has_gauss = (int(v) for v in state["numpy_position"]) if "numpy_position" in state else (624, 0)
    cached_gauss = float(state["numpy_gauss"]) if "numpy_gauss" in state else 0.0
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], folder: Path, name: str = LAST) -> Path:
    """Write ``state`` to ``folder/name`` atomically (temporary file, fsync, rename)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write checkpoint {folder / name}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
    except OSError as err:  # a full or read-only disk: the previous checkpoint is untouched
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {folder / name}: {err.strerror or err}; the previous checkpoint "
                        "is intact, continue with --resume once the disk has room") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", identity: str | None = None) -> dict[str, Any]:
    """Read a checkpoint without unpickling code; a damaged file, or one of another run, is a :class:`UserError`.

    Args:
        identity: the fingerprint of the run that should have written it (see :mod:`kdgm.experiments.rundir`);
            ``None`` accepts any kdgm checkpoint.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a kdgm checkpoint ({reason[:120]}); delete it to start that run again") from None
    if not isinstance(state, dict) or "step" not in state or not isinstance(state.get("model"), dict):
        raise UserError(f"checkpoint {path} is not a kdgm checkpoint (no step/model entries); delete it to start that run again")
    if identity is not None and state.get("identity") != identity:
        raise UserError(f"checkpoint {path} was written by another run (its fingerprint differs); delete it to start "
                        "that run again")
    return state


def load_model_state(module: torch.nn.Module, state: dict[str, Tensor], path: Path | str = "checkpoint") -> None:
    """Load a model state dict after checking its keys and shapes against the module's own, so that a checkpoint of
    another experiment or architecture is one line naming the first mismatch instead of a page of torch errors."""
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which this model does not"
        raise UserError(f"{path} does not fit this model: it {what} ({len(missing)} missing, {len(unexpected)} "
                        "unexpected entries); was it written by another experiment or config?")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(f"{path} does not fit this model: {key!r} has shape {tuple(state[key].shape)} there and "
                            f"{tuple(tensor.shape)} here; was it written with another architecture?")
    module.load_state_dict(state)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill cut short (never read, so never trusted)."""
    for path in folder.glob(".*.tmp") if folder.is_dir() else []:
        path.unlink(missing_ok=True)
