"""Glow on MNIST, kdgm vs normflows: seconds per training step, peak memory and test bits/dim at equal wall time.

The same Glow (L = 2 levels, K = 8 steps of flow per level, coupling networks 3×3 → 1×1 → zero-initialised 3×3 of
width 128, LU-decomposed 1×1 convolutions, sigmoid(·+2) coupling scale, learned conditional split prior, logit
preprocessing with α = 0.05) is built in kdgm (``kdgm.models.flows.Glow(levels=2, steps=8, hidden=128)``) and in
``normflows`` (the peer package: ``nf.MultiscaleFlow`` of ``nf.flows.GlowBlock``, ``nf.flows.Squeeze``,
``nf.flows.Merge``, ``nf.transforms.Logit``), and each is trained with Adam(1e-3), batch 64, on the same MNIST batches
(``load_mnist("train")`` uint8 → :func:`kdgm.models.flows.dequantize`, one seeded order and one seeded noise stream
for both) in its own fresh process for the same wall time. Each process then reports:

* median seconds per step (forward + backward + Adam, batch preparation included), the first ``WARMUP_STEPS``
  steps excluded, and the number of steps done; also the median CPU seconds per step of the process (all its
  threads), which is steadier than wall time on a machine shared with other jobs;
* peak RSS of the process at the end of training (``resource.getrusage``, which includes the interpreter, torch and
  the MNIST arrays; the RSS before the first step is printed next to it);
* test bits/dim of the first ``--eval-examples`` test images, dequantised with a fixed seed, in eval mode.

Both use the same number of threads (torch's default unless ``--threads``; printed). Variants alternate between
repeats (normflows first, then kdgm first, …) and the ratios are taken pair by pair, so that load drifting on a
shared machine hits both alike.

Architectural correspondence and the differences that remain (normflows' ``forward`` is latent → data; the training
direction data → latent is its ``inverse``, which runs each level's list of flows backwards):

* preprocessing: identical, ``nf.transforms.Logit(0.05)`` = kdgm's ``LogitTransform(0.05)``
  (y = logit(α + (1 − 2α)x), log-det included), on the same dequantised x = (k + u)/256;
* per step, data → latent: actnorm → invertible 1×1 conv (P L U, ``use_lu=True``) → affine coupling, in both;
  actnorm is data-initialised on the first batch in both (normflows with the unbiased std, kdgm with the biased one:
  a relative difference of 1/(2·B·H·W) in the initial scale, nothing after);
* coupling: both condition on the first half of the channels with the same network (conv 3×3 → ReLU → conv 1×1 →
  ReLU → zero conv 3×3, biases on; normflows' ``ConvNet2d`` with ``leaky=0``), scale s = σ(raw + 2). They differ in
  where the shift sits: kdgm y_b = x_b·s + t, normflows y_b = (x_b − t)·s (the same family of maps, a different
  parametrisation), and in how the network's output channels are read (kdgm: first half raw scale, second half
  shift; normflows: interleaved). Same parameter count, same FLOPs;
* split prior (``--normflows-prior split``, the default): normflows' ``MultiscaleFlow`` scores each factored-out half
  with an unconditional base distribution, so kdgm's learned conditional prior N(μ(x_a), σ(x_a)²) with
  (μ, log σ) = ZeroConv3×3(x_a) is built from normflows' own blocks as an ``nf.flows.AffineCouplingBlock`` with
  ``scale_map="exp"`` whose network is a single zero-initialised 3×3 ``nf.nets.ConvNet2d`` (x_b → (x_b − μ)·e^{−log σ},
  log-det −Σ log σ, exactly kdgm's ``Split``), followed by a fixed N(0, I) ``nf.distributions.DiagGaussian``; the top
  latent is N(0, I) in both. ``--normflows-prior readme`` instead uses normflows' README recipe (no conditional
  prior; an unconditional ``nf.distributions.GlowBase`` per level, learned per-channel mean and scale), which is a
  slightly cheaper and weaker model than kdgm's;
* initialisation draws differ (random rotations, conv weights) since the two libraries consume the RNG differently;
* kdgm's logit clamps p = α + (1 − 2α)x to [ε, 1 − ε] (float eps), which never binds on dequantised data.

With kdgm's weights copied into the normflows model (1×1 convolutions, coupling networks with their zero last layer,
split priors, actnorms), the two give the same log-density to ~1e-12 nats in float64: the same function, so
bits/dim at equal wall time compares speed of learning, not model class. Both have 433,868 parameters.

Threads: on a machine whose cores are shared with other jobs, two or more torch threads per process can run many
times slower than one (OpenMP threads waiting on each other); pass ``--threads 1`` there and compare ratios.

    python bench/glow_vs_normflows.py [--seconds 600] [--batch-size 64] [--device cpu] [--eval-examples 2000]
                                      [--repeats 1] [--steps 0] [--threads 0] [--normflows-prior split|readme]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("normflows", "kdgm")
LEVELS, STEPS, HIDDEN, ALPHA, LR = 2, 8, 128, 0.05, 1e-3
WARMUP_STEPS = 5
DATA_SEED, NOISE_SEED, EVAL_SEED, MODEL_SEED = 0, 1, 1234, 0
IMAGE_SHAPE = (1, 28, 28)


def build_kdgm():
    """kdgm's Glow; ``log_prob(x)`` (B,) nats on dequantised [0, 1] images."""
    from kdgm.models.flows import Glow

    return Glow(IMAGE_SHAPE, levels=LEVELS, steps=STEPS, hidden=HIDDEN, alpha=ALPHA)


