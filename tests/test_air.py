"""AIR and AIR-pPrior (Xu et al. 2019, Eq. 4-5): spatial transformer, shapes, masking, KLs, gradients, training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kdgm.data.batch import SceneBatch
from kdgm.data.scenes import SceneConfig, multi_mnist
from kdgm.models.air import AIR, AIROutput
from kdgm.metrics.scenes import inferred_boxes
from kdgm.nn.spatial import glimpse, where_to_boxes, write
from kdgm.objectives.air import AIRELBO

PRIORS = ("fixed", "learned")


def _square_scene(size: int = 50, box=(10, 15, 30, 35)) -> torch.Tensor:
    """(1, 1, size, size) image with a filled square at the half-open pixel box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    image = torch.zeros(1, 1, size, size)
    image[..., y0:y1, x0:x1] = 1.0
    return image


def _small_model(prior: str = "fixed", **kwargs) -> AIR:
    """A narrow AIR on 24 x 24 images: same code paths as the paper's sizes, a fraction of the work."""
    args = dict(image_size=24, max_steps=3, z_what_dim=8, glimpse_size=8, hidden=32, embed_dim=32,
                encoder_hidden=(32,), decoder_hidden=(32,), baseline_hidden=16, prior=prior)
    return AIR(**{**args, **kwargs})


def _scene_batch(n: int = 6, size: int = 24) -> SceneBatch:
    torch.manual_seed(1)
    x = torch.rand(n, 1, size, size)
    return SceneBatch(x=x, boxes=torch.zeros(n, 3, 4), counts=torch.ones(n, dtype=torch.long))


# ------------------------------------------------------------------------------------------- spatial transformer


def test_where_to_boxes_of_a_known_window():
    # s = 20/50 at centre pixel (20, 25): normalised centre (20/25 - 1, 25/25 - 1) = (-0.2, 0)
    z_where = torch.tensor([[0.4, -0.2, 0.0], [1.0, 0.0, 0.0]])
    boxes = where_to_boxes(z_where, 50)
    assert torch.allclose(boxes[0], torch.tensor([10.0, 15.0, 30.0, 35.0]), atol=1e-5)
    assert torch.allclose(boxes[1], torch.tensor([0.0, 0.0, 50.0, 50.0]), atol=1e-5)  # s = 1 is the whole image
    assert where_to_boxes(z_where.expand(3, 2, 3), 50).shape == (3, 2, 4)  # any leading shape


def test_glimpse_reads_the_window():
    image = _square_scene()
    z_where = torch.tensor([[0.4, -0.2, 0.0]])  # exactly the square's box
    inside = glimpse(image, z_where, 20)
    assert inside.shape == (1, 1, 20, 20)
    assert torch.allclose(inside, torch.ones_like(inside), atol=1e-5)
    beside = glimpse(image, torch.tensor([[0.2, 0.6, -0.6]]), 10)  # an empty corner
    assert beside.abs().max() < 1e-6


@pytest.mark.parametrize("size", [20, 13])  # 13: the round trip resamples the square, not a pixel copy
def test_glimpse_then_write_puts_the_object_back(size):
    image = _square_scene()
    z_where = torch.tensor([[0.48, -0.2, 0.0]])  # a window a little larger than the square, around it
    back = write(glimpse(image, z_where, size), z_where, 50)
    assert back.shape == image.shape
    ink, ink_back = image > 0.5, back > 0.5
    iou = (ink & ink_back).sum() / (ink | ink_back).sum()
    assert iou > 0.9
    outside = torch.ones_like(ink)
    x0, y0, x1, y1 = where_to_boxes(z_where, 50)[0].round().long().tolist()
    outside[..., y0:y1, x0:x1] = False
    assert back[outside].abs().max() < 1e-6  # zero outside the window


