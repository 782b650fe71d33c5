"""Seconds per AIR training step and images/s on Multi-MNIST scenes (Xu et al. 2019, section 6: 50 x 50, batch 64).

One step = forward, :class:`kdgm.objectives.air.AIRELBO`, backward and an Adam update, on batches drawn from the
Multi-MNIST training scenes with 1 or 3 digits. Timing starts after ``--warmup`` steps; the median step and the
mean throughput over the remaining ``--steps`` steps are printed, with the number of threads torch used.

    python bench/air_step.py [--steps 50] [--batch-size 64] [--threads 2] [--prior fixed|learned]
        [--max-steps 3] [--no-fused-adam] [--n-per-count 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdgm.data.scenes import SceneConfig, multi_mnist
from kdgm.models.air import AIR
from kdgm.objectives.air import AIRELBO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, caches)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's own")
    parser.add_argument("--prior", choices=("fixed", "learned"), default="fixed")
    parser.add_argument("--max-steps", type=int, default=3, help="AIR steps T (largest object count)")
    parser.add_argument("--n-per-count", type=int, default=2000, help="training scenes per object count")
    parser.add_argument("--no-fused-adam", action="store_true",
                        help="plain torch.optim.Adam instead of the fused CPU/GPU kernel")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = multi_mnist(SceneConfig(counts=(1, 3), n_per_count=args.n_per_count), "train")
    model = AIR(max_steps=args.max_steps, prior=args.prior).to(args.device)
    objective = AIRELBO()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=not args.no_fused_adam)
    order = torch.randperm(len(data))
    per_epoch = len(data) // args.batch_size

    def step(i: int) -> None:
        j = i % per_epoch
        batch = data.batch(order[j * args.batch_size : (j + 1) * args.batch_size]).to(args.device)
        loss = objective(model, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        step(args.warmup + i)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    adam = "plain" if args.no_fused_adam else "fused"
    print(f"AIR prior={args.prior} T={args.max_steps} batch {args.batch_size} on {args.device}, "
          f"torch threads {torch.get_num_threads()}, {adam} Adam, {args.steps} steps")
    print(f"seconds/step: median {median:.4f}  min {min(times):.4f}  mean {statistics.mean(times):.4f}")
    print(f"images/s: {args.batch_size * len(times) / sum(times):.0f}")


if __name__ == "__main__":
    main()
