"""The small BigGAN against its papers' definitions: orthogonal regularisation (BigGAN Eq. 3), spectral norm,
the projection discriminator (Miyato & Koyama 2018), truncated noise, the generator EMA, conditional batch norm and
SAGAN's self-attention, and a few hinge-loss steps through the phases of a training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from kdgm.data.batch import ImageBatch
from kdgm.knowledge import FunctionConstraint, ImplicitMStep, PosteriorRegularization
from kdgm.models.biggan import (
    BigGAN, ConditionalBatchNorm, GeneratorEMA, OrthogonalRegularized, SelfAttention, biggan, orthogonal_penalty,
    truncated_noise,
)
from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss
from kdgm.objectives.base import LossOutput, Progress
from kdgm.train import Phase, PhasedUpdater, make_fabric


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def small(**kwargs) -> BigGAN:
    torch.manual_seed(0)
    return biggan(z_dim=16, width=16, **kwargs)


def labelled(n: int = 8) -> ImageBatch:
    return ImageBatch(x=torch.rand(n, 1, 32, 32), y=torch.arange(n) % 10)


def off_diagonal_penalty(w: torch.Tensor) -> torch.Tensor:
    """‖WᵀW ⊙ (1 − I)‖²_F with the filters (rows of torch's (out, in) weight) as the columns of W."""
    gram = w @ w.T
    return (gram * (1 - torch.eye(len(w), dtype=w.dtype))).pow(2).sum()


def spectrally_normalised(model: BigGAN) -> list[nn.Module]:
    return [m for net in (model.generator, model.discriminator) for m in net.modules() if parametrize.is_parametrized(m)]


# orthogonal regularisation

def test_orthogonal_penalty_of_a_2x2_matrix_is_twice_the_squared_inner_product_of_its_filters():
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # filters (1, 2) and (3, 4): inner product 11
    assert orthogonal_penalty(layer).item() == pytest.approx(2 * 11.0**2)


def test_orthogonal_penalty_is_zero_for_orthogonal_filters_of_any_norm():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [-3.0, 0.0, 0.0]]))
        layer.bias.fill_(5.0)  # biases are not weight matrices
    assert orthogonal_penalty(layer).item() == 0.0
    q, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))  # (5, 3) orthonormal columns
    layer = nn.Linear(5, 3, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(q.T)  # three orthonormal filters
    assert orthogonal_penalty(layer).item() == pytest.approx(0.0, abs=1e-24)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 2, 3, 3)])
def test_orthogonal_penalty_equals_its_definition_for_wide_tall_and_convolutional_weights(shape):
    layer = nn.Linear(1, 1, bias=False).double()
    layer.weight = nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    torch.testing.assert_close(orthogonal_penalty(layer), off_diagonal_penalty(layer.weight.flatten(1)))


def test_orthogonal_penalty_of_the_generator_sums_its_raw_weights_and_leaves_out_the_class_embedding():
    model = small()
    expected = sum(off_diagonal_penalty(p.detach().flatten(1)) for name, p in model.generator.named_parameters()
                   if p.dim() >= 2 and name != "shared.weight")
    torch.testing.assert_close(orthogonal_penalty(model.generator), expected)
    with torch.no_grad():
        model.generator.shared.weight.mul_(7.0)
    torch.testing.assert_close(orthogonal_penalty(model.generator), expected)


def test_orthogonal_regularized_adds_beta_times_the_penalty_and_logs_it():
    model, batch = small(), labelled()

    def inner(model, batch) -> LossOutput:
        return LossOutput(torch.tensor(1.0), {"g_loss": torch.tensor(1.0)}, outputs="kept")

    out = OrthogonalRegularized(inner, beta=0.5)(model, batch)
    penalty = orthogonal_penalty(model.generator)
    torch.testing.assert_close(out.total, 1.0 + 0.5 * penalty)
    torch.testing.assert_close(out.terms["ortho"], penalty.detach())
    assert out.terms["g_loss"] == 1.0 and out.outputs == "kept"
    out.total.backward()
    assert model.generator.linear.parametrizations.weight.original.grad.abs().sum() > 0
    assert not hasattr(OrthogonalRegularized(inner), "progress")  # the training loop sets no schedule on it


# spectral normalisation

def test_spectral_norm_keeps_the_largest_singular_value_of_every_layer_near_one():
    model = small()
    layers = spectrally_normalised(model)
    weighted = [m for net in (model.generator, model.discriminator) for m in net.modules()
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and m is not model.generator.shared]
    assert layers == weighted  # every convolution, linear layer and the discriminator's class embedding
    model.eval()
    sigma = torch.stack([torch.linalg.matrix_norm(m.weight.flatten(1), 2) for m in layers])
    torch.testing.assert_close(sigma, torch.ones_like(sigma), atol=1e-3, rtol=0)
    with torch.no_grad():  # raw weights far from norm 1: the power iteration has to find the new σ
        for m in layers:
            m.parametrizations.weight.original.normal_(0, 3)
    batch = labelled(4)
    model.train()
    for _ in range(30):  # one power iteration per layer per training forward pass
        model.discriminate(model.sample(4, batch.y), batch.y)
    model.eval()
    raw = torch.stack([torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), 2) for m in layers])
    sigma = torch.stack([torch.linalg.matrix_norm(m.weight.flatten(1), 2) for m in layers])
    assert (raw > 2).all()
    assert (sigma > 1 - 1e-4).all() and (sigma < 1.05).all(), sigma  # σ̂ ≤ σ: W / σ̂ has σ ≥ 1


