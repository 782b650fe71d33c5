"""A template-infilling sentence model: a bidirectional GRU reads the template, an attention GRU writes the sentence.

Hu et al. (2018), "Template-guided Sentence Generation": the base model generates the whole sentence given a template
with blanks, trained by maximum likelihood. The paper does not specify its base network; this one is the classic
attention encoder-decoder (Bahdanau et al. 2015, with Luong et al.'s dot-product attention), chosen because a
recurrent decoder samples one token per step at constant cost, which the posterior-regularization E-step needs (S
samples of every training sentence at every step).

It is an explicit model in kdgm's sense: ``log_prob(x, cond)`` and ``sample(n, cond)``, with x a
:class:`kdgm.data.templates.Sentences` and cond a :class:`kdgm.data.templates.InfillCondition`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdgm.data.templates import BLANK_ID, BOS_ID, EOS_ID, InfillCondition, Sentences
from kdgm.data.text import Vocabulary

NEVER_SAMPLED = (Vocabulary.PAD, BOS_ID, BLANK_ID)  # tokens the decoder must not write


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(N,) one index per row of the (N, V) probabilities (rows need not sum to 1), by inverse-CDF sampling.

    One uniform per row and a binary search in the row's cumulative sum. ``torch.multinomial`` draws V exponentials
    per row instead: at V = 10,000 and N = 64 on one CPU thread that was 18 ms of every decoding step, over a quarter
    of template-infill's knowledge step. An index of probability 0 is never returned (``right=True`` skips the flat
    stretches of the cumulative sum). ``generator`` lives on the CPU; the uniforms move to the probabilities' device.
    """
    cdf = probs.cumsum(-1)  # (N, V)
    u = torch.rand(len(probs), 1, generator=generator, device=None if generator else probs.device)  # (N, 1)
    index = torch.searchsorted(cdf, u.to(cdf.device) * cdf[:, -1:], right=True)  # (N, 1) first cdf > u·total
    return index.squeeze(1).clamp_max(probs.shape[1] - 1)


