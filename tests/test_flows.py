"""Normalizing flows (kdgm.models.flows): one parametrised suite over every invertible layer and both models
(invertibility, log-det = log |det| of the autograd Jacobian), then the models' contracts (exact inference,
sampling as the exact inverse, save/load, maximum likelihood), actnorm's initialisation, the 1×1 convolutions,
dequantisation and bits per dimension."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from kdgm.data.batch import ImageBatch
from kdgm.models.flows import (
    ActNorm, AffineCoupling, CheckerboardCoupling, Glow, GlowStep, InvConv1x1, InvConv1x1LU, LogitTransform, RealNVP,
    Split, Squeeze, bits_per_dim, dequantize,
)
from kdgm.objectives.likelihood import MaximumLikelihood


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


class ModelAsLayer(torch.nn.Module):
    """A flow model seen as one bijection x → flat latents, so the layer suite covers the models too."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        latents, logdet = self.model.transform(x)
        return self.model.flatten_latents(latents), logdet  # (B, D), (B,)

    def inverse(self, z):
        return self.model.decode(z)


# name → (build, example shape (C, H, W), inputs: "normal" for N(0, 1), "unit" for (0, 1))
BIJECTIONS = {
    "checkerboard-even": (lambda: CheckerboardCoupling(2, hidden=8, parity=0), (2, 4, 4), "normal"),
    "checkerboard-odd-1ch": (lambda: CheckerboardCoupling(1, hidden=8, parity=1), (1, 4, 4), "normal"),
    "channel-coupling-tanh": (lambda: AffineCoupling(4, hidden=8, parity=0), (4, 2, 2), "normal"),
    "channel-coupling-odd-c": (lambda: AffineCoupling(3, hidden=8, parity=1), (3, 2, 2), "normal"),
    "glow-coupling-sigmoid": (lambda: AffineCoupling(4, hidden=8, scale="sigmoid"), (4, 2, 2), "normal"),
    "actnorm": (lambda: ActNorm(3), (3, 2, 2), "normal"),
    "invconv-1x1": (lambda: InvConv1x1(4), (4, 2, 2), "normal"),
    "invconv-1x1-lu": (lambda: InvConv1x1LU(4), (4, 2, 2), "normal"),
    "squeeze": (Squeeze, (1, 4, 4), "normal"),
    "split-learned-prior": (lambda: Split(4), (4, 2, 2), "normal"),
    "split-fixed-prior": (lambda: Split(4, learn_prior=False), (4, 2, 2), "normal"),
    "logit": (lambda: LogitTransform(0.05), (1, 4, 4), "unit"),
    "glow-step": (lambda: GlowStep(4, hidden=8), (4, 2, 2), "normal"),
    "model-glow": (lambda: ModelAsLayer(Glow((1, 8, 8), levels=2, steps=2, hidden=8)), (1, 8, 8), "unit"),
    "model-glow-plain-tanh": (lambda: ModelAsLayer(Glow((1, 4, 4), levels=2, steps=1, hidden=8, lu=False,
                                                        scale="tanh")), (1, 4, 4), "unit"),
    "model-realnvp": (lambda: ModelAsLayer(RealNVP((1, 8, 8), levels=2, hidden=8)), (1, 8, 8), "unit"),
}


def _inputs(shape, kind, n=3, dtype=torch.float64):
    x = torch.randn(n, *shape, dtype=dtype)
    return torch.sigmoid(x) if kind == "unit" else 2.0 * x + 0.5  # not already standardised: actnorm has work