# projection discriminator

def test_projection_discriminator_is_psi_plus_the_inner_product_with_the_class_embedding():
    model = small().eval()
    d = model.discriminator
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 3, 3, 9])
    phi = F.relu(d.blocks(x)).sum((2, 3))  # (4, C_φ)
    by_hand = phi @ d.psi.weight[0] + d.psi.bias + (d.embed.weight[y] * phi).sum(1)
    torch.testing.assert_close(model.discriminate(x, y), by_hand)
    other = (y + 1) % 10
    change = model.discriminate(x, other) - model.discriminate(x, y)
    torch.testing.assert_close(change, ((d.embed.weight[other] - d.embed.weight[y]) * phi).sum(1))
    assert (change.abs() > 1e-4).all()


def test_the_discriminator_needs_the_classes():
    with pytest.raises(ValueError, match="class"):
        small().discriminate(torch.rand(2, 1, 32, 32))


# truncation trick

def test_truncated_noise_stays_within_the_threshold():
    seed = torch.Generator().manual_seed(0)
    z = truncated_noise(2000, 16, 0.5, seed)
    assert z.shape == (2000, 16) and z.abs().max() <= 0.5
    assert z.std() > 0.25  # resampled, not clipped or shrunk: about uniform on [−0.5, 0.5] (std 0.29)
    assert (z.abs() == 0.5).float().mean() < 0.01
    assert truncated_noise(2000, 16).abs().max() > 2.0
    with pytest.raises(ValueError):
        truncated_noise(2, 16, 0.0)


