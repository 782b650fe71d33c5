"""The shared suite every registered model passes: shapes, gradients to every parameter, one step changes weights."""

from __future__ import annotations

import pytest
import torch

from kdgm.model_suite import MODELS
from kdgm.objectives.adversarial import gan_condition


@pytest.fixture(params=list(MODELS), ids=list(MODELS))
def spec(request):
    torch.manual_seed(0)
    return MODELS[request.param]


def test_objective_is_a_finite_scalar_with_finite_terms(spec):
    model, batch = spec.build(), spec.example()
    out = spec.objective()(model, batch)
    assert out.total.shape == ()
    assert torch.isfinite(out.total)
    assert all(torch.isfinite(v) and v.shape == () for v in out.terms.values())


def _outputs(spec, model, batch):
    """A tensor that depends on every input and parameter: log-weights or logits."""
    if spec.kind == "latent":
        return model(batch.x, k=2).log_weight
    if spec.kind == "scene":
        return model(batch.x).canvas
    if spec.kind == "adversarial":
        return model.discriminate(batch.x, gan_condition(model, batch))
    if spec.kind == "sequence":
        return model.token_log_probs(batch.data(), batch.condition())
    return model(*batch.inputs())


def test_forward_shapes(spec):
    model, batch = spec.build(), spec.example()
    b = len(batch)
    if spec.kind == "latent":
        out = model(batch.x, k=3)
        assert out.log_weight.shape == (3, b)
        assert out.kl.shape == (b,)
        assert out.logits.shape == (3, *batch.x.shape)
    elif spec.kind == "scene":
        out = model(batch.x)
        t = out.z_pres.shape[0]
        assert out.z_pres.shape == (t, b) and out.z_where.shape == (t, b, 3)
        assert out.canvas.shape == batch.x.shape and out.log_lik.shape == (b,) and out.kl.shape == (b,)
    elif spec.kind == "sequence":
        assert model.token_log_probs(batch.data(), batch.condition()).shape == batch.target.shape
        sample = model.sample(b, batch.condition())
        assert sample.tokens.shape[0] == b and sample.lengths.shape == (b,)
    elif spec.kind == "density":
        assert model.log_prob(batch.x).shape == (b,)
        assert model.sample(b).shape == batch.x.shape
    elif spec.kind == "adversarial":
        cond = gan_condition(model, batch)
        assert model.sample(b, cond).shape == batch.x.shape
        assert model.discriminate(batch.x, cond).shape == (b,)
    else:
        logits = model(*batch.inputs())
        assert logits.shape == (b, 2)
        assert torch.isfinite(logits).all()


def test_gradients_reach_every_parameter(spec):
    model, batch = spec.build(), spec.example()
    spec.objective()(model, batch).total.backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))]
    assert not missing, f"no gradient reaches {missing}"


def test_one_optimizer_step_changes_the_weights(spec):
    model, batch = spec.build(), spec.example()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    spec.objective()(model, batch).total.backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[name])]
    assert not unchanged


def test_state_dict_round_trip(spec, tmp_path):
    model, batch = spec.build(), spec.example()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    clone = spec.build()
    clone.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    model.eval(), clone.eval()
    torch.manual_seed(1)
    a = _outputs(spec, model, batch)
    torch.manual_seed(1)
    b = _outputs(spec, clone, batch)
    torch.testing.assert_close(a, b)