def test_write_equals_grid_sample_with_the_inverse_affine_grid():
    torch.manual_seed(0)
    z_where = torch.stack([torch.rand(7) * 0.8 + 0.1, torch.rand(7) * 2.4 - 1.2, torch.rand(7) * 2.4 - 1.2], dim=1)
    objects = torch.rand(7, 2, 9, 9)
    s, x, y = z_where.unbind(-1)
    zero = torch.zeros_like(s)
    theta = torch.stack([1 / s, zero, -x / s, zero, 1 / s, -y / s], dim=-1).view(7, 2, 3)
    grid = F.affine_grid(theta, [7, 2, 31, 31], align_corners=False)
    expected = F.grid_sample(objects, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(write(objects, z_where, 31), expected, atol=1e-5)


def test_spatial_transformer_passes_gradients_to_z_where():
    z_where = torch.tensor([[0.4, -0.1, 0.1]], requires_grad=True)
    image = _square_scene()
    (glimpse(image, z_where, 12).sum() + write(torch.rand(1, 1, 12, 12), z_where, 50).sum()).backward()
    assert torch.all(z_where.grad != 0)


# ---------------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("prior", PRIORS)
def test_forward_shapes(prior):
    torch.manual_seed(0)
    model, x = _small_model(prior, max_steps=4), torch.rand(5, 1, 24, 24)
    out = model(x)
    assert isinstance(out, AIROutput)
    for name in ("z_pres", "pres_prob", "log_q_pres", "kl_pres", "kl_where", "kl_what", "prior_pres_prob",
                 "baseline"):
        assert getattr(out, name).shape == (4, 5), name
    assert out.z_where.shape == out.where_loc.shape == out.where_scale.shape == (4, 5, 3)
    assert out.z_what.shape == (4, 5, 8)
    assert out.log_lik.shape == (5,) and out.kl.shape == (5,)
    assert out.canvas.shape == x.shape and out.objects.shape == (4, 5, 1, 8, 8)
    assert out.count.shape == (5,) and out.count.dtype == torch.long
    assert inferred_boxes(out.z_where, out.z_pres, 24)[0].shape == (5, 4, 4)
    assert all(torch.isfinite(t).all() for t in out)
    assert ((out.pres_prob > 0) & (out.pres_prob < 1)).all()
    assert out.canvas.min() >= 0 and out.canvas.max() <= 1  # Bernoulli probabilities

    images, z_where, z_pres = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 24, 24) and z_where.shape == (4, 3, 3) and z_pres.shape == (4, 3)
    assert model.reconstruct(x).shape == x.shape


def test_gaussian_likelihood_and_bad_arguments():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 24, 24)
    out = _small_model(likelihood="gaussian", sigma=0.3)(x)
    assert out.log_lik.shape == (3,) and torch.isfinite(out.log_lik).all()
    with pytest.raises(ValueError, match="prior"):
        _small_model(prior="geometric")
    with pytest.raises(ValueError, match="likelihood"):
        _small_model(likelihood="poisson")
    with pytest.raises(ValueError, match="image_encoder"):
        _small_model(image_encoder="transformer")


def test_decoder_bias_starts_objects_transparent():
    torch.manual_seed(0)
    z_what = torch.randn(2, 5, 8)
    ones, where = torch.ones(2, 5), torch.tensor([0.4, 0.0, 0.0]).expand(2, 5, 3)
    plain = _small_model().render(ones, where, z_what)[0].mean()
    faint = _small_model(decoder_bias=-2.0).render(ones, where, z_what)[0].mean()
    assert 0.35 < plain < 0.65 and faint < 0.25  # sigmoid(0) = 0.5, sigmoid(-2) = 0.12


@pytest.mark.parametrize("prior", PRIORS)
def test_z_pres_is_a_prefix_of_ones_and_masks_the_terms(prior):
    torch.manual_seed(0)
    model = _small_model(prior, max_steps=5)
    with torch.no_grad():
        model.guide_head.bias[0] = 0.0  # presence about 1/2 per step, so every count occurs
    out = model(torch.rand(200, 1, 24, 24))
    z = out.z_pres
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(z[1:] <= z[:-1])  # once 0, stays 0
    assert len(out.count.unique()) >= 3
    prev = torch.cat([torch.ones_like(z[:1]), z[:-1]])
    gone = prev == 0  # fixed by an earlier 0
    assert gone.any()
    assert torch.all(out.log_q_pres[gone] == 0) and torch.all(out.kl_pres[gone] == 0)
    assert torch.all(out.kl_where[z == 0] == 0) and torch.all(out.kl_what[z == 0] == 0)
    assert torch.all(out.pres_prob[gone] > 0)  # the conditional is still reported where it was not used
    live = prev == 1
    expected = torch.where(z == 1, out.pres_prob.log(), (1 - out.pres_prob).log())
    assert torch.allclose(out.log_q_pres[live], expected[live], atol=1e-5)
    boxes, counts = inferred_boxes(out.z_where, z, 24)  # (B, T, 4) present windows first
    assert torch.equal(counts, out.count)
    torch.testing.assert_close(boxes[z.T == 1], where_to_boxes(out.z_where, 24).transpose(0, 1)[z.T == 1])


@pytest.mark.parametrize("prior", PRIORS)
def test_kl_terms_are_non_negative(prior):
    torch.manual_seed(0)
    out = _small_model(prior)(torch.rand(16, 1, 24, 24))
    for name in ("kl_pres", "kl_where", "kl_what"):
        assert (getattr(out, name) >= -1e-6).all(), name


def test_kl_where_is_zero_when_the_guide_equals_the_fixed_prior():
    model = _small_model("fixed")
    with torch.no_grad():
        model.guide_head.weight.zero_()
        raw = torch.tensor([0.4, 0.0, 0.0]).logit()[:1].tolist() + [0.0, 0.0]
        soft = lambda v: v + torch.log(-torch.expm1(-torch.tensor(v - 1e-4)))  # noqa: E731 inverse softplus
        model.guide_head.bias[1:] = torch.tensor(raw + [float(soft(0.1)), float(soft(1.0)), float(soft(1.0))])
        model.guide_head.bias[0] = 0.0  # = logit of the prior's 1/2
    out = model(torch.rand(4, 1, 24, 24))
    assert out.kl_where.abs().max() < 1e-4 and out.kl_pres.abs().max() < 1e-6


