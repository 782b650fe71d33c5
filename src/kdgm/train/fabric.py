"""Devices, precision, data parallelism and determinism, through Lightning Fabric."""

from __future__ import annotations

import os

import torch

from kdgm.errors import UserError

DEVICES = ("cpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "bf16-true")


def accelerator_of(device: str) -> str:
    """The accelerator ``device`` names on this machine (``auto`` resolved), after checking that it is there."""
    if device not in DEVICES:
        raise UserError(f"unknown --device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but no Apple GPU (MPS) is available; use --device cpu or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def make_fabric(device: str = "auto", devices: int = 1, precision: str = "32-true", num_nodes: int = 1):
    """A ``Fabric`` for ``devices`` processes on ``device``.

    Several devices use DDP started by spawning (``ddp_spawn``): it works the same from the command line, from tests
    and from a notebook, and on CPU it runs over the gloo backend. Each CPU process gets an equal share of the cores.
    """
    from lightning_fabric import Fabric

    accelerator = accelerator_of(device)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if devices < 1:
        raise UserError(f"--devices must be at least 1, got {devices}")
    if accelerator == "cuda" and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices} but only {torch.cuda.device_count()} CUDA GPUs are visible")
    if accelerator == "mps" and devices > 1:
        raise UserError("--device mps runs on one device; drop --devices")
    strategy = "ddp_spawn" if devices * num_nodes > 1 else "auto"
    return Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, precision=precision)


def configure_process(fabric, seed: int, deterministic: bool = False) -> None:
    """Per-process set-up inside a launched Fabric: thread count, seeds, deterministic kernels."""
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    fabric.seed_everything(seed, verbose=False)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
