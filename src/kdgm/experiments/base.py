"""What an experiment is: a paper's table as rows × metrics, a typed config with presets, and the flow
data → model → objective (phases) → fit → metrics that :mod:`kdgm.experiments.runner` drives for every row and seed.

An experiment module subclasses :class:`Experiment`, fills in the table description, and implements the few
methods of the flow. It never writes a training loop: :func:`kdgm.train.loop.fit` is the only one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from kdgm.errors import UserError
from kdgm.train.updater import Phase


@dataclass
class TrainConfig:
    """Fields every experiment shares; experiments subclass it with their own (all with defaults).

    Attributes:
        steps: optimizer steps per training run.
        batch_size: examples per step on each device.
        lr: learning rate of the main optimizer (Adam).
        lr_schedule: ``constant`` or ``cosine`` decay to zero over ``steps``, after ``warmup_steps`` of linear warm-up.
        grad_clip: clip the gradient norm to this value (null: no clipping).
        eval_every: steps between evaluations on held-out data during training (0: only at the end).
        select: a metric of the periodic evaluation; the weights that scored best on it are the ones evaluated at the
            end (model selection on a dev set). Empty: the last weights.
        checkpoint_every: steps between checkpoints (a killed run resumes from the last one).
        log_every: steps between rows of ``train.csv``.
        precision: Fabric precision, e.g. ``32-true``, ``bf16-mixed``.
        deterministic: use deterministic kernels only.
        tensorboard: also write TensorBoard event files.
        data_dir: a folder with the experiment's data files, where it needs one.
    """

    steps: int = 1000
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    eval_every: int = 0
    select: str = ""
    checkpoint_every: int = 500
    log_every: int = 50
    precision: str = "32-true"
    deterministic: bool = False
    tensorboard: bool = True
    data_dir: str | None = None

    # Bounds that ``validate`` checks, by field name (every element of a tuple field). Subclasses extend them:
    # ``positive = TrainConfig.positive + ("k",)``. One declaration instead of one ``if`` per field.
    positive: ClassVar[tuple[str, ...]] = ("steps", "batch_size", "log_every", "lr")
    non_negative: ClassVar[tuple[str, ...]] = ("eval_every", "checkpoint_every", "warmup_steps")

    def validate(self) -> None:
        """Raise a :class:`UserError` for values no run could use."""
        for key, allow_zero in [(k, False) for k in self.positive] + [(k, True) for k in self.non_negative]:
            value = getattr(self, key)
            for item in value if isinstance(value, (tuple, list)) else (value,):
                # ``not (item > 0)`` rather than ``item <= 0``: NaN fails every comparison and must fail here too
                if item is not None and (not math.isfinite(item) or not (item >= 0 if allow_zero else item > 0)):
                    shown = list(value) if isinstance(value, (tuple, list)) else value
                    raise UserError(f"{key} must be {'>= 0' if allow_zero else 'positive'} and finite, got {shown}")
        if self.select and not self.eval_every:
            raise UserError(f"select={self.select!r} needs periodic evaluation: set eval_every > 0")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise UserError(f"grad_clip must be positive or null, got {self.grad_clip}")

    def fine_tuning(self, steps: int, lr: float) -> TrainConfig:
        """This config for a run that fine-tunes a trained model (a row with ``init_from``): ``steps`` steps at
        ``lr`` with no warm-up, evaluating and checkpointing at least once within them."""
        return replace(self, steps=steps, lr=lr, warmup_steps=0,
                       eval_every=self.eval_every and min(self.eval_every, steps),
                       checkpoint_every=min(self.checkpoint_every, steps))


@dataclass
class ExperimentData:
    """What :meth:`Experiment.data` returns: the training set, the evaluation set, and whatever the model or the
    phases are built from (experiments subclass it, e.g. with a vocabulary). It is passed explicitly to every step
    of the flow, so a model can be rebuilt from a run folder without the experiment keeping state between calls.

    Attributes:
        train: indexed training set (``len`` and ``batch(index)``).
        test: what ``evaluate`` and ``figures`` read (a data set, or a pair of dev and test sets).
    """

    train: Any
    test: Any


@dataclass(frozen=True)
class Metric:
    """A column of the table.

    Attributes:
        key: name in ``metrics.json``.
        label: column header in the report.
        lower_is_better: for the report's arrow.
        digits: decimals shown.
    """

    key: str
    label: str
    lower_is_better: bool = True
    digits: int = 2


@dataclass(frozen=True)
class Row:
    """A row of the table: its name, the config values that make it that row, and the paper's numbers.

    Several rows may read different *views* of one training run (the student p and the rule-projected teacher q
    of one distilled network): rows with the same ``run`` share their training, and a row with a ``view`` reads the
    metrics named ``VIEW.METRIC``.

    Attributes:
        name: row label, as the paper writes it.
        settings: config values this row's run fixes (they win over presets and ``--set``).
        paper: metric key → the paper's number for this row.
        run: name of the training run (default: the row's name).
        view: prefix of this row's metrics in the run's results (default: none).
        init_from: the training run whose final weights (of the same seed) this run starts from, so that fine-tuning
            rows share one pre-trained model and differ only by their method; it must come earlier in the table.
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    run: str = ""
    view: str = ""
    init_from: str = ""

    @property
    def run_name(self) -> str:
        return self.run or self.name

    def metric_key(self, key: str) -> str:
        return f"{self.view}.{key}" if self.view else key


@dataclass(frozen=True)
class Preset:
    """Named config values and a default number of seeds.

    Attributes:
        values: config overrides.
        seeds: seeds per row when ``--seeds`` is not given.
        note: one line for the report (size and time relative to the paper).
    """

    values: dict[str, Any]
    seeds: int
    note: str = ""


class Experiment(ABC):
    """A reproduced table. Subclasses set the class attributes and implement the flow methods."""

    name: str
    title: str
    paper: str
    table: str
    config_class: type[TrainConfig] = TrainConfig
    needs_data: str = ""  # the data folder a run reads (--data-dir / KDGM_DATA_DIR), if any
    presets: dict[str, Preset]
    rows: tuple[Row, ...]
    metrics: tuple[Metric, ...]
    progress_metrics: tuple[str, ...] = ()  # what evaluate(final=False) returns: the names ``select`` may take
    curve_terms: tuple[str, ...] = ()  # logged training terms the report plots over training (e.g. an E-step's ESS)
    # Whether --devices N (DDP) computes the right gradients: objectives that call model methods other than forward
    # (sample, log_prob) bypass DDP's gradient synchronisation, so such experiments train on one device per run.
    data_parallel: bool = True

    # -- description -------------------------------------------------------------------------------------------
    def differences(self, config: TrainConfig) -> list[str]:
        """Lines for the report: what this run does differently from the paper's set-up."""
        return []

    def check(self, config: TrainConfig, data: ExperimentData) -> None:
        """Raise a :class:`UserError` before anything is written if a run of ``config`` cannot start on ``data``.

        The runner builds each training run's data before it writes anything (every kdgm data set is cached after
        its first build) and checks the batch size against it; experiments add their own checks here.
        """

    # -- the flow ----------------------------------------------------------------------------------------------
    @abstractmethod
    def data(self, config: TrainConfig, seed: int = 0) -> ExperimentData:
        """The data of one run; ``seed`` picks what a seed changes in the data (e.g. the test fold of a
        cross-validation), never the model's initialisation."""

    @abstractmethod
    def build_model(self, config: TrainConfig, data: ExperimentData) -> nn.Module:
        """The model of one row, freshly initialised from the current seed."""

    @abstractmethod
    def phases(self, config: TrainConfig, model: nn.Module, data: ExperimentData) -> list[Phase]:
        """The updater's phases: objectives with their optimizers."""

    @abstractmethod
    def evaluate(self, config: TrainConfig, model: nn.Module, test: Any, final: bool) -> dict[str, float]:
        """Metrics on ``test``; ``final=False`` is the cheap version run during training."""

    def figures(self, config: TrainConfig, model: nn.Module, test: Any, folder: Path) -> list[Path]:
        """Write PNG figures of a trained model into ``folder``; return their paths."""
        return []

    def comparison_figures(self, models: dict[str, nn.Module], test: Any, folder: Path) -> list[Path]:
        """Write PNG figures that set several rows' trained models side by side into ``folder``; ``models`` maps
        each trained row's name to its first seed's model (eval mode), ``test`` is the run's test data. Drawn once
        every run has finished (and again by ``kdgm report --figures``). Default: none."""
        return []

    def run_config(self, config: TrainConfig) -> TrainConfig:
        """The config a training run uses, from its row's config (default: unchanged). An experiment whose
        fine-tuning rows train for their own number of steps sets them here."""
        return config

    def row_active(self, row: Row, config: TrainConfig) -> bool:
        """Whether this config trains the row (a quick preset may run one setting of a table)."""
        return True

    def paper_numbers(self, config: TrainConfig) -> dict[str, dict[str, float]]:
        """Row name → metric key → the paper's number, for this config (e.g. per data set)."""
        return {row.name: dict(row.paper) for row in self.rows}

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        """Extra Markdown lines for the report (e.g. paired differences between rows); ``run`` is the run folder
        (:class:`kdgm.experiments.rundir.Run`), for sections that read its results beyond the metrics."""
        return []

    def samples(self, model: nn.Module, n: int, generator: torch.Generator, data: Any = None) -> Tensor | list[str]:
        """What ``kdgm sample`` shows: (n, C, H, W) images in [0, 1], or n lines of text (a conditional model reads
        its conditions from ``data``, the run's :class:`ExperimentData`)."""
        raise UserError(f"experiment {self.name} has no generative samples")

    @property
    def has_samples(self) -> bool:
        """Whether ``kdgm sample`` applies (the experiment overrides :meth:`samples`)."""
        return type(self).samples is not Experiment.samples
