"""The A-but-B rule of Hu et al. (2016), section 4.1, for sentence sentiment.

For a sentence S = "A but B" the sentiment of S agrees with that of the clause B:

    has-A-but-B(S) ⇒ (1(y = +) ⇒ σ_θ(B)₊  ∧  σ_θ(B)₊ ⇒ 1(y = +))

With Łukasiewicz logic this is ``σ_θ(B)_y`` for sentences with "but" and 1 for the others, where σ_θ(B) is the
current network's prediction on the clause B alone. The clause is cut out of the batch's own token ids (everything
after the first "but"), so the rule needs no per-split tables and works on any batch of any split.
:meth:`ButRule.from_vocab` finds "but" in every case the vocabulary holds ("But" starts many sentences in
cased files), and refuses a vocabulary that has none.
"""

from __future__ import annotations

from numbers import Integral
from typing import Iterable

import torch
from torch import Tensor, nn

from kdgm.data.batch import TextBatch
from kdgm.data.text import Vocabulary
from kdgm.knowledge.logic import Lukasiewicz, Truth
from kdgm.knowledge.rules import Rule


def but_clauses(tokens: Tensor, lengths: Tensor, but_id: int | Iterable[int]) -> tuple[Tensor, Tensor, Tensor]:
    """The clause after the first "but" of every sentence.

    Args:
        tokens: (B, T) token ids padded with 0.
        lengths: (B,) real lengths.
        but_id: the vocabulary id of "but", or the ids of all its case variants.

    Returns:
        has_clause: (B,) bool, the sentence has "but" followed by at least one token.
        clause: (B, T) the clause's ids, left-aligned and padded with 0.
        clause_lengths: (B,) its length (0 where there is none).
    """
    b, t = tokens.shape
    if isinstance(but_id, Integral):
        is_but = tokens == but_id  # (B, T)
    else:
        is_but = torch.isin(tokens, torch.tensor(sorted(but_id), dtype=tokens.dtype, device=tokens.device))
    is_but = is_but & (torch.arange(t, device=tokens.device) < lengths[:, None])  # (B, T), padding excluded
    first = is_but.int().argmax(dim=1)  # (B,) position of the first "but" (0 where none)
    columns = first[:, None] + 1 + torch.arange(t, device=tokens.device)  # (B, T)
    clause_lengths = torch.where(is_but.any(1), lengths - first - 1, torch.zeros_like(lengths)).clamp(min=0)
    inside = torch.arange(t, device=tokens.device) < clause_lengths[:, None]  # (B, T)
    clause = tokens.gather(1, columns.clamp(max=t - 1)) * inside
    return clause_lengths > 0, clause, clause_lengths


class ButRule(Rule):
    """``r(S, y) = σ_θ(B)_y`` for sentences "A but B", 1 otherwise (binary sentiment, label 1 = positive).

    Args:
        but_id: vocabulary id of the token "but", or the ids of its case variants (see :meth:`from_vocab`).
        confidence: λ (Hu et al.: 1).
        learnable: learn λ (Hu et al. 2016b).
    """

    def __init__(self, but_id: int | Iterable[int], confidence: float = 1.0, learnable: bool = False) -> None:
        super().__init__(confidence, learnable)
        # a python int or tuple, not a buffer: the module's state dict (and checkpoints) stay as they were
        self.but_id = int(but_id) if isinstance(but_id, Integral) else tuple(sorted(int(i) for i in set(but_id)))

    @classmethod
    def from_vocab(cls, vocab: Vocabulary, word: str = "but", confidence: float = 1.0,
                   learnable: bool = False) -> "ButRule":
        """The rule on every case variant of ``word`` in ``vocab`` (see :meth:`Vocabulary.ids_of`).

        Raises:
            ValueError: the vocabulary has no case of ``word``: the rule would never fire.
        """
        ids = vocab.ids_of([word], warn=False)
        if not ids:
            raise ValueError(f"the vocabulary ({len(vocab)} tokens) has no {word!r} in any case: the A-but-B rule "
                             "would never fire")
        return cls(ids, confidence, learnable)

    def truth(self, model: nn.Module, batch: TextBatch) -> Tensor:
        has_clause, clause, clause_lengths = but_clauses(batch.tokens, batch.lengths, self.but_id)
        b = len(batch.tokens)
        clause_positive = torch.ones(b, 1, device=batch.tokens.device)  # (B, 1); unused where there is no clause
        if has_clause.any():
            logits = model(clause[has_clause], clause_lengths[has_clause])  # (B', 2)
            clause_positive[has_clause] = torch.softmax(logits.float(), -1)[:, 1:]
        positive = Truth(torch.tensor([[0.0, 1.0]], device=batch.tokens.device), Lukasiewicz)  # (1, K): 1(y=+)
        premise = Truth(has_clause.float()[:, None], Lukasiewicz)  # (B, 1)
        sigma = Truth(clause_positive, Lukasiewicz)  # (B, 1)
        rule = premise >> ((positive >> sigma) & (sigma >> positive))
        return rule.value.expand(b, 2)  # (B, K)

