"""Sigmoid belief networks and (reweighted) wake-sleep, proven on nets small enough to enumerate: with 6 visible
and 3 (or 3 + 2) latent units, log p(x), the posterior p(h | x) and KL(p(h|x) ‖ q(h|x)) are exact sums over every
latent (and visible) state."""

from __future__ import annotations

import math

import pytest
import torch

from kdgm.data.batch import ImageBatch
from kdgm.data.loader import BatchLoader
from kdgm.metrics.likelihood import likelihood_metrics
from kdgm.models.sbn import SigmoidBeliefNet
from kdgm.objectives.likelihood import MaximumLikelihood
from kdgm.objectives.wake_sleep import (
    ReweightedWake, ReweightedWakeQ, SleepPhase, SummedPhases, WakePhase, generative_parameters,
    importance_weights, recognition_parameters, wake_sleep_phases,
)
from kdgm.train.fabric import make_fabric
from kdgm.train.loop import fit
from kdgm.train.updater import PhasedUpdater

SHAPE = (1, 2, 3)  # 6 visible units


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def bits(n: int) -> torch.Tensor:
    """(2^n, n) every binary vector of length n; row s is the binary expansion of s."""
    return ((torch.arange(2 ** n)[:, None] >> torch.arange(n)) & 1).double()


def latent_states(model: SigmoidBeliefNet) -> tuple[torch.Tensor, ...]:
    """Every joint latent state, split by layer: each (S, 1, H_l) so that it broadcasts against a (B, ...) batch."""
    table = bits(sum(model.hidden))  # (S, ΣH)
    return tuple(part[:, None, :] for part in table.split(list(model.hidden), dim=1))


def exact_log_joint(model: SigmoidBeliefNet, x: torch.Tensor) -> torch.Tensor:
    """(S, B) log p(x, h) for every latent state h."""
    return model.log_joint(x, latent_states(model))


def exact_log_px(model: SigmoidBeliefNet, x: torch.Tensor) -> torch.Tensor:
    """(B,) log p(x) = log Σ_h p(x, h)."""
    return torch.logsumexp(exact_log_joint(model, x), dim=0)


def exact_posterior(model: SigmoidBeliefNet, x: torch.Tensor) -> torch.Tensor:
    """(S, B) p(h | x)."""
    return torch.softmax(exact_log_joint(model, x), dim=0)


def all_images() -> torch.Tensor:
    """(64, 1, 2, 3) every visible state."""
    return bits(6).view(64, *SHAPE)


def expected_sleep_kl(model: SigmoidBeliefNet) -> float:
    """E_{p(x)} KL(p(h|x) ‖ q(h|x)), summed exactly over all 64 images and every latent state (the pseudo free
    energy's KL, which the sleep phase minimises)."""
    with torch.no_grad():
        x, hs = all_images(), latent_states(model)
        log_joint = model.log_joint(x, hs)  # (S, 64)
        log_px = torch.logsumexp(log_joint, 0)  # (64,)
        log_post = log_joint - log_px  # (S, 64)
        kl = (log_post.exp() * (log_post - model.log_q(x, hs))).sum(0)  # (64,)
        return float((log_px.exp() * kl).sum())


def tiny(hidden=(3,), seed=0, scale=1.0, q_scale=None) -> SigmoidBeliefNet:
    """A 6-visible net in double precision with N(0, scale²) generative weights and N(0, q_scale²) recognition
    weights (a small q_scale: a broad proposal, whose importance weights have a light tail)."""
    torch.manual_seed(seed)
    model = SigmoidBeliefNet(SHAPE, hidden).double()
    with torch.no_grad():
        for p in generative_parameters(model):
            p.normal_(0.0, scale)
        for p in recognition_parameters(model):
            p.normal_(0.0, scale if q_scale is None else q_scale)
    return model


def test_log_joint_and_log_q_match_a_hand_computation():
    model = tiny((3, 2), scale=1.5)
    x = torch.tensor([1.0, 0, 1, 1, 0, 0], dtype=torch.double)
    h1, h2 = torch.tensor([1.0, 0, 1], dtype=torch.double), torch.tensor([0.0, 1], dtype=torch.double)
    g, r = model.generator, model.recognizer

    def bern(p, v):  # Π_i p_i^v_i (1 − p_i)^(1 − v_i)
        return torch.prod(p ** v * (1 - p) ** (1 - v))

    p_h2 = bern(torch.sigmoid(g.prior_logits), h2)
    p_h1 = bern(torch.sigmoid(g.layers[1].weight @ h2 + g.layers[1].bias), h1)
    p_x = bern(torch.sigmoid(g.layers[0].weight @ h1 + g.layers[0].bias), x)
    q_h1 = bern(torch.sigmoid(r.layers[0].weight @ x + r.layers[0].bias), h1)
    q_h2 = bern(torch.sigmoid(r.layers[1].weight @ h1 + r.layers[1].bias), h2)
    image, hs = x.view(1, *SHAPE), (h1[None], h2[None])
    torch.testing.assert_close(model.log_joint(image, hs), torch.log(p_h2 * p_h1 * p_x)[None])
    torch.testing.assert_close(model.log_q(image, hs), torch.log(q_h1 * q_h2)[None])
    out = model(image, hs=[h[None] for h in hs])  # forward on given latents scores them instead of sampling
    torch.testing.assert_close(out.log_joint, torch.log(p_h2 * p_h1 * p_x).view(1, 1))
    torch.testing.assert_close(out.log_weight, torch.log(p_h2 * p_h1 * p_x / (q_h1 * q_h2)).view(1, 1))
    # the exact marginal sums to one over all 64 images
    torch.testing.assert_close(exact_log_px(model, all_images()).exp().sum(), torch.tensor(1.0, dtype=torch.double))