@pytest.mark.parametrize("prior", PRIORS)
def test_gradients_reach_every_parameter(prior):
    torch.manual_seed(0)
    model = _small_model(prior)
    with torch.no_grad():
        model.guide_head.bias[0] = 3.0  # objects present at every step, so every step's networks are used
    out = AIRELBO()(model, _scene_batch())
    assert out.total.shape == () and torch.isfinite(out.total)
    assert set(out.terms) == {"nelbo", "log_lik", "kl", "baseline_mse", "count"}
    assert isinstance(out.outputs, AIROutput)
    out.total.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("prior", PRIORS)
def test_one_optimizer_step_changes_the_weights(prior):
    torch.manual_seed(0)
    model = _small_model(prior)
    with torch.no_grad():
        model.guide_head.bias[0] = 3.0
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    AIRELBO()(model, _scene_batch()).total.backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged


def test_score_function_gradient_reaches_the_presence_head_only_through_log_q():
    torch.manual_seed(0)
    model = _small_model()
    out = AIRELBO()(model, _scene_batch())
    grad_total = torch.autograd.grad(out.total, model.guide_head.bias, retain_graph=True)[0][0]
    # the ELBO alone (analytic z_pres KL) moves the presence logit too; the surrogate must add to it
    elbo_only = out.outputs.log_lik.mean() - out.outputs.kl.mean()
    grad_elbo = torch.autograd.grad(-elbo_only, model.guide_head.bias)[0][0]
    assert not torch.isclose(grad_total, grad_elbo)


def test_running_mean_lives_in_the_model_and_updates_only_in_training():
    torch.manual_seed(0)
    model, objective, batch = _small_model(), AIRELBO(momentum=0.5), _scene_batch()
    assert "reward_mean" in model.state_dict() and "reward_updates" in model.state_dict()
    objective(model, batch)
    first = model.reward_mean.clone()
    assert int(model.reward_updates) == 1 and torch.all(first[0] != 0)  # started at the first batch's mean
    objective(model, batch)
    assert int(model.reward_updates) == 2 and not torch.equal(model.reward_mean, first)
    model.eval()
    frozen = model.reward_mean.clone()
    with torch.no_grad():
        objective(model, batch)
    assert torch.equal(model.reward_mean, frozen) and int(model.reward_updates) == 2


def test_the_air_asr_objective_traces_as_one_graph_and_matches_eager():
    """torch.compile(fullgraph=True) of AIR-ASR's objective (AIR-pPrior + the count and box penalties): no graph
    break, no recompile on the second step, the same loss and gradients as eager and the same running-mean update
    (through AOT autograd, where an in-place buffer update under the graph used to fail in backward)."""
    from kdgm.knowledge.structural import StructuralPenalty, count_functionals, overlap_functionals

    def objective_of():
        functionals = {**count_functionals((1, 3)), **overlap_functionals(24)}
        return StructuralPenalty(AIRELBO(), functionals, {name: 1.0 for name in functionals})

    torch.manual_seed(0)
    eager_model = _small_model("learned")
    compiled_model = copy.deepcopy(eager_model)
    eager, compiled = objective_of(), torch.compile(objective_of(), backend="aot_eager", fullgraph=True)
    batch = _scene_batch()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(2):
            losses, grads = [], []
            for model, objective in ((eager_model, eager), (compiled_model, compiled)):
                torch.manual_seed(10 + step)  # the same samples in both
                loss = objective(model, batch).total
                losses.append(loss.detach())
                grads.append(torch.autograd.grad(loss, model.guide_head.weight)[0])
            torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(compiled_model.reward_mean, eager_model.reward_mean)
    assert int(compiled_model.reward_updates) == 2


# ------------------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_short_training_decreases_the_nelbo(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KDGM_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    data = multi_mnist(SceneConfig(counts=(1, 3), n_per_count=500), "train")
    model = AIR(max_steps=3, z_what_dim=20, hidden=128, embed_dim=128, encoder_hidden=(128,),
                decoder_hidden=(128,), baseline_hidden=32)
    objective = AIRELBO()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe = data.batch(torch.arange(256))

    def probe_nelbo() -> float:
        torch.manual_seed(123)  # the same posterior noise before and after
        with torch.no_grad():
            model.eval()
            value = float(objective(model, probe).terms["nelbo"])
            model.train()
        return value

    start = probe_nelbo()
    order = torch.randperm(len(data))
    for step in range(200):
        j = step % (len(data) // 32)
        loss = objective(model, data.batch(order[j * 32 : (j + 1) * 32])).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end = probe_nelbo()
    assert end < 0.6 * start, (start, end)
