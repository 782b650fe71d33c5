"""Training throughput and peak memory of the VAE: kdgm's loop vs a minimal hand-written PyTorch loop.

Both train the same model (784-200-200-50 MLP VAE, ELBO or IWAE) on the same dynamically binarised MNIST batches
with Adam; each variant runs in its own fresh process so that peak memory (max RSS on CPU, max allocated on CUDA)
belongs to that variant alone. Prints samples/s of each and the ratio (kdgm / plain; 1.0 = no overhead).

    python bench/vae_throughput.py [--steps 1500] [--batch-size 100] [--objective elbo|iwae] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _plain(steps: int, batch_size: int, objective: str, device: str) -> float:
    import torch

    from kdgm.data.mnist import BinarizedMNIST, load_mnist
    from kdgm.models.vae import VAE

    torch.manual_seed(0)
    data = BinarizedMNIST(*load_mnist("train"), binarize="dynamic")
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    k = 5 if objective == "iwae" else 1
    order = torch.randperm(len(data))
    start = time.perf_counter()
    for step in range(steps):
        i = step % (len(data) // batch_size)
        x = data.batch(order[i * batch_size : (i + 1) * batch_size]).x.to(device)
        out = model(x, k=k)
        if objective == "iwae":
            loss = -(torch.logsumexp(out.log_weight, 0) - torch.log(torch.tensor(float(k)))).mean()
        else:
            loss = (out.kl - out.log_lik.mean(0)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _kdgm(steps: int, batch_size: int, objective: str, device: str) -> float:
    import torch

    from kdgm.data.loader import BatchLoader
    from kdgm.data.mnist import BinarizedMNIST, load_mnist
    from kdgm.models.vae import VAE
    from kdgm.objectives.elbo import ELBO, IWAE
    from kdgm.train.fabric import make_fabric
    from kdgm.train.loop import fit
    from kdgm.train.updater import Phase, PhasedUpdater

    torch.manual_seed(0)
    fabric = make_fabric(device)
    data = BinarizedMNIST(*load_mnist("train"), binarize="dynamic")
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    updater = PhasedUpdater(model, [Phase("main", ELBO() if objective == "elbo" else IWAE(5), optimizer)])
    start = time.perf_counter()
    fit(fabric, updater, BatchLoader(data, batch_size), max_steps=steps, log_every=50, progress_bar=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _child(variant: str, args) -> dict:
    import torch

    seconds = {"plain": _plain, "kdgm": _kdgm}[variant](args.steps, args.batch_size, args.objective, args.device)
    if args.device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"samples_per_s": args.steps * args.batch_size / seconds, "peak_mb": peak_mb, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--objective", choices=("elbo", "iwae"), default="elbo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant; the best counts")
    parser.add_argument("--child", choices=("plain", "kdgm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args)))
        return
    forwarded = [f"--steps={args.steps}", f"--batch-size={args.batch_size}", f"--objective={args.objective}",
                 f"--device={args.device}"]
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for variant in ("plain", "kdgm"):
            out = subprocess.run([sys.executable, __file__, f"--child={variant}", *forwarded],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if variant not in best or result["samples_per_s"] > best[variant]["samples_per_s"]:
                best[variant] = result
    print(f"VAE {args.objective}, batch {args.batch_size}, {args.steps} steps on {args.device} (best of {args.repeats})")
    print(f"{'loop':<8}{'samples/s':>12}{'peak MB':>10}")
    for variant in ("plain", "kdgm"):
        print(f"{variant:<8}{best[variant]['samples_per_s']:>12.0f}{best[variant]['peak_mb']:>10.0f}")
    ratio = best["kdgm"]["samples_per_s"] / best["plain"]["samples_per_s"]
    print(f"throughput ratio kdgm/plain: {ratio:.3f} (overhead {100 * (1 - ratio):.1f}%)")
    print(f"peak memory ratio kdgm/plain: {best['kdgm']['peak_mb'] / best['plain']['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