def _perturb(module, scale=0.3):
    """Move every weight off its (often identity-making) initialisation, so that the checks are not trivial."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


@pytest.fixture(params=list(BIJECTIONS), ids=list(BIJECTIONS))
def bijection(request):
    """(layer in float64, primed so actnorm has initialised on x; example x)."""
    torch.manual_seed(0)
    build, shape, kind = BIJECTIONS[request.param]
    layer = _perturb(build().double())
    x = _inputs(shape, kind)
    layer(x)  # first forward in training mode: data-dependent initialisation of every actnorm
    return layer, x


def test_forward_returns_y_and_a_per_example_logdet(bijection):
    layer, x = bijection
    y, logdet = layer(x)
    assert logdet.shape == (len(x),) and torch.isfinite(logdet).all() and torch.isfinite(y).all()


def test_inverse_undoes_forward(bijection):
    layer, x = bijection
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(layer.inverse(y))[0], y, atol=1e-5, rtol=0)


def test_logdet_is_the_log_abs_det_of_the_autograd_jacobian(bijection):
    layer, x = bijection
    _, logdet = layer(x)
    for i in range(len(x)):
        def flat(v, shape=x.shape[1:]):
            return layer(v.view(1, *shape))[0].flatten()

        jac = jacobian(flat, x[i].flatten(), vectorize=True)  # (D, D)
        torch.testing.assert_close(torch.linalg.slogdet(jac).logabsdet, logdet[i], atol=1e-6, rtol=1e-6)


# -- the models -----------------------------------------------------------------------------------------------

MODELS = {
    "glow": lambda **kw: Glow(levels=2, steps=2, hidden=16, **kw),
    "glow-plain": lambda **kw: Glow(levels=2, steps=1, hidden=16, lu=False, **kw),
    "realnvp": lambda **kw: RealNVP(levels=2, hidden=16, **kw),
}


@pytest.fixture(params=list(MODELS), ids=list(MODELS))
def build(request):
    torch.manual_seed(0)
    return MODELS[request.param]


def _digits(n=8, seed=0):
    """(n, 1, 28, 28) dequantised grey images with some structure (a bright bar on a dark ground, jittered)."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 40, (n, 1, 28, 28), generator=g)
    for i in range(n):
        col = 8 + i % 10
        levels[i, 0, 4:24, col : col + 3] = torch.randint(200, 256, (20, 3), generator=g)
    return dequantize(levels.to(torch.uint8), generator=g)


