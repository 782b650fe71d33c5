"""Convolutional sentence classifier of Kim (2014) "Convolutional Neural Networks for Sentence Classification".

The CNN-non-static variant: a trainable embedding table (optionally initialised with pre-trained vectors, see
:func:`kdgm.data.embeddings.pretrained_matrix`), one 1-D convolution per filter width (3, 4, 5) with 100 feature
maps each, ReLU, max-over-time pooling, dropout 0.5 and a linear layer whose weight rows are kept at L2 norm at most
3 after every update. Hu et al. (2016) "Harnessing Deep Neural Networks with Logic Rules" use this network as the
student of rule distillation.

Unlike Kim's code, which pools over every position of a batch padded to one fixed length, the pooling here ignores
windows that lie past the end of the sentence, so the logits do not depend on how much padding a batch carries.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.data.text import Vocabulary


class SentenceCNN(nn.Module):
    """Kim (2014) CNN-non-static sentence classifier returning class logits.

    Args:
        vocab_size: rows of the embedding table; id ``Vocabulary.PAD`` (0) is padding.
        n_classes: number of output classes K.
        embed_dim: embedding width E; defaults to ``init``'s width, or 300 (Kim's word2vec) without ``init``.
        widths: filter widths (Kim: 3, 4, 5).
        n_filters: feature maps per width (Kim: 100).
        dropout: dropout rate on the pooled features (Kim: 0.5).
        max_norm: L2 bound on each row of the output weight, enforced by :meth:`apply_max_norm` (Kim: 3).
        init: (vocab_size, embed_dim) initial embedding table; copied, and its padding row is zeroed.
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        embed_dim: int | None = None,
        widths: Sequence[int] = (3, 4, 5),
        n_filters: int = 100,
        dropout: float = 0.5,
        max_norm: float = 3.0,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        if embed_dim is None:
            embed_dim = init.shape[1] if init is not None else 300
        if init is not None and tuple(init.shape) != (vocab_size, embed_dim):
            raise ValueError(f"init must be ({vocab_size}, {embed_dim}), got {tuple(init.shape)}")
        if not widths or min(widths) < 1:
            raise ValueError(f"filter widths must be positive, got {tuple(widths)}")
        self.widths = tuple(int(w) for w in widths)
        self.max_norm = float(max_norm)
        # padding_idx keeps the padding row's gradient at zero, so a zero padding row stays zero.
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=Vocabulary.PAD)
        if init is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(init)
                self.embedding.weight[Vocabulary.PAD] = 0.0
        # Conv1d holds each width's filters (F, E, h) and bias with PyTorch's default init; features() applies them.
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, n_filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(n_filters * len(self.widths), n_classes)

    def features(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, len(widths)·n_filters) max-pooled convolution features, before dropout.

        Args:
            tokens: (B, T) long ids padded with ``Vocabulary.PAD`` on the right.
            lengths: (B,) long number of real tokens; None counts the non-padding ids.
        """
        if lengths is None:
            lengths = (tokens != Vocabulary.PAD).sum(1)  # (B,)
        # A convolution of width h needs h positions; padding a short batch keeps every width defined.
        short = max(self.widths) - tokens.shape[1]
        if short > 0:
            tokens = F.pad(tokens, (0, short), value=Vocabulary.PAD)
        x = self.embedding(tokens)  # (B, T, E)
        b, t, e = x.shape
        positions = torch.arange(t, device=tokens.device)  # (T,)
        pooled = []
        for conv in self.convs:
            h = conv.kernel_size[0]
            # The convolution as one matrix product over the batch: on CPU, nn.Conv1d's oneDNN kernels were ~2x
            # slower on small batches (1.2x on 50 SST-2 sentences) and stalled when their threads shared busy cores.
            # Window t covers tokens t..t+h-1; unfold orders it (E, h), as conv.weight (F, E, h) is laid out.
            windows = x.unfold(1, h, 1).reshape(b, t - h + 1, e * h)  # (B, T-h+1, E·h)
            scores = windows @ conv.weight.reshape(len(conv.weight), e * h).T + conv.bias  # (B, T-h+1, F)
            # Keep the windows that end inside the sentence; a sentence shorter than h keeps its first window
            # (real tokens followed by padding, as in Kim's zero padding), so every row has one.
            valid = positions[: t - h + 1] < (lengths - h + 1).clamp(min=1).unsqueeze(1)  # (B, T-h+1)
            scores = scores.masked_fill(~valid.unsqueeze(2), float("-inf"))
            pooled.append(scores.amax(1))  # (B, F)
        # ReLU is monotone, so max-then-ReLU equals Kim's ReLU-then-max while activating (B, F) instead of (B, F, T).
        return F.relu(torch.cat(pooled, 1))  # (B, len(widths)·F)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, K) class logits of sentences ``tokens`` (B, T) with ``lengths`` (B,) (see :meth:`features`)."""
        return self.output(self.dropout(self.features(tokens, lengths)))

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Rescale each row of the output weight to L2 norm at most ``max_norm`` (Kim 2014, section 2.1).

        Kim rescales a row to norm ``s = 3`` whenever a gradient step takes it past ``s``; rows within the bound are
        left as they are.
        """
        self.output.weight.renorm_(2, 0, self.max_norm)


def max_norm_hook(model: nn.Module) -> Callable[[torch.optim.Optimizer, tuple, dict], None]:
    """An optimizer step post-hook applying Kim's max-norm constraint to every :class:`SentenceCNN` in ``model``.

    ``model`` may wrap the CNN (a distillation teacher-student pair, a Fabric or DDP wrapper): every submodule that is
    a SentenceCNN is constrained. Use ``optimizer.register_step_post_hook(max_norm_hook(model))``.

    Raises:
        ValueError: ``model`` holds no SentenceCNN.
    """
    cnns = [module for module in model.modules() if isinstance(module, SentenceCNN)]
    if not cnns:
        raise ValueError(f"{type(model).__name__} holds no SentenceCNN to constrain")

    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        for cnn in cnns:
            cnn.apply_max_norm()

    return hook