class TemplateInfiller(nn.Module):
    """p_θ(x | template) = Π_t p(x_t | x_<t, template).

    Args:
        vocab_size: V (the specials of :mod:`kdgm.data.templates` at ids 0–4).
        embed_dim: word vectors, shared by the encoder, the decoder input and the output layer (tied).
        hidden: the decoder's state (the encoder's two directions have hidden / 2 each).
        dropout: on word vectors and on the output features.
        max_extra: a sample may be at most this many tokens longer than its template.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden: int = 256, dropout: float = 0.2,
                 max_extra: int = 15) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"hidden must be even (two encoder directions), got {hidden}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=Vocabulary.PAD)
        self.encoder = nn.GRU(embed_dim, hidden // 2, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(hidden, hidden)
        self.decoder = nn.GRU(embed_dim, hidden, batch_first=True)
        self.combine = nn.Linear(2 * hidden, embed_dim)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))
        self.dropout = nn.Dropout(dropout)
        self.max_extra = max_extra
        self.register_buffer("never_sampled", torch.tensor(NEVER_SAMPLED), persistent=False)

    def encode(self, cond: InfillCondition) -> tuple[Tensor, Tensor, Tensor]:
        """(memory (N, U, H), its mask (N, U), the decoder's first state (1, N, H)) for the templates."""
        lengths = cond.template_lengths.clamp(min=1)
        packed = pack_padded_sequence(self.dropout(self.embed(cond.template)), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        memory, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True,
                                        total_length=cond.template.shape[1])  # (N, U, H)
        mask = torch.arange(memory.shape[1], device=memory.device) < lengths[:, None]  # (N, U)
        mean = (memory * mask[..., None]).sum(1) / lengths[:, None]  # (N, H)
        return memory, mask, torch.tanh(self.bridge(mean))[None]

    def features(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """(output features (N, T, E), last state (1, N, H)) for decoder inputs (N, T) given the encoded template."""
        states, last = self.decoder(self.dropout(self.embed(inputs)), state)  # (N, T, H)
        scores = states @ memory.transpose(1, 2)  # (N, T, U)
        weights = torch.softmax(scores.masked_fill(~mask[:, None], float("-inf")), -1)
        context = weights @ memory  # (N, T, H)
        return self.dropout(torch.tanh(self.combine(torch.cat([states, context], -1)))), last  # (N, T, E)

    def logits(self, features: Tensor) -> Tensor:
        """(..., V) next-token logits of (..., E) features, through the tied word vectors."""
        flat = torch.addmm(self.out_bias, features.reshape(-1, features.shape[-1]), self.embed.weight.t())  # (M, V)
        # The decoder never writes padding, <bos> or a blank: they get no mass in log_prob as in sample, so that
        # the distribution the E-step samples from is the one its importance weights and the M-step score. (In
        # place: the product is fresh and its backward does not read it; a copy of every logit cost 10% of a step.)
        return flat.index_fill_(-1, self.never_sampled, float("-inf")).view(*features.shape[:-1], -1)

    def decode(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (N, T, V), last state (1, N, H)) for decoder inputs (N, T) given the encoded template."""
        features, last = self.features(inputs, memory, mask, state)
        return self.logits(features), last

    def token_log_probs(self, x: Sentences, cond: InfillCondition) -> Tensor:
        """(N, T) log p(x_t | x_<t, template) of every token (0 at padding).

        The vocabulary layer and its soft-max, most of the cost, run on the real tokens only, not on padding (a
        batch of samples is padded to its longest row: about half its positions)."""
        memory, mask, state = self.encode(cond)
        bos = torch.full_like(x.tokens[:, :1], BOS_ID)
        features, _ = self.features(torch.cat([bos, x.tokens[:, :-1]], 1), memory, mask, state)  # (N, T, E)
        real = x.mask()  # (N, T)
        logits = self.logits(features[real])  # (K, V) for the K real tokens
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision: soft-max in float
        log_p = torch.log_softmax(logits, -1).gather(1, x.tokens[real][:, None]).squeeze(1)  # (K,)
        return torch.zeros(real.shape, dtype=log_p.dtype, device=log_p.device).masked_scatter(real, log_p)

    def log_prob(self, x: Sentences, cond: InfillCondition) -> Tensor:
        """(N,) log p_θ(x | template)."""
        return self.token_log_probs(x, cond).sum(1)

    def sample(self, n: int, cond: InfillCondition, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Sentences:
        """Ancestral samples, one per condition row (n must be the number of rows), without dropout.

        Rows stop at ``<eos>``; a row still open after ``max_extra`` tokens more than its template ends with one.
        """
        rows = len(cond.template_lengths)
        if n != rows:
            raise ValueError(f"sample draws one sentence per condition row: n={n} but {rows} rows")
        was_training = self.training
        self.eval()
        try:
            memory, mask, state = self.encode(cond)
            limit = int(cond.template_lengths.max()) + self.max_extra
            token = torch.full((n,), BOS_ID, dtype=torch.long, device=memory.device)
            tokens = torch.zeros(n, limit, dtype=torch.long, device=memory.device)
            done = torch.zeros(n, dtype=torch.bool, device=memory.device)
            for t in range(limit):
                logits, state = self.decode(token[:, None], memory, mask, state)  # (n, 1, V)
                logits = logits[:, 0].to(torch.promote_types(logits.dtype, torch.float32)) / temperature
                if t == limit - 1:  # out of room: end the sentence
                    token = torch.full_like(token, EOS_ID)
                else:
                    token = sample_categorical(torch.softmax(logits, -1), generator)  # (n,)
                tokens[:, t] = torch.where(done, torch.zeros_like(token), token)
                done = done | (token == EOS_ID)
                if bool(done.all()):
                    break
        finally:
            self.train(was_training)
        lengths = (tokens != 0).sum(1)  # (n,): every token up to and including <eos> is non-padding
        return Sentences(tokens[:, : int(lengths.max())], lengths)
