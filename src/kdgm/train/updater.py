"""Updaters: what one training step does with a batch.

The training loop (:func:`kdgm.train.loop.fit`) is the same for every method; what differs is how loss terms map
to optimizers. An updater owns one or more :class:`Phase` objects, each an objective with its own optimizer (and
optionally its own parameters, schedule and number of repeats), run in order on every batch:

- a VAE or a classifier: one phase;
- a WGAN: a critic phase repeated 5 times, then a generator phase;
- rule distillation with learned confidences (Hu et al. 2016b) or learnable constraints (Hu et al. 2018): a student
  (or model) phase, then a φ-phase on the constraint parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from kdgm.data.batch import Batch
from kdgm.errors import UserError
from kdgm.objectives.base import Objective, Progress
from kdgm.train.checkpoint import load_model_state


@dataclass
class Phase:
    """One objective minimised by one optimizer.

    Attributes:
        name: prefix of the logged terms (``"main"`` logs unprefixed).
        objective: ``objective(model, batch) -> LossOutput``; objectives that follow a schedule take ``progress``
            through a ``progress`` attribute set before each call.
        optimizer: the optimizer over this phase's parameters.
        scheduler: an optional learning-rate scheduler stepped after every optimizer step.
        repeats: optimizer steps of this phase per batch (e.g. 5 critic steps per generator step).
        grad_clip: clip the gradient norm of this phase's parameters to this value.
        modules: trained modules this phase owns besides the model, by name (the learnable constraint of a φ-step):
            moved to the device and checkpointed by the updater, never part of the model's own state.
        batches: an endless iterator of batches this phase trains on instead of the loop's batch (e.g. held-out
            data for learning rule confidences, which the training labels would drive toward zero); one with
            ``state_dict`` / ``load_state_dict`` (:class:`kdgm.data.loader.EndlessBatches`) is checkpointed, so a
            resumed run continues where it stopped.
    """

    name: str
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    repeats: int = 1
    grad_clip: float | None = None
    batches: Iterator[Batch] | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)
    _params: list[Tensor] = field(default_factory=list, repr=False)


class PhasedUpdater:
    """Runs each phase's objective, backward pass and optimizer step, in order, on every batch.

    Args:
        model: the module every objective receives (the Fabric-wrapped one after :meth:`setup`).
        phases: the phases, in the order they run.
        modules: other trained modules that are not part of the model, by name (a learnable constraint f_φ, a
            discriminator): moved to the device with the model and checkpointed beside it, so that knowledge is
            added to a model without editing it.
    """

    def __init__(self, model: nn.Module, phases: list[Phase], modules: dict[str, nn.Module] | None = None) -> None:
        if not phases:
            raise ValueError("an updater needs at least one phase")
        names = [p.name for p in phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        self.model = model
        self.phases = phases
        self.modules = dict(modules or {})
        for phase in phases:
            for name, module in phase.modules.items():
                if self.modules.setdefault(name, module) is not module:
                    raise ValueError(f"two different modules are named {name!r}")
        self.fabric: Any = None

    def setup(self, fabric) -> None:
        """Move the model and optimizers to Fabric's device and strategy (DDP, precision).

        Calling it again (a second :func:`~kdgm.train.loop.fit` on the same updater) continues training: with the
        same Fabric nothing changes; with another one the user's model and optimizers are set up on it afresh.
        """
        if fabric is self.fabric:
            return
        self.fabric = fabric
        self.model = fabric.setup_module(_unwrap(self.model))
        for module in self.modules.values():
            module.to(fabric.device)  # in place: the optimizers keep their parameters
        for phase in self.phases:
            optimizer = getattr(phase.optimizer, "optimizer", phase.optimizer)  # the user's, inside Fabric's wrapper
            phase._params = [p for group in optimizer.param_groups for p in group["params"]]
            phase.optimizer = fabric.setup_optimizers(optimizer)

    def step(self, batch: Batch, progress: Progress) -> dict[str, Tensor]:
        """One training step; returns detached terms for logging."""
        logged: dict[str, Tensor] = {}
        for phase in self.phases:
            if hasattr(phase.objective, "progress"):
                phase.objective.progress = progress
            for _ in range(phase.repeats):
                data = batch if phase.batches is None else next(phase.batches).to(self.fabric.device)
                out = phase.objective(self.model, data)
                phase.optimizer.zero_grad(set_to_none=True)
                self.fabric.backward(out.total)
                if phase.grad_clip:
                    # a non-finite gradient is not an internal error: it reaches the weights and the loop's finite
                    # check stops the run with the step and the last good checkpoint (kdgm.train.loop)
                    self.fabric.clip_gradients(self.model, phase.optimizer, max_norm=phase.grad_clip,
                                               error_if_nonfinite=False)
                phase.optimizer.step()
                if phase.scheduler is not None:
                    phase.scheduler.step()
            prefix = "" if phase.name == "main" else f"{phase.name}/"
            logged[f"{prefix}loss"] = out.total.detach()
            logged.update({f"{prefix}{key}": value for key, value in out.terms.items()})
        return logged

    def weights_finite(self) -> bool:
        """Whether every floating-point weight of the model and the extra modules is finite (checked before a save)."""
        modules = [_unwrap(self.model), *self.modules.values()]
        return all(bool(t.isfinite().all()) for m in modules for t in m.state_dict().values() if t.is_floating_point())

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": _unwrap(self.model).state_dict(),
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizers": {p.name: p.optimizer.state_dict() for p in self.phases},
            "schedulers": {p.name: p.scheduler.state_dict() for p in self.phases if p.scheduler is not None},
            "batches": {p.name: p.batches.state_dict() for p in self.phases if hasattr(p.batches, "state_dict")},
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore what :meth:`state_dict` saved; a state of another model or set of phases is a one-line
        :class:`UserError` naming the first part that does not fit (``source`` names the file in it)."""
        load_model_state(_unwrap(self.model), state["model"], source)
        for name, module in self.modules.items():
            if name not in state.get("modules", {}):
                raise UserError(f"{source} has no state for module {name!r}; it was not written by this method")
            load_model_state(module, state["modules"][name], f"{source} (module {name!r})")
        for phase in self.phases:
            if phase.name not in state.get("optimizers", {}):
                raise UserError(f"{source} has no optimizer state for phase {phase.name!r}; it was not written by "
                                "this method's training")
            try:
                phase.optimizer.load_state_dict(state["optimizers"][phase.name])
            except (ValueError, KeyError) as err:
                raise UserError(f"{source}: the optimizer state of phase {phase.name!r} does not fit ({err})") from None
            if phase.scheduler is not None:
                if phase.name not in state.get("schedulers", {}):
                    raise UserError(f"{source} has no learning-rate schedule state for phase {phase.name!r}")
                phase.scheduler.load_state_dict(state["schedulers"][phase.name])
            if hasattr(phase.batches, "load_state_dict") and phase.name in state.get("batches", {}):
                phase.batches.load_state_dict(state["batches"][phase.name])


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside Fabric's and DDP's wrappers (their state-dict keys carry no prefix)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model