def test_sampling_with_truncation_is_reproducible_with_a_seed():
    model = small().eval()
    y = torch.tensor([1, 2, 3])
    a = model.sample(3, y, truncation=0.3, generator=torch.Generator().manual_seed(4))
    b = model.sample(3, y, truncation=0.3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert model.noise(50, truncation=0.3).abs().max() <= 0.3


# exponential moving average of the generator

def test_ema_after_one_step_is_the_weighted_average_and_lives_in_the_state_dict():
    model = small(attention_gamma=0.1)  # γ ≠ 0: every weight moves
    before = {name: p.detach().clone() for name, p in model.generator.named_parameters()}
    optimizer = torch.optim.SGD(model.generator.parameters(), lr=0.1)
    optimizer.register_step_post_hook(GeneratorEMA(model, decay=0.9))
    model.sample(8, labelled().y).square().mean().backward()
    optimizer.step()
    ema = model.generator_ema
    for name, p in model.generator.named_parameters():
        assert not torch.equal(p, before[name]), name
        torch.testing.assert_close(ema.get_buffer(name), 0.9 * before[name] + 0.1 * p.detach())
    for name, buffer in model.generator.named_buffers():  # running statistics, power-iteration vectors: copied
        assert torch.equal(ema.get_buffer(name), buffer), name
    assert model.ema_updates.item() == 1

    state = model.state_dict()
    own = model.generator.state_dict()
    assert all(torch.equal(state[f"generator_ema.{k}"], ema.state_dict()[k]) for k in own)
    assert not any(name.startswith("generator_ema") for name, _ in model.named_parameters())
    assert not any(t.requires_grad for t in ema.state_dict(keep_vars=True).values())
    clone = small(attention_gamma=0.1)
    clone.load_state_dict(state)
    z, y = model.noise(4), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(clone.sample(4, y, z=z, ema=True), model.sample(4, y, z=z, ema=True))
    assert clone.ema_updates.item() == 1


def test_ema_follows_the_generator_until_start_and_stays_in_evaluation_mode():
    model = small()
    hook = GeneratorEMA(model, decay=0.9, start=1)
    with torch.no_grad():
        model.generator.out.parametrizations.weight.original.add_(1.0)
    hook()
    torch.testing.assert_close(model.generator_ema.out.parametrizations.weight.original,
                               model.generator.out.parametrizations.weight.original.detach(), rtol=0, atol=0)
    old = model.generator_ema.out.parametrizations.weight.original.clone()
    with torch.no_grad():
        model.generator.out.parametrizations.weight.original.add_(1.0)
    hook()
    torch.testing.assert_close(model.generator_ema.out.parametrizations.weight.original, old + 0.1)
    model.train()
    assert model.generator.training and not any(m.training for m in model.generator_ema.modules())
    sample = model.sample(4, ema=True)
    assert sample.shape == (4, 1, 32, 32) and not sample.requires_grad


def test_sample_uses_the_ema_generator_in_evaluation_mode_once_it_has_been_updated():
    model = small()
    z, y = model.noise(4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        model.generator.out.parametrizations.weight.original.add_(1.0)  # live and EMA generators now differ
    model.eval()
    live, average = model.sample(4, y, z=z, ema=False), model.sample(4, y, z=z, ema=True)
    assert not torch.allclose(live, average)
    assert torch.equal(model.sample(4, y, z=z), live)  # no EMA update yet: the copy is the initial generator
    GeneratorEMA(model, decay=0.5)()
    average = model.sample(4, y, z=z, ema=True)
    assert torch.equal(model.sample(4, y, z=z), average)
    model.train()
    assert model.sample(4, y, z=z).requires_grad  # training samples the live generator


# conditional batch norm and self-attention

def test_conditional_batch_norm_is_batch_norm_times_one_plus_a_linear_gain_plus_a_linear_bias():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(4, 6)
    cbn.gain.eval(), cbn.bias.eval()  # fixed spectral-norm estimates; batch norm still on batch statistics
    h = torch.randn(8, 4, 5, 5)
    plain = F.batch_norm(h, None, None, training=True)
    torch.testing.assert_close(cbn(h, torch.zeros(8, 6)), plain)  # c = 0: gain 1, bias 0
    c = torch.randn(8, 6)
    gain, bias = 1 + c @ cbn.gain.weight.T, c @ cbn.bias.weight.T  # (8, 4), (8, 4)
    torch.testing.assert_close(cbn(h, c), plain * gain[:, :, None, None] + bias[:, :, None, None])


def test_self_attention_with_gamma_zero_is_the_identity():
    torch.manual_seed(0)
    h = torch.randn(2, 16, 8, 8)
    attention = SelfAttention(16)
    assert attention.gamma.item() == 0.0 and torch.equal(attention(h), h)
    attention = SelfAttention(16, gamma=0.5)
    out = attention(h)
    assert out.shape == h.shape and not torch.allclose(out, h)
    out.sum().backward()
    assert attention.gamma.grad is not None and attention.theta.parametrizations.weight.original.grad.abs().sum() > 0


# sampling and training

def test_samples_have_the_image_shape_and_range_for_given_or_drawn_classes():
    model = small()
    for x in (model.sample(6), model.sample(6, torch.arange(6)), model.sample(6, ema=True),
              model.sample(6, z=model.noise(6), truncation=0.5)):
        assert x.shape == (6, 1, 32, 32) and x.min() >= 0 and x.max() <= 1
    with pytest.raises(ValueError):
        model.sample(6, torch.arange(5))


def test_gradients_reach_every_generator_weight_through_sample():
    model = small(attention_gamma=0.1)  # with γ = 0 the attention's convolutions get no gradient until γ moves
    model.sample(8, torch.arange(8)).mean().backward()
    missing = [name for name, p in model.generator.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    assert all(p.grad is None for p in model.discriminator.parameters())


def test_both_hinge_losses_reach_every_parameter_except_attention_convolutions_at_gamma_zero():
    for gamma in (0.0, 0.1):
        model, batch = small(attention_gamma=gamma), labelled()
        (DiscriminatorLoss("hinge")(model, batch).total + GeneratorLoss("hinge")(model, batch).total).backward()
        missing = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()}
        expected = {f"generator.attention.{conv}.parametrizations.weight.original" for conv in "theta phi g o".split()}
        assert missing == (expected if gamma == 0 else set())


def test_hinge_phases_with_ema_and_orthogonal_regularisation_train_and_stay_finite():
    model, batch = small(), labelled()
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-4, betas=(0.0, 0.999))
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=5e-5, betas=(0.0, 0.999))
    g_opt.register_step_post_hook(GeneratorEMA(model, decay=0.999))
    updater = PhasedUpdater(model, [Phase("d", DiscriminatorLoss("hinge"), d_opt, repeats=2),
                                    Phase("g", OrthogonalRegularized(GeneratorLoss("hinge")), g_opt)])
    updater.setup(make_fabric("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(3):
        logged = updater.step(batch, Progress(step=step))
        assert {"d/d_loss", "g/g_loss", "g/ortho"} <= set(logged)
        assert all(torch.isfinite(v) for v in logged.values())
    assert model.ema_updates.item() == 3
    assert updater.weights_finite()
    state = updater.state_dict()["model"]
    key = "generator_ema.linear.parametrizations.weight.original"
    assert not torch.equal(state[key], before[key])


@pytest.mark.parametrize("per_class", [False, True])
def test_the_implicit_m_step_trains_the_generator_with_drawn_or_given_classes(per_class):
    """Without a condition the S samples are drawn with uniform classes (samples of the class marginal p_θ(x));
    with the labels as the condition, S samples of each labelled class."""
    model, batch = small(), labelled(4)
    by_class = {"condition": lambda b: b.y} if per_class else {}  # default: an ImageBatch gives no condition
    pr = PosteriorRegularization(FunctionConstraint(lambda x: -x.mean((1, 2, 3)), takes_cond=False), samples=3,
                                 **by_class)
    out = ImplicitMStep(pr, base=GeneratorLoss("hinge"))(model, batch)
    assert torch.isfinite(out.total)
    out.total.backward()
    assert model.generator.shared.weight.grad.any()
