"""Seconds per AIR training step and images/s on Multi-MNIST 1-or-3 scenes (Xu et al. 2019, section 6: 50 × 50,
batch 64), for AIR, AIR-pPrior and AIR-ASR (AIR-pPrior + the number-of-objects and box penalties), measured in one
run. The models and objectives are the ``asr-count`` experiment's own (its default config, one per row).

One step = forward, the objective (:class:`kdgm.objectives.air.AIRELBO`, wrapped by
:class:`kdgm.knowledge.structural.StructuralPenalty` for AIR-ASR), backward and a fused Adam update. The variants
alternate step by step, so machine load affects them alike; the median step of each is printed, and the ratio
AIR-ASR / AIR-pPrior is the cost of the penalty (target: under 1.10).

With pyro-ppl installed (``pip install -e '.[bench]'``), pyro's AIR example (``bench/pyro_air.py``: its model and
guide, SVI with ``TraceGraph_ELBO``) runs in the same loop, alternating with ours on the same batches, and the ratio
of AIR-ASR's step to the peer's is printed.

With ``--compile`` each variant also runs with its objective (model forward included) under ``torch.compile``
(one graph, ``fullgraph=True``), from the same initial weights, alternating with the eager ones; the compiled rows
and their speed-up over eager are printed beside them.

With ``--seconds S`` every variant trains for S seconds of its own step time (equal wall time; steps alternate as
above) and its count accuracy on 1,000 test scenes is printed: what a user gets from kdgm or the peer in that time.

    python bench/air_step.py [--steps 60] [--batch-size 64] [--threads N] [--device cpu] [--image-encoder conv]
                             [--compile] [--seconds S]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import time
from typing import Callable

import torch

from kdgm import config as cfgmod
from kdgm.data.scenes import SceneConfig, multi_mnist
from kdgm.experiments.asr import MODELS, ASRConfig, ASRCount
from kdgm.experiments.base import ExperimentData

PEER = "pyro AIR (peer)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, caches)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's own")
    parser.add_argument("--n-per-count", type=int, default=2000, help="training scenes per object count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-encoder", default=ASRConfig.image_encoder, choices=("mlp", "conv"))
    parser.add_argument("--compile", action="store_true", help="also time each variant under torch.compile")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="train each variant for this much of its own step time instead of --steps, then "
                             "print its count accuracy on 1,000 test scenes (equal wall time)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = multi_mnist(SceneConfig(counts=(1, 3), n_per_count=args.n_per_count), "train")
    experiment, steps, models = ASRCount(), {}, {}
    for name, settings in MODELS.items():
        config = cfgmod.apply(ASRConfig(counts=(1, 3), image_encoder=args.image_encoder), settings)
        model, objective = experiment.build_model(config, ExperimentData(data, None)), experiment.objective(config)
        steps[name], models[name] = kdgm_step(model.to(args.device), objective), model
        if args.compile:
            twin = models[f"{name} compiled"] = copy.deepcopy(model)
            steps[f"{name} compiled"] = kdgm_step(twin, torch.compile(objective, fullgraph=True))
    if importlib.util.find_spec("pyro") is not None:
        from pyro_air import pyro_air_counts, pyro_air_step

        air, pyro_step = pyro_air_step()
        air.to(args.device)
        steps[PEER] = lambda batch: pyro_step(batch.x)
    order = torch.randperm(len(data))
    per_epoch = len(data) // args.batch_size
    times: dict[str, list[float]] = {name: [] for name in steps}

    def spent(name: str) -> float:
        return sum(times[name])

    i = 0
    while i < args.warmup + args.steps if not args.seconds else min(map(spent, steps)) < args.seconds:
        j = i % per_epoch
        batch = data.batch(order[j * args.batch_size : (j + 1) * args.batch_size]).to(args.device)
        i += 1
        for name, step in steps.items():
            if args.seconds and spent(name) >= args.seconds:
                continue
            start = time.perf_counter()
            step(batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i > args.warmup or args.seconds:
                times[name].append(time.perf_counter() - start)

    print(f"AIR T=3 ({args.image_encoder} image encoder), batch {args.batch_size} on {args.device}, "
          f"torch threads {torch.get_num_threads()}, "
          + (f"{args.seconds:.0f} s of steps per variant" if args.seconds else f"{args.steps} steps per variant")
          + " (fused Adam)")
    print(f"{'variant':<21}{'s/step (median)':>17}{'images/s':>10}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<21}{median:>17.4f}{args.batch_size / median:>10.0f}")
    ratio = statistics.median(times["AIR-ASR"]) / statistics.median(times["AIR-pPrior"])
    print(f"ASR penalty cost: AIR-ASR / AIR-pPrior = {ratio:.3f}")
    for name in MODELS if args.compile else ():
        speedup = statistics.median(times[name]) / statistics.median(times[f"{name} compiled"])
        print(f"torch.compile speed-up, {name}: {speedup:.2f}x")
    if PEER in times:
        ratio = statistics.median(times["AIR-ASR"]) / statistics.median(times[PEER])
        print(f"kdgm AIR-ASR / {PEER}: seconds per step {ratio:.3f} (the peer's model has no penalty)")
    else:
        print(f"{PEER}: not measured (pip install -e '.[bench]' installs pyro-ppl)")
    if args.seconds:
        test = multi_mnist(SceneConfig(counts=(1, 3), n_per_count=500), "test")
        x, truth = test.batch(torch.arange(len(test))).x.to(args.device), test.batch(torch.arange(len(test))).counts
        print(f"after {args.seconds:.0f} s of training each: count accuracy on {len(test)} test scenes")
        for name in steps:
            if name == PEER:
                counts = pyro_air_counts(air, x)
            else:
                with torch.no_grad():
                    counts = models[name].eval()(x).count
            accuracy = float((counts.cpu() == truth).float().mean())
            print(f"{name:<21}{len(times[name]):>7} steps   count accuracy {accuracy:.3f}")


def kdgm_step(model: torch.nn.Module, objective) -> Callable:
    """One training step of a kdgm model: objective, backward, fused Adam (lr 1e-4, the paper's AIR setting)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def step(batch) -> None:
        loss = objective(model, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


if __name__ == "__main__":
    main()
