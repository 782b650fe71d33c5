"""``template-infill``: Hu et al. (2018), "Deep Generative Models with Learnable Knowledge Constraints", the
template-guided sentence generation table (slides ``000_…txt``; lecture ``001_…txt``, last part).

A model writes a whole movie-review sentence from a template with one or two blanks. The knowledge: the content it
writes into the blanks should match the true content, scored by a constraint f_φ(x, template, x*) that is learned.
Rows, each fine-tuned from the same pre-trained base model of its seed for the same number of steps:

- Base model: maximum likelihood, continued.
- With binary D: f_φ is a discriminator trained to tell true sentences from the model's samples.
- With constraint updated in M-step (the paper's Eq. 5): φ maximises E_q[f_φ] on the model's own samples.
- With learned constraint: φ maximises the data likelihood under q_φ ∝ p_θ exp(α f_φ) (MaxEnt IRL).

Every knowledge row's model phase is the explicit M-step (:class:`kdgm.knowledge.ExplicitMStep`): maximum likelihood
on the data beside the q-weighted likelihood of S samples per template. The main column is the perplexity of the
infilled tokens of the true sentences given their templates; the full-sentence perplexity (dominated by copying
the template) is beside it, and infill BLEU, template adherence and distinct-2 say what perplexity does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.data.loader import BatchLoader
from kdgm.data.templates import EOS_ID, InfillCondition, Sentences, TemplateSplits, load_templates
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, ExperimentData, Metric, Preset, Row, TrainConfig
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.constraint import Constraint
from kdgm.knowledge.regularized import (
    BinaryDiscriminator, ExplicitMStep, PosteriorRegularization, SampleMaximisation,
)
from kdgm.metrics.infill import distinct_n, infill_bleu, infill_f1, perplexity, template_adherence
from kdgm.models.infill import TemplateInfiller
from kdgm.objectives.likelihood import MaximumLikelihood
from kdgm.report.paired import paired_differences
from kdgm.train.optim import adam, schedule
from kdgm.train.updater import Phase

BASE = "Base model"
KNOWLEDGE = {"binary_d": "With binary D", "m_step": "With constraint updated in M-step",
             "learned": "With learned constraint"}


class InfillMatch(Constraint):
    """f_φ(x, template, x*): how well the words x wrote into the blanks match the true infilled words of x*.

    The words "written" by x are its tokens that are not copied from the template (compared token by token, in one
    batched comparison); the true ones are marked in the data. Both are embedded; soft recall and precision (each
    true word's best cosine match among the written ones, and the reverse), the pooled embeddings and the length
    ratio feed a small network that returns one score per sentence. Learned from scratch by the φ-step.

    Args:
        vocab_size: V. dim: word-vector size. hidden: the scoring network's width.
    """

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.score = nn.Sequential(nn.Linear(2 * dim + 4, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    @staticmethod
    def written(x: Sentences, cond: InfillCondition) -> Tensor:
        """(N, T) bool: the tokens of x that are its own content (not ``<eos>``, not a word of the template)."""
        kept = cond.template[:, None, :] == x.tokens[:, :, None]  # (N, T, U)
        in_template = (kept & (torch.arange(cond.template.shape[1], device=x.tokens.device)
                               < cond.template_lengths[:, None])[:, None, :]).any(-1)  # (N, T)
        return x.mask() & (x.tokens != EOS_ID) & ~in_template

    def forward(self, x: Sentences, cond: InfillCondition) -> Tensor:
        mine, truth = self.written(x, cond), cond.truth_infill  # (N, T), (N, T*)
        e_x = F.normalize(self.embed(x.tokens), dim=-1)  # (N, T, d)
        e_t = F.normalize(self.embed(cond.truth), dim=-1)  # (N, T*, d)
        sim = e_t @ e_x.transpose(1, 2)  # (N, T*, T)
        both = truth[:, :, None] & mine[:, None, :]  # (N, T*, T)
        sim = sim.masked_fill(~both, -1.0)
        n_x, n_t = mine.sum(1).float(), truth.sum(1).float()  # (N,), (N,)
        recall = (sim.max(2).values * truth).sum(1) / n_t.clamp(min=1)  # (N,)
        precision = (sim.max(1).values * mine).sum(1) / n_x.clamp(min=1)  # (N,)
        u = (e_x * mine[..., None]).sum(1) / n_x.clamp(min=1)[:, None]  # (N, d)
        v = (e_t * truth[..., None]).sum(1) / n_t.clamp(min=1)[:, None]  # (N, d)
        lengths = torch.log((n_x + 1) / (n_t + 1))  # (N,)
        features = torch.cat([u * v, (u - v).abs(), torch.stack([recall, precision, lengths, (n_x == 0).float()], 1)],
                             1)
        return self.score(features).squeeze(1)  # (N,)


@dataclass
class TemplateInfillConfig(TrainConfig):
    """Config of ``template-infill`` (training fields in :class:`TrainConfig`; ``steps`` and ``lr`` are the
    pre-training's).

    Attributes:
        method: pretrain | mle | binary_d | m_step | learned (fixed by each row).
        finetune_steps, finetune_lr: every fine-tuning row's steps and learning rate (from the pre-trained base).
        vocab_size: words of the vocabulary, specials included. max_sentences: sentences per split (0: all).
        embed_dim, hidden, dropout: the model (:class:`kdgm.models.infill.TemplateInfiller`).
        alpha: α of q ∝ p exp(α f). samples: S per template. pr_conditions: templates of each batch that get S
            samples (the others only the likelihood term; sampling is the step's main cost).
        pr_weight: the PR term's weight in the M-step, added to maximum likelihood. center: centre the weights.
        temperature: of the E-step's proposal samples. phi_lr: the constraint's learning rate.
        f_penalty: weight of E[f²] in the φ-steps (keeps f bounded). constraint_dim: f_φ's word vectors.
        eval_examples: test sentences for the perplexities (0: all). sample_examples: test templates sampled for
            BLEU, adherence and distinct-2. eval_temperature: their sampling temperature.
    """

    method: Literal["pretrain", "mle", "binary_d", "m_step", "learned"] = "pretrain"
    finetune_steps: int = 500
    finetune_lr: float = 3e-4
    vocab_size: int = 10000
    max_sentences: int = 0
    embed_dim: int = 256
    hidden: int = 256
    dropout: float = 0.2
    alpha: float = 1.0
    samples: int = 8
    pr_conditions: int = 16
    pr_weight: float = 0.5
    center: bool = True
    temperature: float = 1.0
    phi_lr: float = 1e-3
    f_penalty: float = 0.1
    constraint_dim: int = 64
    eval_examples: int = 0
    sample_examples: int = 500
    eval_temperature: float = 0.7
    batch_size: int = 64
    grad_clip: float | None = 5.0
    log_every: int = 20

    positive = TrainConfig.positive + ("finetune_steps", "finetune_lr", "vocab_size", "embed_dim", "hidden", "alpha",
                                       "samples", "pr_conditions", "temperature", "phi_lr", "constraint_dim",
                                       "sample_examples", "eval_temperature")
    non_negative = TrainConfig.non_negative + ("max_sentences", "dropout", "pr_weight", "f_penalty", "eval_examples")

    def validate(self) -> None:
        super().validate()
        if self.vocab_size < 10:
            raise UserError(f"vocab_size must be at least 10, got {self.vocab_size}")
        if self.dropout >= 1:
            raise UserError(f"dropout must be below 1, got {self.dropout}")
        if self.hidden % 2:
            raise UserError(f"hidden must be even (two encoder directions), got {self.hidden}")


@dataclass
class _Templates(ExperimentData):
    splits: TemplateSplits = None


def _head(n: int):
    """Accessors of the first n templates of a batch: the ones the E-step samples."""
    return (lambda batch: batch.head(n).data()), (lambda batch: batch.head(n).condition())


class TemplateInfill(Experiment):
    name = "template-infill"
    title = "Template-guided sentence generation with a learned knowledge constraint"
    paper = "Hu, Yang, Salakhutdinov, Liang, Qin, Dong & Xing (2018), Deep Generative Models with Learnable Knowledge Constraints"
    table = "template-guided sentence generation (perplexity)"
    config_class = TemplateInfillConfig
    needs_data = "reviews"
    presets = {
        "smoke": Preset(dict(steps=6, finetune_steps=4, max_sentences=256, vocab_size=2000, embed_dim=32, hidden=32,
                             batch_size=16, samples=2, pr_conditions=4, log_every=2, checkpoint_every=3,
                             sample_examples=16, eval_examples=64), 1,
                        "CI smoke run: 256 sentences per split, a 32-unit model, a few steps"),
        "quick": Preset(dict(steps=1500, finetune_steps=150, embed_dim=128, hidden=256, samples=8, pr_conditions=8,
                             eval_examples=1000, sample_examples=300, checkpoint_every=250), 3,
                        "1,500 pre-training steps (about 4 epochs) and 150 fine-tuning steps per row; a 128-d model; "
                        "perplexities on 1,000 test sentences, sample metrics on 300"),
        # dev-selected weights: at a constant lr 1e-3 the dev infill perplexity flattens after about 2,000 steps and
        # the test one rises to 1,897 by 12,000 steps (overfitting; measured on a GPU)
        "full": Preset(dict(steps=5000, finetune_steps=2000, eval_every=250, select="infill_ppl", eval_examples=0,
                            sample_examples=1000, checkpoint_every=500), 3,
                        "5,000 pre-training steps (about 13 epochs), the weights best on dev; 2,000 fine-tuning steps "
                        "per row, each row's weights best on dev"),
        "paper": Preset(dict(steps=40000, finetune_steps=5000, samples=16, pr_conditions=64, eval_examples=0,
                             eval_every=1000, select="infill_ppl", sample_examples=3196, checkpoint_every=1000), 5,
                        "for a GPU: a converged base and 5,000 fine-tuning steps with 16 samples of every template"),
    }
    rows = (
        Row("Base model, pre-trained", {"method": "pretrain"}, run="pretrain"),
        Row(BASE, {"method": "mle"}, {"infill_ppl": 30.30}, init_from="pretrain"),
        Row(KNOWLEDGE["binary_d"], {"method": "binary_d"}, {"infill_ppl": 30.01}, init_from="pretrain"),
        Row(KNOWLEDGE["m_step"], {"method": "m_step"}, {"infill_ppl": 31.27}, init_from="pretrain"),
        Row(KNOWLEDGE["learned"], {"method": "learned"}, {"infill_ppl": 28.69}, init_from="pretrain"),
    )
    metrics = (
        Metric("infill_ppl", "infill perplexity"),
        Metric("ppl", "sentence perplexity"),
        Metric("bleu", "infill BLEU", lower_is_better=False, digits=1),
        Metric("adherence", "template kept (%)", lower_is_better=False, digits=1),
        Metric("distinct2", "distinct-2", lower_is_better=False, digits=3),
    )
    progress_metrics = ("infill_ppl",)
    data_parallel = False
    curve_terms = ("ess_share", "f_p", "f_q", "phi/f_data", "nll", "infill_f1_p", "infill_f1_q")

    def run_config(self, config: TemplateInfillConfig) -> TemplateInfillConfig:
        if config.method == "pretrain":
            return config
        return config.fine_tuning(config.finetune_steps, config.finetune_lr)

    def differences(self, config: TemplateInfillConfig) -> list[str]:
        return [
            "Data: Pang & Lee's 1,500 movie reviews (the paper: IMDB reviews), sentences of 5–25 tokens split by review "
            f"80/10/10, a {config.vocab_size}-word vocabulary; one or two blanked spans of 1–5 tokens per sentence, fixed "
            "per sentence given the data seed.",
            f"Model: bidirectional-GRU encoder and attention GRU decoder ({config.embed_dim}-d words, {config.hidden} "
            "units; the paper does not specify its base network), pre-trained by maximum likelihood for "
            f"{config.steps} steps of {config.batch_size} sentences; every row then fine-tunes the same base for "
            f"{config.finetune_steps} steps (lr {config.finetune_lr}).",
            f"PR rows: M-step = MLE + {config.pr_weight}·q-weighted likelihood of "
            f"{config.samples} samples (temperature {config.temperature}) for {config.pr_conditions} templates per "
            f"batch, centred weights: {config.center}, per token (divided by the q-weighted sample length, as the "
            f"per-token likelihood beside it); α = {config.alpha}; φ-steps with E[f²] penalty {config.f_penalty}.",
            "Constraint f_φ: soft recall/precision of the written words against the true infill in a learned 64-d "
            "embedding, pooled embeddings and length ratio, a 2-layer scorer (the paper's network is not specified).",
            "Main column: perplexity of the true infilled tokens given the template (the paper reports a perplexity "
            "without saying over which tokens); the sentence perplexity includes the copied template words.",
            f"Sample metrics on {config.sample_examples} test templates, one sample each at temperature "
            f"{config.eval_temperature}; no human evaluation.",
        ]

    def data(self, config: TemplateInfillConfig, seed: int = 0) -> _Templates:
        splits = load_templates(config.data_dir, vocab_size=config.vocab_size,
                                max_sentences=config.max_sentences or None)
        return _Templates(splits.train, splits, splits=splits)

    def check(self, config: TemplateInfillConfig, data: _Templates) -> None:
        if config.method != "pretrain" and config.pr_conditions > config.batch_size:
            raise UserError(f"pr_conditions={config.pr_conditions} exceeds batch_size={config.batch_size}")

    def build_model(self, config: TemplateInfillConfig, data: _Templates) -> nn.Module:
        return TemplateInfiller(len(data.splits.vocab), config.embed_dim, config.hidden, config.dropout)

    def phases(self, config: TemplateInfillConfig, model: nn.Module, data: _Templates) -> list[Phase]:
        mle = MaximumLikelihood(units=lambda batch: batch.target_lengths)
        optimizer = adam(model.parameters(), config)
        if config.method in ("pretrain", "mle"):
            return [Phase("main", mle, optimizer, schedule(optimizer, config), grad_clip=config.grad_clip)]
        constraint = InfillMatch(len(data.splits.vocab), config.constraint_dim)
        observed, condition = _head(config.pr_conditions)
        pr = PosteriorRegularization(constraint, config.alpha, config.samples, data=observed, condition=condition,
                                     sample_kwargs={"temperature": config.temperature},
                                     monitors={"infill_f1": _infill_f1})
        # per token, as the likelihood term beside it
        m_step = ExplicitMStep(pr, base=mle, weight=config.pr_weight, center=config.center,
                               units=lambda x: x.lengths)
        phi = {"binary_d": BinaryDiscriminator(pr), "m_step": SampleMaximisation(pr, config.f_penalty),
               "learned": TeacherLikelihood(pr, config.f_penalty)}[config.method]
        return [
            Phase("main", m_step, optimizer, schedule(optimizer, config), grad_clip=config.grad_clip),
            Phase("phi", phi, torch.optim.Adam(constraint.parameters(), lr=config.phi_lr), grad_clip=config.grad_clip,
                  modules={"constraint": constraint}),
        ]

    def _token_log_probs(self, model: nn.Module, dataset, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """(log p (N, T), infill mask (N, T), token mask (N, T)) of the first n sentences, on the CPU."""
        device = next(model.parameters()).device
        parts = []
        for batch in BatchLoader(_First(dataset, n), 256, shuffle=False, drop_last=False):
            batch = batch.to(device)
            x = batch.data()
            parts.append((model.token_log_probs(x, batch.condition()).cpu(), batch.infill.cpu(), x.mask().cpu()))
        width = max(p[0].shape[1] for p in parts)
        pad = lambda t: F.pad(t, (0, width - t.shape[1]))  # noqa: E731
        return tuple(torch.cat([pad(p[i]) for p in parts]) for i in range(3))

    def evaluate(self, config: TemplateInfillConfig, model: nn.Module, test: TemplateSplits,
                 final: bool) -> dict[str, Any]:
        dataset = test.test if final else test.dev
        n = len(dataset) if not config.eval_examples else min(config.eval_examples, len(dataset))
        log_p, infill, real = self._token_log_probs(model, dataset, n if final else min(n, 500))
        metrics: dict[str, Any] = {"infill_ppl": perplexity(log_p, infill)}
        if not final:
            return metrics
        metrics["ppl"] = perplexity(log_p, real)
        samples, templates, truths = self._samples(config, model, dataset, config.sample_examples)
        metrics["bleu"] = infill_bleu(samples, templates, truths)
        metrics["adherence"] = 100 * template_adherence(samples, templates)
        metrics["distinct2"] = distinct_n(samples, 2)
        metrics["examples"] = [" | ".join([" ".join(t), " ".join(s)]) for t, s in zip(templates[:8], samples[:8])]
        return metrics

    def _samples(self, config: TemplateInfillConfig, model: nn.Module, dataset, n: int,
                 generator: torch.Generator | None = None):
        """(samples, templates, true infills) as words, for the first n test templates, one sample each."""
        n = min(n, len(dataset))
        device = next(model.parameters()).device
        # by default the same draws for every row, so that rows' samples differ by the model only
        generator = generator or torch.Generator().manual_seed(0)
        samples, templates, truths = [], [], []
        for batch in BatchLoader(_First(dataset, n), 256, shuffle=False, drop_last=False):
            cond = batch.to(device).condition()
            x = model.sample(len(batch), cond, temperature=config.eval_temperature,
                             generator=generator if device.type == "cpu" else None)
            samples += dataset.words(x.tokens, x.lengths)
            templates += dataset.words(batch.template, batch.template_lengths)
            truths += [[w for w, keep in zip(words, row.tolist()) if keep]
                       for words, row in zip(dataset.words(batch.target, batch.target_lengths), batch.infill)]
        return samples, templates, truths

    def samples(self, model: nn.Module, n: int, generator: torch.Generator, data: Any = None) -> list[str]:
        """One sample for each of the first n test templates: ``template => sentence``."""
        if data is None:
            raise UserError("template-infill samples need the run's data (its test templates)")
        config = TemplateInfillConfig()
        samples, templates, _ = self._samples(replace(config, eval_temperature=1.0), model, data.splits.test, n,
                                              generator)
        return [f"{' '.join(t)}  =>  {' '.join(s)}" for t, s in zip(templates, samples)]

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        pairs = [(row, BASE) for row in KNOWLEDGE.values()]
        lines = paired_differences(metrics, pairs, ("infill_ppl", "ppl"), relative=True)
        lines += paired_differences(metrics, pairs, ("bleu", "adherence"))
        if run is not None:
            lines += self._example_table(run)
        return lines

    def _example_table(self, run) -> list[str]:
        """The same test templates with each row's sample, as the slides show them (first seed)."""
        examples = {}
        for row in self.rows:
            result = run.read_result(row, run.seeds[0]) if self.row_active(row, run.config) else None
            if result and "examples" in result["metrics"]:
                examples[row.name] = result["metrics"]["examples"]
        if not examples:
            return []
        lines = ["", "## Samples for the same test templates (seed " + str(run.seeds[0]) + ")", ""]
        first = next(iter(examples.values()))
        for i in range(len(first)):
            template = first[i].split(" | ")[0]
            lines += [f"- template: `{template}`"]
            lines += [f"  - {name}: {rows[i].split(' | ')[1]}" for name, rows in examples.items()]
        return lines


def _infill_f1(x: Sentences, cond: InfillCondition) -> Tensor:
    """(N,) unigram F1 of the words x wrote against the true infill: does q prefer samples nearer the truth than p?"""
    return infill_f1(x.tokens, InfillMatch.written(x, cond), cond.truth, cond.truth_infill)


class _First:
    """The first n examples of a data set."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def batch(self, index: Tensor):
        return self.dataset.batch(index)
