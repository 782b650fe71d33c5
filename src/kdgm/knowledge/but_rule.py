"""The A-but-B rule of Hu et al. (2016), section 4.1, for sentence sentiment.

For a sentence S = "A but B" the sentiment of S agrees with that of the clause B:

    has-A-but-B(S) ⇒ (1(y = +) ⇒ σ_θ(B)₊  ∧  σ_θ(B)₊ ⇒ 1(y = +))

With Łukasiewicz logic this is ``σ_θ(B)_y`` for sentences with "but" and 1 for the others, where σ_θ(B) is the
current network's prediction on the clause B alone. The clause is cut out of the batch's own token ids (everything
after the first "but"), so the rule needs no per-split tables and works on any batch of any split.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdgm.data.batch import TextBatch
from kdgm.knowledge.logic import Lukasiewicz, Truth
from kdgm.knowledge.rules import Rule


def but_clauses(tokens: Tensor, lengths: Tensor, but_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """The clause after the first "but" of every sentence.

    Args:
        tokens: (B, T) token ids padded with 0.
        lengths: (B,) real lengths.
        but_id: the vocabulary id of "but".

    Returns:
        has_clause: (B,) bool, the sentence has "but" followed by at least one token.
        clause: (B, T) the clause's ids, left-aligned and padded with 0.
        clause_lengths: (B,) its length (0 where there is none).
    """
    b, t = tokens.shape
    is_but = (tokens == but_id) & (torch.arange(t, device=tokens.device) < lengths[:, None])  # (B, T)
    first = is_but.int().argmax(dim=1)  # (B,) position of the first "but" (0 where none)
    columns = first[:, None] + 1 + torch.arange(t, device=tokens.device)  # (B, T)
    clause_lengths = torch.where(is_but.any(1), lengths - first - 1, torch.zeros_like(lengths)).clamp(min=0)
    inside = torch.arange(t, device=tokens.device) < clause_lengths[:, None]  # (B, T)
    clause = tokens.gather(1, columns.clamp(max=t - 1)) * inside
    return clause_lengths > 0, clause, clause_lengths


class ButRule(Rule):
    """``r(S, y) = σ_θ(B)_y`` for sentences "A but B", 1 otherwise (binary sentiment, label 1 = positive).

    Args:
        but_id: vocabulary id of the token "but".
        confidence: λ (Hu et al.: 1).
        learnable: learn λ (Hu et al. 2016b).
    """

    def __init__(self, but_id: int, confidence: float = 1.0, learnable: bool = False) -> None:
        super().__init__(confidence, learnable)
        self.but_id = but_id

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