@pytest.mark.parametrize("hidden", [(3,), (3, 2)], ids=["1-layer", "2-layer"])
def test_log_prob_approaches_the_exact_log_likelihood(hidden):
    model = tiny(hidden, scale=1.5, q_scale=0.3)
    x = all_images()[torch.tensor([0, 7, 21, 42, 63])]
    exact = exact_log_px(model, x).detach()  # (5,)
    k = 20000
    with torch.no_grad():  # χ²(p(h|x) ‖ q(h|x)) = Var_q[w / p(x)]: the estimate's relative variance is χ² / k
        hs = latent_states(model)
        log_post = exact_log_joint(model, x) - exact  # (S, 5)
        chi2 = (2 * log_post - model.log_q(x, hs)).exp().sum(0) - 1  # (5,)
        torch.manual_seed(1)
        estimate = model.log_prob(x, k=k, chunk=5000)
        one_sample = model(x, k=4000).log_weight.mean(0)  # the ELBO, by Monte Carlo
        metrics = likelihood_metrics(model, [ImageBatch(x)], k=k, chunk=5000)
    assert ((estimate - exact).abs() < 4 * (chi2 / k).sqrt() + 1e-3).all(), (estimate - exact, (chi2 / k).sqrt())
    assert (one_sample < exact - 0.05).all()  # the ELBO is a strictly lower bound with this q
    assert metrics["nll"] == pytest.approx(-float(exact.mean()), abs=4 * float((chi2 / k).sqrt().max()) + 1e-3)


def test_one_layer_kl_is_the_exact_kl_to_the_prior():
    model = tiny((3,), scale=1.5)
    x = all_images()[:8]
    hs = latent_states(model)
    log_q = model.log_q(x, hs)  # (8 states, 8 images)
    log_prior = model.log_joint(x, hs) - model(x, hs=hs).log_lik  # (8, 8) log p(h)
    exact = (log_q.exp() * (log_q - log_prior)).sum(0)  # (8,)
    torch.testing.assert_close(model(x, k=2).kl, exact)


def test_reweighted_weights_sum_to_one_and_tend_to_the_exact_posterior():
    model = tiny((3, 2), scale=1.5, q_scale=0.3)
    x = all_images()[torch.tensor([5, 50])]
    torch.manual_seed(2)
    with torch.no_grad():
        out = model(x, k=40000)
    w = importance_weights(out.log_weight)  # (k, 2)
    torch.testing.assert_close(w.sum(0), torch.ones(2, dtype=torch.double))
    state = (torch.cat(out.hs, -1) * 2 ** torch.arange(5)).sum(-1).long()  # (k, 2): index of each joint state
    estimate = torch.zeros(32, 2, dtype=torch.double).scatter_add_(0, state, w)  # (S, 2) Σ_i w̃_i 1[h_i = s]
    torch.testing.assert_close(estimate, exact_posterior(model, x), atol=0.01, rtol=0)


