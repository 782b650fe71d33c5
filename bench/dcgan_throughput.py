"""Training throughput of a DCGAN on MNIST 32×32: kdgm's loop (two phases of the one updater) vs a minimal
hand-written PyTorch GAN loop.

Both train the same generator and discriminator (:func:`kdgm.models.gan.dcgan`, width 32, z 64) with the
non-saturating loss, one discriminator step then one generator step per batch, Adam(2e-4, β = (0.5, 0.999)), on the
same grey-level batches. Each variant runs in its own fresh process, alternating, best of ``--repeats``. Prints
generator steps/s of each and the ratio (kdgm / plain; 1.0 = no overhead). kdgm's time includes setting up Fabric
and the loop, as a user's run does, so short runs overstate its per-step overhead (2 idle cores: ratio 0.894 at 300
steps, 1.013 at 1,500).

    python bench/dcgan_throughput.py [--steps 1500] [--batch-size 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _setup(batch_size: int):
    import torch

    from kdgm.data.mnist import LabelledImages, grey_images, load_mnist
    from kdgm.models.gan import dcgan

    torch.manual_seed(0)
    images, labels = load_mnist("train")
    data = LabelledImages(grey_images(images[:20000], 32), labels[:20000])
    return data, dcgan(64, 1, 32, 32)


def _adam(params):
    import torch

    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def _plain(steps: int, batch_size: int, device: str) -> float:
    import torch
    import torch.nn.functional as F

    data, model = _setup(batch_size)
    model.to(device)
    d_opt, g_opt = _adam(model.discriminator.parameters()), _adam(model.generator.parameters())
    order = torch.randperm(len(data))
    start = time.perf_counter()
    for step in range(steps):
        i = step % (len(data) // batch_size)
        real = data.batch(order[i * batch_size: (i + 1) * batch_size]).x.to(device)
        with torch.no_grad():
            fake = model.sample(batch_size)
        d_real, d_fake = model.discriminate(real), model.discriminate(fake)
        d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
            F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        g_loss = F.softplus(-model.discriminate(model.sample(batch_size))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _kdgm(steps: int, batch_size: int, device: str) -> float:
    import torch

    from kdgm.data.loader import BatchLoader
    from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss
    from kdgm.train.fabric import make_fabric
    from kdgm.train.loop import fit
    from kdgm.train.updater import Phase, PhasedUpdater

    data, model = _setup(batch_size)
    updater = PhasedUpdater(model, [
        Phase("critic", DiscriminatorLoss("nonsaturating"), _adam(model.discriminator.parameters())),
        Phase("generator", GeneratorLoss("nonsaturating"), _adam(model.generator.parameters())),
    ])
    start = time.perf_counter()
    fit(make_fabric(device), updater, BatchLoader(data, batch_size), max_steps=steps, log_every=50,
        progress_bar=False, tensorboard=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant; the best counts")
    parser.add_argument("--child", choices=("plain", "kdgm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        seconds = {"plain": _plain, "kdgm": _kdgm}[args.child](args.steps, args.batch_size, args.device)
        print(json.dumps({"steps_per_s": args.steps / seconds}))
        return
    forwarded = [f"--steps={args.steps}", f"--batch-size={args.batch_size}", f"--device={args.device}"]
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for variant in ("plain", "kdgm"):
            out = subprocess.run([sys.executable, __file__, f"--child={variant}", *forwarded],
                                 capture_output=True, text=True, check=True)
            rate = json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]
            best[variant] = max(best.get(variant, 0.0), rate)
    print(f"DCGAN 32x32, batch {args.batch_size}, {args.steps} steps on {args.device} (best of {args.repeats})")
    for variant in ("plain", "kdgm"):
        print(f"{variant:<8}{best[variant]:>8.2f} steps/s")
    ratio = best["kdgm"] / best["plain"]
    print(f"throughput ratio kdgm/plain: {ratio:.3f} (overhead {100 * (1 - ratio):.1f}%)")


if __name__ == "__main__":
    main()