def build_normflows(prior: str = "split"):
    """The same Glow from normflows' blocks; ``log_prob(x, None)`` (B,) nats on dequantised [0, 1] images.

    ``MultiscaleFlow`` lists levels deepest first and each level's flows in the latent → data order, so level
    ``i = L − 1 − j`` of the list is the j-th level met by the data: its flows are [split prior (if it has a split),
    GlowBlock × K, Squeeze], run backwards (squeeze first) on the way to the latents.
    """
    import normflows as nf

    c, h, w = IMAGE_SHAPE
    per_level = []  # data → latent order: (flows in normflows' order, base distribution)
    for j in range(LEVELS):
        c, h, w = 4 * c, h // 2, w // 2  # squeeze
        blocks = [nf.flows.GlowBlock(c, HIDDEN, scale=True, scale_map="sigmoid", split_mode="channel",
                                     init_zeros=True, use_lu=True) for _ in range(STEPS)]
        last = j == LEVELS - 1
        c_out = c if last else c // 2  # the factored-out half (the whole tensor at the top)
        if prior == "readme":
            head, base = [], nf.distributions.GlowBase((c_out, h, w))
        else:
            head = [] if last else [nf.flows.AffineCouplingBlock(
                nf.nets.ConvNet2d((c - c_out, 2 * c_out), (3,), init_zeros=True), scale=True, scale_map="exp",
                split_mode="channel")]
            base = nf.distributions.DiagGaussian((c_out, h, w), trainable=False)
        per_level.append(([*head, *blocks, nf.flows.Squeeze()], base))
        c = c - c_out
    per_level.reverse()  # deepest first
    flows = [f for f, _ in per_level]
    q0 = [b for _, b in per_level]
    merges = [nf.flows.Merge() for _ in range(LEVELS - 1)]
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(alpha=ALPHA), class_cond=False)


