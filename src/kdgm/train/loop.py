"""The one training loop.

Every method in kdgm trains through :func:`fit`: it draws batches, asks the updater for one step, logs, evaluates
and checkpoints. Methods differ only in their updater (:mod:`kdgm.train.updater`). Checkpoints hold the model,
optimizer and scheduler states, the RNG states and the step, so a killed run resumes where it stopped and draws the
same batches and noise it would have drawn.

Two guarantees keep checkpoints trustworthy: a checkpoint is loaded only when the caller asks to resume (and, given
an ``identity``, only one its own run wrote), and a non-finite state is never saved — every step's terms are checked
(on the device, without a synchronisation per step) and the weights are checked before each save, so a diverged run
stops with the step that went non-finite and keeps its last good checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from kdgm.data.loader import BatchLoader
from kdgm.errors import NonFiniteError, UserError
from kdgm.objectives.base import Progress
from kdgm.train.checkpoint import (
    BEST, LAST, load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state,
)
from kdgm.train.logs import RunLog
from kdgm.train.updater import PhasedUpdater, _unwrap


@dataclass
class FitResult:
    """What :func:`fit` reports back.

    Attributes:
        steps: the step count reached.
        resumed_from: the step the run resumed from (0 for a fresh run).
        seconds: wall time of this call.
        last_eval: the metrics of the last evaluation (empty if none ran).
    """

    steps: int
    resumed_from: int
    seconds: float
    last_eval: dict[str, float]


def fit(
    fabric,
    updater: PhasedUpdater,
    loader: BatchLoader,
    *,
    max_steps: int,
    folder: Path | None = None,
    resume: bool = False,
    identity: str | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    log_every: int = 50,
    select: str = "",
    select_lower: bool = False,
    tensorboard: bool = True,
    desc: str = "train",
    progress_bar: bool | None = None,
) -> FitResult:
    """Train ``updater`` on ``loader`` for ``max_steps`` steps.

    Args:
        fabric: a launched ``lightning.fabric.Fabric``; the updater is set up on it here.
        updater: owns the model, objectives and optimizers.
        loader: training batches; its epoch is set from the step, so resumed runs continue the same order.
        max_steps: optimizer steps of the run (a resumed run trains only the missing ones).
        folder: where logs and ``checkpoints/last.ckpt`` go; ``None`` trains without either.
        resume: continue from ``folder``'s last checkpoint when there is one. Without it a folder that holds a
            checkpoint is refused: a fresh run never silently continues an old one.
        identity: a fingerprint of what is being trained (the runner's run record); saved in every checkpoint, and a
            checkpoint with another one is refused on resume.
        evaluate: called every ``eval_every`` steps and at the end; returns metrics to log.
        checkpoint_every: steps between checkpoints (0: only at the end).
        select: an evaluation metric; the weights that score best on it are saved as ``checkpoints/best.ckpt``
            (model selection on a dev set).
        select_lower: the selected metric is better when lower (a perplexity); by default higher (an accuracy).
        log_every: steps between log rows (terms are averaged over them).
        progress_bar: show a tqdm bar; ``None`` shows it on an interactive terminal only.
    """
    start_time = time.perf_counter()
    updater.setup(fabric)
    _unwrap(updater.model).train()  # a model left in eval() would train without dropout, silently
    ckpt_dir = folder / "checkpoints" if folder is not None else None
    start = 0
    def reseed_other_ranks(step: int) -> None:
        """The checkpoint holds rank 0's generators; other ranks restart their own noise from (rank, step) at every
        checkpoint, which a resumed run can repeat exactly."""
        if fabric.global_rank > 0:
            torch.manual_seed(1_000_003 * fabric.global_rank + step)

    if ckpt_dir is not None:
        remove_stale_temporaries(ckpt_dir)
    if ckpt_dir is not None and (ckpt_dir / LAST).exists():
        if not resume:
            raise UserError(f"{ckpt_dir / LAST} holds an earlier run's checkpoint; pass resume=True (kdgm run "
                            "--resume) to continue it, or train into a new folder")
        state = load_checkpoint(ckpt_dir / LAST, identity=identity)
        updater.load_state_dict(state, str(ckpt_dir / LAST))
        set_rng_state(state["rng"])
        start = int(state["step"])
        reseed_other_ranks(start)
    is_main = fabric.global_rank == 0
    log = RunLog(folder, tensorboard, after_step=start) if folder is not None and is_main else None
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UserError(f"the training set gives no full batch of {loader.batch_size}; lower the batch size")
    show = (sys.stderr.isatty() if progress_bar is None else progress_bar) and is_main
    bar = tqdm(total=max_steps, initial=start, desc=desc, disable=not show, dynamic_ncols=True, leave=False)
    # The first step whose terms were not all finite (-1: none yet), kept on the device: checking it costs one
    # synchronisation per log or checkpoint, not one per step.
    first_bad = torch.tensor(-1, device=fabric.device)
    last_saved = start

    def check_finite(step: int) -> None:
        bad = int(first_bad)
        if bad < 0 and not updater.weights_finite():
            bad = step  # the loss was finite but the update that followed it was not
        if bad >= 0:
            bar.close()
            kept = f"the last good checkpoint is step {last_saved}" if ckpt_dir is not None and last_saved else \
                "nothing was saved"
            raise NonFiniteError(f"[{desc}] training went non-finite at step {bad}; {kept}. Lower lr or set grad_clip, "
                                 "then start a new run")

    def checkpoint(step: int) -> None:
        nonlocal last_saved
        check_finite(step)
        if ckpt_dir is not None:
            if is_main:
                save_checkpoint({"step": step, "rng": rng_state(), "identity": identity, **updater.state_dict()},
                                ckpt_dir)
            fabric.barrier()
            last_saved = step
            reseed_other_ranks(step)  # so that a run resumed from this step draws what the uninterrupted run draws

    best = ckpt_dir / BEST if select and ckpt_dir is not None else None
    best_value = load_checkpoint(best, identity=identity)["value"] if best is not None and best.exists() and start \
        else -math.inf

    def run_eval(step: int) -> dict[str, float]:
        nonlocal best_value
        metrics = evaluate() if evaluate is not None else {}
        if log is not None and metrics:
            log.log("eval", step, metrics)
        if best is not None and is_main:
            if select not in metrics:
                raise UserError(f"select={select!r} is not among the evaluation metrics {sorted(metrics)}")
            score = -metrics[select] if select_lower else metrics[select]  # higher is better from here on
            if score > best_value:
                best_value = score
                model_state = _unwrap(updater.model).state_dict()
                check_finite(step)
                save_checkpoint({"step": step, "value": best_value, "model": model_state, "identity": identity},
                                ckpt_dir, BEST)
        if metrics and show:
            bar.write(f"[{desc}] step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    step, running, count, last_eval = start, {}, 0, {}
    while step < max_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        loader.set_epoch(epoch)
        for batch in loader.iter_from(offset):
            progress = Progress(step=step, epoch=step / steps_per_epoch, max_steps=max_steps)
            terms = updater.step(batch.to(fabric.device), progress)
            step += 1
            finite = torch.stack([v.float().sum().to(first_bad.device) for v in terms.values()]).isfinite().all()
            first_bad = torch.where(finite | (first_bad >= 0), first_bad, step)
            for key, value in terms.items():
                running[key] = running.get(key, 0.0) + value
            count += 1
            if step % log_every == 0 or step == max_steps:
                check_finite(step)
                means = {key: float(value) / count for key, value in running.items()}
                if log is not None:
                    log.log("train", step, {"epoch": step / steps_per_epoch, **means})
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:3]}, refresh=False)
                running, count = {}, 0
            bar.update(1)
            if eval_every and step % eval_every == 0 and step < max_steps:
                last_eval = run_eval(step)
            if checkpoint_every and step % checkpoint_every == 0 and step < max_steps:
                checkpoint(step)
            if step >= max_steps:
                break
    bar.close()
    if start < max_steps:  # a run resumed after its last step has nothing new to evaluate or save
        if evaluate is not None:
            last_eval = run_eval(step)
        checkpoint(step)
    if log is not None:
        log.close()
    return FitResult(steps=step, resumed_from=start, seconds=time.perf_counter() - start_time, last_eval=last_eval)
