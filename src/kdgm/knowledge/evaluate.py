"""Evaluating a classifier with its rules: the student p and the rule-projected teacher q in one call.

Hu et al. (2016) report both networks of a distilled model: the student p_θ, which needs no rules at test time, and
the teacher q, its projection onto the rules, ``q ∝ p_θ · exp(−C Σ_l λ_l (1 − r_l))``. Krishna et al. (2018) found
that projecting an *undistilled* network at test time gives most of the gain; the same call measures that::

    predictions = predict_with_rules(model, rules, splits.test)
    predictions.accuracy()                         # {"p": 0.81, "q": 0.83}
    predictions.accuracy(predictions.fires[:, 0])  # on the sentences where rule 0 fires
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from kdgm.data.batch import Batch
from kdgm.data.loader import BatchLoader, IndexedDataset
from kdgm.knowledge.rules import RuleSet
from kdgm.objectives.classification import logits_of


@dataclass
class RulePredictions:
    """The student's and the teacher's predictions on a data set, in its order, on the CPU.

    Attributes:
        log_p: (N, K) student log-probabilities log p_θ(y|x).
        log_q: (N, K) teacher log-probabilities log q(y|x) (p projected onto the rules).
        y: (N,) true labels.
        fires: (N, L) bool, whether rule l fires on example n (its truth differs between outputs, so q ≠ p there;
            see :meth:`kdgm.knowledge.RuleSet.fires`).
    """

    log_p: Tensor
    log_q: Tensor
    y: Tensor
    fires: Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def coverage(self) -> Tensor:
        """(L,) the share of the examples each rule fires on."""
        return self.fires.float().mean(0)

    def accuracy(self, mask: Tensor | None = None) -> dict[str, float]:
        """Accuracy in [0, 1] of the student and the teacher, ``{"p": ..., "q": ...}``.

        Args:
            mask: (N,) bool, the examples to count (e.g. the sentences with "but"); None counts every example.

        Returns:
            Both accuracies; NaN where the mask selects no example (0 / 0), so that a report shows the gap instead
            of a run failing at its last step.

        Raises:
            ValueError: the mask is not one bool per example.
        """
        keep = torch.ones_like(self.y, dtype=torch.bool) if mask is None else torch.as_tensor(mask).cpu()
        if keep.dtype != torch.bool or tuple(keep.shape) != tuple(self.y.shape):
            raise ValueError(f"the mask must be {len(self.y)} bools, one per example; got a {tuple(keep.shape)} "
                             f"{keep.dtype} tensor")
        hits = {"p": self.log_p.argmax(-1) == self.y, "q": self.log_q.argmax(-1) == self.y}  # (N,) each
        return {name: hit[keep].float().mean().item() for name, hit in hits.items()}


def predict_with_rules(
    model: nn.Module, rules: RuleSet, data: IndexedDataset | Iterable[Batch], batch_size: int = 500
) -> RulePredictions:
    """Run ``model`` over ``data`` and project every prediction onto ``rules``.

    Batched (no per-example Python), without gradients, with the model in eval mode (dropout off) and put back in
    the mode it was in, on the device of the model's parameters. Each rule's table is checked as in training
    (:meth:`RuleSet.truths`).

    Args:
        model: a classifier returning (B, K) logits for ``batch.inputs()``.
        rules: the rules and C defining the teacher.
        data: a data set with ``batch(index)`` (e.g. a ``SentenceDataset``), read in order in batches of
            ``batch_size``; or an iterable of batches, taken as they come (a ``BatchLoader`` must then keep every
            example in order: ``shuffle=False, drop_last=False``).
        batch_size: examples per forward pass, for a data set.

    Returns:
        The predictions, on the CPU, in the order of ``data``.

    Raises:
        ValueError: a ``BatchLoader`` that shuffles or drops examples, no batch at all, or a rule's bad table.
    """
    batches = _batches(data, batch_size)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(device)
                log_p = torch.log_softmax(logits_of(model, batch), -1)  # (B, K)
                truths = rules.truths(model, batch, tuple(log_p.shape))  # L × (B, K), checked
                log_q = rules.teacher(log_p, model, batch, truths)  # (B, K)
                parts.append((log_p.cpu(), log_q.cpu(), batch.y.cpu(), rules.fires(truths).cpu()))
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("predict_with_rules got no batch: the data set or loader is empty")
    log_p, log_q, y, fires = (torch.cat(column) for column in zip(*parts))
    return RulePredictions(log_p, log_q, y, fires)


def _batches(data: IndexedDataset | Iterable[Batch], batch_size: int) -> Iterable[Batch]:
    """Batches of a data set in order, or a loader's own (refusing a BatchLoader that would lose or reorder any)."""
    if isinstance(data, BatchLoader):
        if data.shuffle or data.drop_last:
            raise ValueError("predict_with_rules needs every example in order: pass the data set itself, or a "
                             "BatchLoader with shuffle=False, drop_last=False")
        return data
    if hasattr(data, "batch") and hasattr(data, "__len__"):
        return BatchLoader(data, batch_size, shuffle=False, drop_last=False)
    return data


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    tensor = next(model.parameters(), None)
    tensor = next(model.buffers(), None) if tensor is None else tensor
    return tensor.device if tensor is not None else torch.device("cpu")