def log_prob_fn(variant: str, model):
    if variant == "kdgm":
        return model.log_prob
    return lambda x: model.log_prob(x, None)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(variant: str, args) -> dict:
    import torch

    from kdgm.data.mnist import load_mnist
    from kdgm.models.flows import bits_per_dim, dequantize

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(MODEL_SEED)
    model = (build_kdgm() if variant == "kdgm" else build_normflows(args.normflows_prior)).to(device)
    log_prob = log_prob_fn(variant, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    train = load_mnist("train")[0].unsqueeze(1)  # (60000, 1, 28, 28) uint8
    test = load_mnist("test")[0][: args.eval_examples].unsqueeze(1)
    order_gen = torch.Generator().manual_seed(DATA_SEED)
    noise_gen = torch.Generator().manual_seed(NOISE_SEED)
    per_epoch = len(train) // args.batch_size
    order = torch.randperm(len(train), generator=order_gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_mb = _rss_mb()

    model.train()
    times, cpu_times, losses, step, diverged = [], [], [], 0, None
    start = time.perf_counter()
    while (args.steps and step < args.steps) or (not args.steps and time.perf_counter() - start < args.seconds):
        t0, c0 = time.perf_counter(), time.process_time()
        i = step % per_epoch
        if i == 0 and step:
            order = torch.randperm(len(train), generator=order_gen)
        x = dequantize(train[order[i * args.batch_size: (i + 1) * args.batch_size]], generator=noise_gen)
        loss = -log_prob(x.to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        step += 1
        value = loss.item()
        losses.append(value)
        if not math.isfinite(value):
            diverged = step
            break
    train_s = time.perf_counter() - start
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB

    model.eval()
    eval_gen = torch.Generator().manual_seed(EVAL_SEED)
    total = 0.0
    with torch.no_grad():
        for k in range(0, len(test), 500):
            x = dequantize(test[k: k + 500], generator=eval_gen).to(device)
            total += bits_per_dim(log_prob(x), math.prod(IMAGE_SHAPE)).sum().item()
    timed = times[WARMUP_STEPS:] or times
    cpu_timed = cpu_times[WARMUP_STEPS:] or cpu_times
    tail = losses[-50:]
    return {
        "variant": variant, "threads": torch.get_num_threads(), "steps": step, "train_s": train_s,
        "s_per_step": statistics.median(timed), "cpu_s_per_step": statistics.median(cpu_timed),
        "peak_mb": peak_mb, "base_mb": base_mb,
        "test_bpd": total / len(test), "train_bpd_last50": float(bits_per_dim(
            -torch.tensor(sum(tail) / len(tail)), math.prod(IMAGE_SHAPE))), "diverged_at": diverged,
        "params": sum(p.numel() for p in model.parameters()),
    }


def _line(r: dict) -> str:
    note = f"  diverged at step {r['diverged_at']}" if r["diverged_at"] else ""
    return (f"{r['variant']:<10}{r['s_per_step']:>9.3f}{r['cpu_s_per_step']:>9.3f}{r['steps']:>7d}{r['train_s']:>8.0f}"
            f"{r['peak_mb']:>9.0f}{r['base_mb']:>8.0f}{r['train_bpd_last50']:>11.3f}{r['test_bpd']:>10.3f}{r['params']:>10d}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="training wall time of each variant")
    parser.add_argument("--steps", type=int, default=0, help="train this many steps instead (equal work)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-examples", type=int, default=2000, help="first N test images for bits/dim")
    parser.add_argument("--repeats", type=int, default=1, help="alternating pairs of runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--normflows-prior", choices=("split", "readme"), default="split")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + str(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "normflows" in args.variants and importlib.util.find_spec("normflows") is None:
        sys.exit("glow_vs_normflows: the peer is not installed; pip install -e '.[bench]' (normflows)")
    if args.child:
        print(json.dumps(_child(args.child, args)))
        return
    forwarded = [f"--seconds={args.seconds}", f"--steps={args.steps}", f"--batch-size={args.batch_size}",
                 f"--device={args.device}", f"--eval-examples={args.eval_examples}", f"--threads={args.threads}",
                 f"--normflows-prior={args.normflows_prior}"]
    variants = [v for v in args.variants.split(",") if v]
    budget = f"{args.steps} steps" if args.steps else f"{args.seconds:g} s"
    print(f"Glow L={LEVELS} K={STEPS} hidden={HIDDEN}, batch {args.batch_size}, Adam {LR:g}, MNIST, {budget} of "
          f"training per variant on {args.device}; normflows prior: {args.normflows_prior}", flush=True)
    header = (f"{'variant':<10}{'s/step':>9}{'cpu s':>9}{'steps':>7}{'train s':>8}{'peak MB':>9}{'base MB':>8}"
              f"{'train bpd':>11}{'test bpd':>10}{'params':>10}")
    runs: list[dict[str, dict]] = []
    for rep in range(args.repeats):
        order = variants if rep % 2 == 0 else variants[::-1]
        pair = {}
        for variant in order:
            out = subprocess.run([sys.executable, __file__, f"--child={variant}", *forwarded],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"{variant} failed:\n{out.stderr}")
            pair[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            if rep == 0 and len(pair) == 1:
                print(f"threads: {pair[variant]['threads']} (torch {'default' if not args.threads else 'set'}); "
                      f"test bpd on the first {args.eval_examples} test images\n{header}", flush=True)
            print(_line(pair[variant]), flush=True)
        runs.append(pair)
    if set(variants) != set(VARIANTS):
        return
    step_ratio = [p["kdgm"]["s_per_step"] / p["normflows"]["s_per_step"] for p in runs]
    cpu_ratio = [p["kdgm"]["cpu_s_per_step"] / p["normflows"]["cpu_s_per_step"] for p in runs]
    mem_ratio = [p["kdgm"]["peak_mb"] / p["normflows"]["peak_mb"] for p in runs]
    bpd_diff = [p["kdgm"]["test_bpd"] - p["normflows"]["test_bpd"] for p in runs]
    agg = "median over pairs" if len(runs) > 1 else "one pair"
    print(f"kdgm / normflows ({agg}): seconds per step {statistics.median(step_ratio):.3f} (target <= 0.65), "
          f"(CPU seconds per step {statistics.median(cpu_ratio):.3f}), peak RSS {statistics.median(mem_ratio):.3f}")
    print(f"test bits/dim, kdgm - normflows at equal {'steps' if args.steps else 'wall time'}: "
          f"{statistics.median(bpd_diff):+.3f} (target < 0)")
    if len(runs) > 1:
        print("per pair: step ratio " + ", ".join(f"{r:.3f}" for r in step_ratio)
              + "; bpd difference " + ", ".join(f"{d:+.3f}" for d in bpd_diff))


if __name__ == "__main__":
    main()