def test_model_shapes_and_exact_inference(build):
    model = _perturb(build(), 0.05)
    x = _digits(4)
    log_p = model.log_prob(x)
    assert log_p.shape == (4,) and torch.isfinite(log_p).all()
    z = model.encode(x)
    assert [tuple(t.shape[1:]) for t in z] == model.latent_shapes
    assert sum(math.prod(s) for s in model.latent_shapes) == model.num_dims == 784
    torch.testing.assert_close(model.decode(z), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.decode(model.flatten_latents(z)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.log_prob(model.decode(z)), log_p, atol=1e-3, rtol=1e-5)


def test_sample_is_the_exact_inverse_on_prior_draws(build):
    model = _perturb(build(), 0.05)
    model(_digits(4))  # initialise actnorm on data first, as training would
    x = model.sample(3, temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert x.shape == (3, 1, 28, 28)
    g = torch.Generator().manual_seed(5)
    draws = [0.7 * torch.randn(3, *s, generator=g) for s in model.latent_shapes]
    torch.testing.assert_close(x, model.decode(draws))
    for got, drawn in zip(model.encode(x), draws):
        torch.testing.assert_close(got, drawn, atol=1e-4, rtol=1e-4)
    log_p = model.log_prob(x)
    assert log_p.shape == (3,) and torch.isfinite(log_p).all()
    again = model.sample(3, temperature=0.7, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(again, x)
    still = model.sample(2, temperature=0.0)
    torch.testing.assert_close(still[0], still[1])


def test_models_are_unconditional_and_check_shapes():
    model = Glow(levels=1, steps=1, hidden=4)
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(_digits(2), torch.zeros(2))
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.zeros(2))
    with pytest.raises(ValueError, match="takes"):
        model.log_prob(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="even sides"):
        Glow(levels=3)  # 28 → 14 → 7 → odd
    assert RealNVP(levels=3, hidden=4).latent_shapes == [(2, 14, 14), (4, 7, 7), (4, 7, 7)]


def test_save_load_gives_the_same_log_prob_and_actnorm_does_not_reinitialise(build, tmp_path):
    model = build()
    model(_digits(8, seed=1))  # data-dependent initialisation
    torch.save(model.state_dict(), tmp_path / "flow.pt")
    torch.manual_seed(123)
    clone = build()
    clone.load_state_dict(torch.load(tmp_path / "flow.pt", weights_only=True))
    x = _digits(4, seed=2)  # a different batch, in training mode: an uninitialised actnorm would re-initialise
    torch.testing.assert_close(clone.log_prob(x), model.log_prob(x))
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name
    norms = [m for m in clone.modules() if isinstance(m, ActNorm)]
    assert all(bool(m.initialized) for m in norms)


def test_maximum_likelihood_lowers_the_nll(build):
    model = build()  # zero-initialised couplings, as Glow trains
    batch = ImageBatch(x=_digits(16))
    objective = MaximumLikelihood()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = objective(model, batch)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 20.0  # nats per image


def test_every_parameter_gets_a_gradient_without_zero_init(build):
    model = build(zero_init=False)
    MaximumLikelihood()(model, ImageBatch(x=_digits(4))).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


# -- single layers ----------------------------------------------------------------------------------------------


def test_actnorm_initialises_to_zero_mean_unit_variance_once():
    norm = ActNorm(3)
    scale, shift = torch.tensor([0.5, 2.0, 7.0])[:, None, None], torch.tensor([3.0, -1.0, 0.0])[:, None, None]
    x = torch.randn(16, 3, 5, 5) * scale + shift  # (16, 3, 5, 5), channel means 3, −1, 0 and stds 0.5, 2, 7
    assert not bool(norm.initialized)
    y, logdet = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert bool(norm.initialized)
    params = [p.detach().clone() for p in norm.parameters()]
    norm(5 * x + 1)  # a second batch leaves the parameters alone
    assert all(torch.equal(a, b) for a, b in zip(params, norm.parameters()))
    torch.testing.assert_close(logdet, torch.full((16,), 25 * norm.log_scale.sum().item()))


def test_actnorm_does_not_initialise_in_eval_mode():
    norm = ActNorm(2).eval()
    x = torch.randn(4, 2, 3, 3) + 3
    y, logdet = norm(x)
    assert torch.equal(y, x) and not bool(norm.initialized) and torch.all(logdet == 0)


def test_zero_initialised_couplings_start_as_the_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3)
    for layer in (AffineCoupling(4, 8), CheckerboardCoupling(4, 8), Split(4)):
        y, logdet = layer(x)
        assert torch.equal(y, x) and torch.all(logdet == 0), type(layer).__name__
    y, logdet = AffineCoupling(4, 8, scale="sigmoid")(x)  # Glow's σ(raw + 2): a fixed contraction of x_b at start
    s = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(y, torch.cat([x[:, :2], s * x[:, 2:]], 1))
    torch.testing.assert_close(logdet, torch.full((2,), 18 * math.log(s)))


def test_lu_and_plain_1x1_convolutions_agree_for_the_same_matrix():
    torch.manual_seed(0)
    w = torch.randn(5, 5, dtype=torch.float64)  # not orthogonal: log |det W| is not 0
    plain, lu = InvConv1x1(5, weight=w), InvConv1x1LU(5, weight=w)
    torch.testing.assert_close(lu.weight(), w)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    (y_plain, ld_plain), (y_lu, ld_lu) = plain(x), lu(x)
    torch.testing.assert_close(y_lu, y_plain)
    torch.testing.assert_close(ld_lu, ld_plain)
    torch.testing.assert_close(ld_plain, torch.full((2,), 12 * torch.linalg.slogdet(w).logabsdet.item(),
                                                    dtype=torch.float64))
    fresh = InvConv1x1(4)  # a random rotation: |det W| = 1
    assert abs(torch.linalg.slogdet(fresh.weight).logabsdet.item()) < 1e-5


def test_squeeze_layout():
    x = torch.arange(32.0).view(1, 2, 4, 4)
    y, logdet = Squeeze()(x)
    assert y.shape == (1, 8, 2, 2) and torch.all(logdet == 0)
    assert y[0, :4, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left 2×2 block of channel 0
    assert y[0, :4, 1, 1].tolist() == [10.0, 11.0, 14.0, 15.0]
    assert y[0, 4:, 0, 0].tolist() == [16.0, 17.0, 20.0, 21.0]  # channel 1's block


# -- dequantisation and bits per dimension -----------------------------------------------------------------------


def test_bits_per_dim_hand_cases():
    d = 784
    assert bits_per_dim(torch.tensor(0.0), d).item() == pytest.approx(8.0)  # uniform density on [0, 1]^D
    assert bits_per_dim(d * math.log(2.0), d).item() == pytest.approx(7.0)  # twice as dense: one bit less
    # −100 nats: 8 + 100 / (784 · 0.693147) = 8 + 100 / 543.4274 = 8.184017 bits
    hand = 8.0 + 100.0 / 543.4274
    assert bits_per_dim(torch.tensor([-100.0], dtype=torch.float64), d).tolist() == pytest.approx([hand], abs=1e-6)


def test_dequantize_puts_each_level_in_its_bin():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = dequantize(levels, generator=torch.Generator().manual_seed(0))
    k = levels.float()
    assert x.dtype == torch.float32 and torch.all(x >= k / 256) and torch.all(x < (k + 1) / 256)
    grey = dequantize(levels.float() / 255.0, generator=torch.Generator().manual_seed(0))  # kdgm.data's k/255
    torch.testing.assert_close(grey, x)
    assert not torch.equal(dequantize(levels), dequantize(levels))  # fresh noise without a generator
    with pytest.raises(ValueError):
        dequantize(torch.tensor([256]))


# --- flows-mnist's knowledge row -----------------------------------------------------------------------------------


def test_thin_strokes_scores_thick_ink_only():
    from kdgm.experiments.flows_mnist import thin_strokes

    x = torch.zeros(3, 1, 28, 28)
    x[0, 0, 5:20, 10:12] = 1.0  # a stroke two pixels wide: no pixel has a full 3x3 block of ink
    x[1, 0, 5:10, 5:10] = 1.0  # a 5x5 blob: its inner 3x3 pixels are ink with all their neighbours
    x[2, 0, 5:10, 5:10] = 0.4  # grey below the ink threshold
    torch.testing.assert_close(thin_strokes(x), torch.tensor([0.0, -9 / 784, 0.0]))


@pytest.mark.parametrize("row", ["Glow + thin strokes", "Glow + no specks"])
def test_the_knowledge_rows_train_glow_by_the_explicit_m_step(row):
    from kdgm import config as cfgmod
    from kdgm.experiments.flows_mnist import CONSTRAINTS, FlowsConfig, FlowsMnist
    from kdgm.experiments.rundir import row_config
    from kdgm.knowledge import ExplicitMStep

    experiment = FlowsMnist()
    base = cfgmod.apply(FlowsConfig(), experiment.presets["smoke"].values)
    rows = {row.name: row for row in experiment.rows}
    config = row_config(experiment, base, rows[row])
    model = experiment.build_model(config, None)
    objective = experiment.phases(config, model, None)[0].objective
    assert isinstance(objective, ExplicitMStep) and objective.pr.samples == config.pr_samples
    assert objective.pr.constraint.fn is CONSTRAINTS[config.constraint] and objective.min_log_prob is not None
    assert not isinstance(experiment.phases(row_config(experiment, base, rows["Glow"]), model, None)[0].objective,
                          ExplicitMStep)
    out = objective(model, ImageBatch(x=torch.rand(4, 1, 28, 28)))
    out.total.backward()
    assert torch.isfinite(out.total) and "ess" in out.terms


def test_the_knowledge_rows_and_their_base_fine_tune_the_glow_row_alike():
    """The paired design: the constraint rows and "Glow, continued" start from the Glow row's weights and differ
    from one another only in the constraint (same steps, learning rate and schedule)."""
    from dataclasses import asdict
    from kdgm import config as cfgmod
    from kdgm.experiments.flows_mnist import CONTINUED, SPECKS, THIN, FlowsConfig, FlowsMnist
    from kdgm.experiments.rundir import row_config

    experiment = FlowsMnist()
    base = cfgmod.apply(FlowsConfig(), experiment.presets["quick"].values)
    rows = {row.name: row for row in experiment.rows}
    configs = {name: asdict(row_config(experiment, base, rows[name])) for name in (CONTINUED, THIN, SPECKS)}
    for name, config in configs.items():
        assert rows[name].init_from == "Glow"
        assert (config["steps"], config["lr"], config["warmup_steps"]) == (base.finetune_steps, base.finetune_lr, 0)
        differing = {key for key in config if config[key] != configs[CONTINUED][key]}
        assert differing <= {"constraint", "pr_alpha"}, name
    assert asdict(row_config(experiment, base, rows["Glow"]))["steps"] == base.steps


def test_isolated_ink_counts_specks_only():
    from kdgm.experiments.flows_mnist import isolated_ink, no_specks

    x = torch.zeros(3, 1, 28, 28)
    x[0, 0, 5:20, 10:11] = 1.0  # a stroke one pixel wide: every ink pixel has an ink neighbour
    x[1, 0, 3, 3] = x[1, 0, 10, 20] = x[1, 0, 0, 27] = 1.0  # three specks, one in a corner
    x[1, 0, 10, 22] = 1.0  # two pixels apart: still a speck (its nearest ink is not a neighbour)
    x[2, 0, 4, 4] = x[2, 0, 5, 5] = 1.0  # diagonal neighbours: no speck
    torch.testing.assert_close(isolated_ink(x), torch.tensor([0.0, 4.0, 0.0]))
    torch.testing.assert_close(no_specks(x), -isolated_ink(x))
