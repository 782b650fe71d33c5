"""Adversarial objectives against the lectures' closed forms: the optimal discriminator, the gradient penalty, weight
clipping, and the vanishing gradient of the minimax generator loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdgm.data.batch import ImageBatch
from kdgm.objectives.adversarial import (
    DiscriminatorLoss, GeneratorLoss, WeightClipping, gradient_penalty,
)


class OneDimensional(nn.Module):
    """A fixed generator p_g = N(1, 1) and a logistic discriminator with logit ``a x + b``."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.a = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

    def sample(self, n: int, cond=None) -> torch.Tensor:
        return self.shift + torch.randn(n, 1, dtype=torch.float64)  # (n, 1)

    def discriminate(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        return self.a * x[:, 0] + self.b  # (n,)


def test_the_discriminator_learns_the_optimal_discriminator():
    """D* = p_data / (p_data + p_g): for N(0, 1) against N(1, 1) its logit is log p_data − log p_g = −x + 1/2."""
    torch.manual_seed(0)
    model = OneDimensional()
    objective = DiscriminatorLoss("minimax")
    optimizer = torch.optim.Adam([model.a, model.b], lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        objective(model, ImageBatch(x=torch.randn(4096, 1, dtype=torch.float64))).total.backward()
        optimizer.step()
    assert model.a.item() == pytest.approx(-1.0, abs=0.1)
    assert model.b.item() == pytest.approx(0.5, abs=0.1)


def test_gradient_penalty_equals_its_definition_on_a_linear_critic():
    w = torch.tensor([3.0, 4.0], requires_grad=True)

    def critic(x, cond=None):
        return (x * w).sum(1)  # ∇_x f = w everywhere, ‖w‖ = 5

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx((5 - 1) ** 2)
    penalty.backward()  # d/dw (‖w‖ − 1)² = 2 (‖w‖ − 1) w / ‖w‖
    torch.testing.assert_close(w.grad, 2 * 4 * torch.tensor([3.0, 4.0]) / 5)


def test_weight_clipping_keeps_every_critic_weight_in_range():
    critic = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(critic.parameters(), lr=10.0)
    optimizer.register_step_post_hook(WeightClipping(critic, 0.01))
    for _ in range(3):
        optimizer.zero_grad()
        critic(torch.randn(32, 4)).sum().backward()
        optimizer.step()
        assert all(p.abs().max() <= 0.01 for p in critic.parameters())


def test_the_minimax_generator_gradient_vanishes_where_the_non_saturating_one_does_not():
    """A confident discriminator (D(G(z)) ≈ 0): d/dθ of log(1 − D) is tiny, of −log D is not (lecture notes 5.3)."""
    model = OneDimensional()
    with torch.no_grad():
        model.a.fill_(-2.0), model.b.fill_(-10.0)  # samples of N(1, 1) get logits around −12
    grads = {}
    for loss in ("minimax", "nonsaturating"):
        model.zero_grad()
        torch.manual_seed(1)
        GeneratorLoss(loss)(model, ImageBatch(x=torch.zeros(4096, 1))).total.backward()
        grads[loss] = model.shift.grad.abs().item()
    assert grads["minimax"] < 0.01 * grads["nonsaturating"]


def test_critic_losses_on_fixed_values():
    class Fixed(OneDimensional):
        def discriminate(self, x, cond=None):
            return x[:, 0]

    model = Fixed()
    with torch.no_grad():
        model.shift.fill_(-1.0)
    torch.manual_seed(2)
    real = ImageBatch(x=torch.full((100000, 1), 2.0, dtype=torch.float64))
    w = DiscriminatorLoss("wasserstein")(model, real)
    assert w.terms["w_distance"].item() == pytest.approx(3.0, abs=0.02)  # E f(real) − E f(fake) = 2 − (−1)
    hinge = DiscriminatorLoss("hinge")(model, real)  # relu(1 − 2) = 0; E relu(1 + N(−1, 1)) = E relu(N(0, 1))
    assert hinge.total.item() == pytest.approx(1 / (2 * torch.pi) ** 0.5, abs=0.01)
    with pytest.raises(ValueError, match="unknown GAN loss 'least-squares'"):
        DiscriminatorLoss("least-squares")


class Counting(nn.Module):
    """A conditional generator x = w·onehot(y) + noise that counts its sample calls, with a linear critic."""

    conditional = True

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2))
        self.calls = 0

    def sample(self, n: int, cond=None) -> torch.Tensor:
        self.calls += 1
        return self.w[cond] + 0.1 * torch.randn(n, 2)  # (n, 2)

    def discriminate(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        return x.sum(1)  # (n,)


@pytest.mark.parametrize("share", [True, False])
def test_the_implicit_m_step_gives_its_samples_to_the_generator_loss(share):
    """One generator pass per step: the GAN loss reads the M-step's samples (same loss as sampling anew under the
    same noise), unless sharing is off or the E-step draws several samples per condition."""
    from kdgm.knowledge import FunctionConstraint, ImplicitMStep, PosteriorRegularization

    model = Counting()
    batch = ImageBatch(x=torch.zeros(5, 2), y=torch.tensor([0, 1, 2, 1, 0]))
    pr = PosteriorRegularization(FunctionConstraint(lambda x, y: -x.pow(2).sum(1)), samples=1,
                                 condition=lambda b: b.y)
    torch.manual_seed(0)
    out = ImplicitMStep(pr, base=GeneratorLoss("nonsaturating"), share_samples=share)(model, batch)
    assert model.calls == (1 if share else 2)
    torch.manual_seed(0)
    fake = model.sample(5, batch.y)
    assert torch.allclose(out.terms["g_loss"], GeneratorLoss("nonsaturating").on_samples(model, batch, fake).total) \
        == share
    model.calls = 0
    pr.samples = 2
    ImplicitMStep(pr, base=GeneratorLoss("nonsaturating"), share_samples=share)(model, batch)
    assert model.calls == 2