OBJECTIVES = {
    "wake": (WakePhase(), "generator"),
    "wake-k3": (WakePhase(k=3), "generator"),
    "sleep": (SleepPhase(), "recognizer"),
    "rws-wake": (ReweightedWake(k=4), "generator"),
    "rws-wake-q": (ReweightedWakeQ(k=4, sleep=False), "recognizer"),
    "rws-wake-q+sleep": (ReweightedWakeQ(k=4), "recognizer"),
    "log-prob (maximum likelihood)": (MaximumLikelihood(), "generator"),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_phase_reaches_only_its_parameter_group(name):
    objective, group = OBJECTIVES[name]
    model = tiny((3, 2))
    objective(model, ImageBatch(all_images()[::3])).total.backward()
    own = dict(generator=generative_parameters, recognizer=recognition_parameters)[group](model)
    other = recognition_parameters(model) if group == "generator" else generative_parameters(model)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    assert all(p.grad is None or not p.grad.any() for p in other)
    assert {id(p) for p in own} | {id(p) for p in other} == {id(p) for p in model.parameters()}


def test_summed_phases_give_each_group_its_own_phase_gradient():
    model, batch = tiny((3, 2)), ImageBatch(all_images()[::3])

    def grads():
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return out

    torch.manual_seed(3)
    SummedPhases(WakePhase(), SleepPhase())(model, batch).total.backward()
    summed = grads()
    torch.manual_seed(3)  # the same samples: the wake's draw, then the sleep's fantasy
    wake, sleep = WakePhase()(model, batch), SleepPhase()(model, batch)
    wake.total.backward()
    alone = grads()
    sleep.total.backward()
    alone.update(grads())
    assert summed.keys() == alone.keys() == dict(model.named_parameters()).keys()
    for name, g in summed.items():
        torch.testing.assert_close(g, alone[name])


def test_sleep_training_reduces_the_exact_kl_of_fantasies():
    model = tiny((3, 2), seed=4, scale=2.0)
    before_gen = [p.detach().clone() for p in generative_parameters(model)]
    optimizer = torch.optim.Adam(recognition_parameters(model), lr=0.05)
    sleep, batch = SleepPhase(n=64), ImageBatch(all_images())
    start = expected_sleep_kl(model)
    for _ in range(150):
        optimizer.zero_grad()
        sleep(model, batch).total.backward()
        optimizer.step()
    assert expected_sleep_kl(model) < 0.5 * start
    assert all(torch.equal(p, q) for p, q in zip(generative_parameters(model), before_gen))


def test_wake_training_raises_the_exact_log_likelihood_of_data_from_a_known_net():
    truth = tiny((3,), seed=5, scale=3.0)
    torch.manual_seed(6)
    data, _ = truth.fantasy(256)  # (256, 1, 2, 3)
    model = tiny((3,), seed=7, scale=0.5)
    optimizer = torch.optim.Adam(generative_parameters(model), lr=0.05)
    wake, batch = WakePhase(k=4), ImageBatch(data)

    def exact_terms():
        with torch.no_grad():
            log_joint, hs = exact_log_joint(model, data), latent_states(model)  # (S, N)
            log_q = model.log_q(data, hs)  # (S, N)
            elbo = (log_q.exp() * (log_joint - log_q)).sum(0).mean()
            return float(torch.logsumexp(log_joint, 0).mean()), float(elbo)

    (ll_start, elbo_start), ll_truth = exact_terms(), float(exact_log_px(truth, data).mean().detach())
    for _ in range(150):
        optimizer.zero_grad()
        wake(model, batch).total.backward()
        optimizer.step()
    ll_end, elbo_end = exact_terms()
    assert elbo_end > elbo_start + 0.5  # the wake phase ascends the free energy in θ (q held fixed)
    assert ll_end > ll_start + 0.5
    assert ll_end > ll_truth - 1.5  # within reach of the true net, though q was never trained


def test_samples_are_binary_images_of_the_right_shape():
    torch.manual_seed(0)
    model = SigmoidBeliefNet()
    x = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (5, 1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, model.sample(5, generator=torch.Generator().manual_seed(1)))
    means = model.sample(3, mean=True)
    assert means.shape == (3, 1, 28, 28) and ((means > 0) & (means < 1)).all()
    images, hs = model.fantasy(4)
    assert images.shape == (4, 1, 28, 28) and [h.shape for h in hs] == [(4, 200), (4, 200)]
    out = model(images, k=3)
    assert out.log_weight.shape == (3, 4) and out.kl.shape == (4,) and out.logits.shape == (3, 4, 1, 28, 28)
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.zeros(2))
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(images, torch.zeros(4))


class BarsAndStripes:
    """4×4 bars and stripes (MacKay 2003): every row (or every column) all on or all off, as ``n`` draws of the 30
    distinct patterns; log p(x) of the true distribution is −log 30 ≈ −3.40."""

    def __init__(self, n: int = 2000, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        lines = torch.randint(0, 2, (n, 4), generator=g).float()  # (n, 4)
        rows = lines[:, :, None].expand(n, 4, 4)
        vertical = torch.rand(n, generator=g) < 0.5
        self.x = torch.where(vertical[:, None, None], rows.transpose(1, 2), rows).unsqueeze(1)  # (n, 1, 4, 4)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: torch.Tensor) -> ImageBatch:
        return ImageBatch(self.x[index])


@pytest.mark.parametrize("method", ["ws", "rws"])
def test_two_phase_training_through_fit_lowers_the_importance_sampled_nll(method):
    torch.manual_seed(0)
    data = BarsAndStripes()
    model = SigmoidBeliefNet((1, 4, 4), hidden=(10, 4))
    model.init_visible_bias(data.x.mean(0))
    held_out = [ImageBatch(BarsAndStripes(500, seed=1).x)]
    before = likelihood_metrics(model, held_out, k=100)
    updater = PhasedUpdater(model, wake_sleep_phases(model, method, k=5 if method == "rws" else 1, lr=0.02))
    result = fit(make_fabric("cpu"), updater, BatchLoader(data, 50, seed=0), max_steps=400, log_every=100,
                 tensorboard=False, progress_bar=False)
    after = likelihood_metrics(model, held_out, k=100)
    assert result.steps == 400
    assert math.isfinite(after["nll"]) and after["nll"] < before["nll"] - 2.0, (before, after)
    assert after["nelbo"] >= after["nll"] - 0.05  # the one-sample bound is looser than the 100-sample one
