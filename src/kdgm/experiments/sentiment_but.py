"""``sentiment-but``: Hu et al. (2016) "Harnessing Deep Neural Networks with Logic Rules", sentiment with the
A-but-B rule, on SST-2, MR and CR, with seed-averaged numbers (Krishna et al. 2018).

Training runs (each several rows read views of):

- ``base``: the sentence CNN of Kim (2014) with cross-entropy. Rows: CNN (the student p) and "CNN + rule at test"
  (the trained base network's predictions projected with the rule, no distillation; it separates the two mechanisms,
  as Krishna et al. did).
- ``distill``: rule distillation, ``(1 − π_t) ℓ(y, p) + π_t ℓ(q, p)`` with q the projection (C = 6, λ = 1).
  Rows: CNN-Rule-p and CNN-Rule-q.
- ``learned``: the same with λ learned by the φ-step ``max_λ Σ log q_λ(y_n|x_n)`` after every student step.
- ``penalty``: the peer: the rule as a semantic loss on the student, ``−log P(label(S) = label(B))`` on sentences with
  "but" (through ``pylon-lib`` when installed), no teacher.

MR and CR have no split: seed s tests on fold ``s mod folds`` of a 10-fold split, so 10 seeds are 10-fold CV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdgm.data.embeddings import glove_available, pretrained_matrix
from kdgm.data.loader import BatchLoader, endless
from kdgm.data.text import Vocabulary, load_sentiment, subset
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, ExperimentData, Metric, Preset, Row, TrainConfig
from kdgm.knowledge import ButRule, but_clauses, ImitationSchedule, RuleDistillation, RuleSet, TeacherLikelihood
from kdgm.knowledge.evaluate import predict_with_rules
from kdgm.models.text_cnn import SentenceCNN, max_norm_hook
from kdgm.objectives.base import LossOutput
from kdgm.objectives.classification import CrossEntropy, logits_of
from kdgm.report.paired import paired_differences
from kdgm.train.optim import adam, schedule
from kdgm.train.updater import Phase

# Test accuracy (%) of the papers: Hu et al. 2016 best (-Rule-q) and Kim (2014) CNN-non-static.
PAPER = {"sst2": {"kim": 87.2, "hu": 89.3}, "mr": {"kim": 81.5, "hu": 81.7}, "cr": {"kim": 84.3, "hu": 85.3}}


@dataclass
class SentimentButConfig(TrainConfig):
    """Config of ``sentiment-but`` (training fields in :class:`TrainConfig`).

    Attributes:
        method: base | distill | learned | penalty (fixed by each row's run).
        methods: the runs to train (rows of the other runs are left out), e.g. ``[base, distill]`` for an ablation.
        dataset: sst2 | mr | cr.
        folds: for MR/CR, the number of folds of the 10-fold split the seeds cycle through.
        C: projection strength (Hu et al.: 6). confidence: λ of the rule (Hu et al.: 1).
        pi0, alpha: imitation schedule π_t = min(π₀, 1 − α^t).
        penalty_weight: weight of the soft-logic loss of the peer row.
        lambda_lr: learning rate of the φ-step on λ.
        lambda_data: the sentences the φ-step learns λ on: ``dev`` (held out) or ``train``. On the training set the
            student soon fits the labels better than any rule, so the teacher likelihood pushes λ toward 0.
        embeddings: glove (50-d GloVe 6B if installed, random otherwise) or random.
        train_examples: keep only this many training sentences (0: all), for smoke runs.
    """

    method: Literal["base", "distill", "learned", "penalty"] = "base"
    methods: tuple[str, ...] = ("base", "distill", "learned", "penalty")
    dataset: Literal["sst2", "mr", "cr"] = "sst2"
    folds: int = 10
    C: float = 6.0
    confidence: float = 1.0
    pi0: float = 0.95
    alpha: float = 0.95
    penalty_weight: float = 1.0
    lambda_lr: float = 0.01
    lambda_data: Literal["dev", "train"] = "dev"
    embeddings: Literal["glove", "random"] = "glove"
    train_examples: int = 0

    positive = TrainConfig.positive + ("C", "confidence", "lambda_lr", "penalty_weight")
    non_negative = TrainConfig.non_negative + ("train_examples", "pi0")

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.folds <= 10:
            raise UserError(f"folds must be between 1 and 10, got {self.folds}")
        unknown = set(self.methods) - {"base", "distill", "learned", "penalty"}
        if unknown or not self.methods:
            raise UserError(f"methods must be a non-empty subset of base, distill, learned, penalty; got {list(self.methods)}")
        if not (self.pi0 <= 1 and 0 < self.alpha <= 1):
            raise UserError(f"need pi0 <= 1 and 0 < alpha <= 1, got pi0={self.pi0}, alpha={self.alpha}")


@dataclass
class _Splits:
    """The held-out splits: dev for the periodic evaluation (model selection), test for the final one."""

    dev: Any
    test: Any


@dataclass
class _TextData(ExperimentData):
    """The sentences of one run and what the model is built from: the training vocabulary and the id of "but"."""

    vocab: Vocabulary = None
    but_id: int = 0


def pylon_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pylon") is not None


def semantic_loss(sentence_logits: Tensor, clause_logits: Tensor) -> Tensor:
    """``−Σ_n log Σ_{y = b} p(y|S_n) p(b|B_n)`` for (B', K) logits of sentences and their clauses."""
    joint = torch.softmax(sentence_logits, -1) * torch.softmax(clause_logits, -1)  # (B', K): the pairs with y = b
    return -joint.sum(-1).clamp(min=1e-12).log().sum()


def pylon_semantic_loss(sentence_logits: Tensor, clause_logits: Tensor) -> Tensor:
    """:func:`semantic_loss` through ``pylon-lib``'s brute-force solver (it enumerates the (y, b) assignments)."""
    import warnings

    from pylon.constraint import constraint

    def agree(sentence, clause):  # pylon evaluates this on every joint assignment of the two labels
        return (sentence == clause).all(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pylon copies tensors with torch.tensor(tensor)
        # pylon-lib 0.1 expects a position axis between batch and classes: (B', 1, K)
        return constraint(agree)(sentence_logits[:, None], clause_logits[:, None])


def _penalty_objective(rules: RuleSet, weight: float):
    """The peer: cross-entropy plus the rule as a semantic loss on sentences with "but" (Xu et al. 2018 style).

    The rule "label(S) = label(B)" couples two predictions of the network, the sentence's and the clause's; the
    semantic loss is ``−log P(constraint holds) = −log Σ_{y, b: y = b} p(y|S) p(b|B)``, back-propagated into both.
    It is computed by ``pylon-lib``'s brute-force solver when that package is installed (``kdgm[text]``), and by the
    same sum written out here otherwise.
    """
    base = CrossEntropy()
    but_id = rules.rules[0].but_id
    semantic = pylon_semantic_loss if pylon_available() else semantic_loss

    def objective(model: nn.Module, batch) -> LossOutput:
        logits = logits_of(model, batch)  # (B, K)
        ce = base.loss(logits, batch.y)
        has_clause, clause, clause_lengths = but_clauses(batch.tokens, batch.lengths, but_id)
        penalty = logits.new_zeros(())
        if has_clause.any():
            clause_logits = model(clause[has_clause], clause_lengths[has_clause])  # (B', K)
            penalty = semantic(logits[has_clause], clause_logits) / len(logits)
        return LossOutput(ce + weight * penalty, {"ce": ce.detach(), "rule_loss": penalty.detach()})

    return objective


class SentimentBut(Experiment):
    name = "sentiment-but"
    title = "Sentence CNN with the A-but-B rule (rule knowledge distillation)"
    paper = "Hu, Ma, Liu, Hovy & Xing (2016), Harnessing Deep Neural Networks with Logic Rules"
    table = "Table 1 (sentiment), Kim (2014) CNN baseline"
    config_class = SentimentButConfig
    needs_data = "sentiment"
    presets = {
        "smoke": Preset(dict(steps=12, batch_size=50, train_examples=600, eval_every=6, select="acc", log_every=3,
                             checkpoint_every=6), 1, "CI smoke run: 600 SST-2 training sentences, 12 steps"),
        "quick": Preset(dict(steps=1400, batch_size=50, eval_every=140, select="acc", checkpoint_every=700), 3,
                        "SST-2 only, about 10 epochs per run, 3 seeds"),
        "paper": Preset(dict(steps=2800, batch_size=50, eval_every=140, select="acc", checkpoint_every=700), 5,
                        "about 20 epochs per run, 5 seeds, about 30 min on 2 CPU cores (estimated: twice the quick preset's "
                        "runs); MR and CR with --set dataset=mr|cr --seeds 10 (10-fold CV)"),
    }
    rows = (
        Row("CNN (Kim 2014)", {"method": "base"}, run="base", view="p"),
        Row("CNN + rule at test only", {"method": "base"}, run="base", view="q"),
        Row("CNN-Rule-p", {"method": "distill"}, run="distill", view="p"),
        Row("CNN-Rule-q", {"method": "distill"}, run="distill", view="q"),
        Row("CNN-Rule-q, learned λ", {"method": "learned"}, run="learned", view="q"),
        Row("CNN + soft-logic loss (peer)", {"method": "penalty"}, run="penalty", view="p"),
    )
    metrics = (
        Metric("acc", "test accuracy (%)", lower_is_better=False, digits=1),
        Metric("but_acc", "accuracy on 'but' sentences (%)", lower_is_better=False, digits=1),
    )
    progress_metrics = ("acc",)

    def row_active(self, row: Row, config: SentimentButConfig) -> bool:
        return row.settings["method"] in config.methods

    def paper_numbers(self, config: SentimentButConfig) -> dict[str, dict[str, float]]:
        numbers = PAPER[config.dataset]
        return {row.name: ({"acc": numbers["kim"]} if row.name.startswith("CNN (Kim") else
                           {"acc": numbers["hu"]} if row.name == "CNN-Rule-q" else {}) for row in self.rows}

    def differences(self, config: SentimentButConfig) -> list[str]:
        embeddings = "50-d GloVe 6B" if config.embeddings == "glove" and glove_available() else "random 50-d"
        data = ("Data set sst2; the papers trained SST-2 on phrases (stsa.binary.phrases.train) and we train on "
                "sentences only, which costs several points of absolute accuracy." if config.dataset == "sst2" else
                f"Data set {config.dataset}: 10-fold cross-validation as in the papers; 10% of the nine training folds "
                "held out as dev for model selection (Kim 2014).")
        lines = [
            data,
            f"Word vectors: {embeddings} (the papers: 300-d word2vec).",
            f"Adam (lr {config.lr}) for {config.steps} steps of {config.batch_size} sentences, model selection on dev "
            "accuracy every {0} steps (Kim: Adadelta, 25 epochs).".format(config.eval_every),
            f"C = {config.C}, λ = {config.confidence}, π_t = min({config.pi0}, 1 − {config.alpha}^t) with t in epochs.",
            f"Learned λ: Adam (lr {config.lambda_lr}) on the teacher's log-likelihood of the {config.lambda_data} labels, "
            "one step after every student step.",
        ]
        if config.dataset != "sst2":
            lines.append(f"Seeds cycle through the first {config.folds} folds of a 10-fold split (the papers: 10-fold CV).")
        if config.train_examples:
            lines.append(f"Only the first {config.train_examples} training sentences are used.")
        peer = "pylon-lib's brute-force solver" if pylon_available() else "kdgm's own sum (pylon-lib not installed)"
        lines.append(f"Peer row: the rule as a semantic loss −log P(label(S) = label(B)) on 'but' sentences, computed by "
                     f"{peer}, weight {config.penalty_weight}; no teacher, no projection at test time.")
        return lines

    def data(self, config: SentimentButConfig, seed: int = 0) -> _TextData:
        # MR and CR: seed s tests on fold s mod folds (the papers' 10-fold cross-validation)
        fold = seed % config.folds if config.dataset != "sst2" else 0
        splits = load_sentiment(config.dataset, config.data_dir, fold=fold, n_folds=10, seed=0)
        if "but" not in splits.vocab:
            raise UserError(f"the {config.dataset} training vocabulary has no 'but'; the A-but-B rule cannot be evaluated")
        train = splits.train
        if config.train_examples:
            train = subset(train, config.train_examples)
        return _TextData(train, _Splits(splits.dev, splits.test), vocab=splits.vocab, but_id=splits.vocab.stoi["but"])

    def build_model(self, config: SentimentButConfig, data: _TextData) -> nn.Module:
        init = None
        if config.embeddings == "glove":
            init, _ = pretrained_matrix(data.vocab, seed=torch.initial_seed() % 2**31)
        model = SentenceCNN(len(data.vocab), n_classes=2, embed_dim=50, init=init)
        learnable = config.method == "learned"
        model.rules = RuleSet([ButRule(data.but_id, config.confidence, learnable)], C=config.C)  # checkpointed with it
        return model

    def phases(self, config: SentimentButConfig, model: nn.Module, data: _TextData) -> list[Phase]:
        rules = model.rules
        net_params = [p for name, p in model.named_parameters() if not name.startswith("rules.")]
        optimizer = adam(net_params, config)
        optimizer.register_step_post_hook(max_norm_hook(model))
        schedule_ = ImitationSchedule(config.pi0, config.alpha)
        objective = {
            "base": CrossEntropy(),
            "distill": RuleDistillation(rules, schedule_),
            "learned": RuleDistillation(rules, schedule_),
            "penalty": _penalty_objective(rules, config.penalty_weight),
        }[config.method]
        phases = [Phase("main", objective, optimizer, schedule(optimizer, config), grad_clip=config.grad_clip)]
        if config.method == "learned":
            batches = None
            if config.lambda_data == "dev":
                loader = BatchLoader(data.test.dev, config.batch_size, seed=int(torch.initial_seed() % 2**31))
                batches = endless(loader)
            optimizer = torch.optim.Adam(rules.parameters(), lr=config.lambda_lr)
            phases.append(Phase("lambda", TeacherLikelihood(rules), optimizer, batches=batches))
        return phases

    def evaluate(self, config: SentimentButConfig, model: nn.Module, splits: _Splits, final: bool) -> dict[str, float]:
        dataset = splits.test if final else splits.dev
        predictions = predict_with_rules(model, model.rules, dataset)
        if not final:
            return {"acc": 100 * predictions.accuracy()["p"]}
        everything = predictions.accuracy()
        but = predictions.accuracy(torch.tensor(["but" in s for s in dataset.sentences]))
        return {
            "p.acc": 100 * everything["p"], "p.but_acc": 100 * but["p"],
            "q.acc": 100 * everything["q"], "q.but_acc": 100 * but["q"],
            "lambda": model.rules.confidences[0].item(),
        }

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        pairs = [("CNN-Rule-q", "CNN (Kim 2014)"), ("CNN-Rule-p", "CNN (Kim 2014)"),
                 ("CNN + rule at test only", "CNN (Kim 2014)"), ("CNN-Rule-q, learned λ", "CNN (Kim 2014)")]
        return paired_differences(metrics, pairs, ("acc", "but_acc"))

