"""Inference on trained run directories: `EventClassifier.from_pretrained(dir).predict(...)`.

The classifier reads everything from the run directory (model, tokenizer, preprocessing,
tuned thresholds, max length), so it cannot drift from training. Sentences are scored in
length-sorted batches (little padding) under `torch.inference_mode`, in one of three
precisions:

- `fp32`: the model as trained;
- `bf16`: the whole model cast to bfloat16 (fast on CPUs with AMX/AVX512-BF16 and on GPUs);
- `int8`: dynamic int8 quantisation of the Linear layers, run by ONNX Runtime when it is
  installed (`pip install arabic-events[int8]`; the quantised graph is cached under
  `~/.cache/arabic-events/onnx/`), else by torch's dynamic quantisation. CPU only.

`auto` picks bf16 where the hardware runs it natively and fp32 elsewhere; int8 is never
picked automatically because it moves scores by up to about 0.01.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import yaml

from arabic_events.config import PredictConfig
from arabic_events.data import ARABIC_LETTER
from arabic_events.modeling import ModelLoadError, cpu_supports_bf16, load_trained, pick_device
from arabic_events.preprocess import Preprocessor
from arabic_events.sentences import Sentence, split_sentences

logger = logging.getLogger(__name__)

_DEFAULTS = PredictConfig()
PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class SentencePrediction:
    """Labels and scores of one sentence.

    Attributes:
        text: The sentence as given (before preprocessing).
        labels: Labels whose score reaches their threshold, in the model's label order.
        scores: Sigmoid score of every label.
        index: Position of the sentence in its input list or document.
        span: ``(start, end)`` character offsets into the document text (documents only).
    """

    text: str
    labels: list[str]
    scores: dict[str, float]
    index: int = 0
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class DocumentPrediction:
    """The sentences of one document with a document-level roll-up.

    Attributes:
        id: Document id.
        sentences: Predictions of the sentences that were scored (Arabic ones).
        labels: Labels present in at least one sentence.
        scores: Highest sentence score per label (0.0 when no sentence was scored).
        counts: Number of sentences carrying each label.
        skipped: Sentences left out because their share of Arabic letters was too small.
    """

    id: str
    sentences: list[SentencePrediction]
    labels: list[str]
    scores: dict[str, float]
    counts: dict[str, int]
    skipped: int = 0


@dataclass(frozen=True)
class SplitDocument:
    """A document cut into the sentences that will be scored."""

    id: str
    text: str
    sentences: list[Sentence] = field(default_factory=list)
    """Sentences kept for scoring, with offsets into `text`."""
    positions: list[int] = field(default_factory=list)
    """Index of each kept sentence among all sentences of the document."""
    skipped: int = 0
    """Sentences left out as non-Arabic."""


def arabic_ratio(text: str) -> float:
    """Share of Arabic letters among the letters of `text` (0.0 when it has no letter)."""
    letters = sum(ch.isalpha() for ch in text)
    return len(ARABIC_LETTER.findall(text)) / letters if letters else 0.0


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn `auto` into `bf16` or `fp32`, and reject combinations that cannot run.

    Raises:
        ValueError: Unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError("precision='int8' runs on the CPU only; use bf16 on a GPU.")
    if precision != "auto":
        if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            logger.warning("this CPU has no native bf16 instructions: bf16 will be slow; "
                           "fp32 or int8 are faster here")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


class _TorchRunner:
    """Logits from a torch model, for padded numpy batches."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            ).logits
        return logits.float().cpu().numpy()


class _OrtRunner:
    """Logits from an ONNX Runtime session."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(["logits"], feeds)[0].astype(np.float32, copy=False)


def _onnx_cache_dir(run_dir: Path) -> Path:
    """Cache folder for a run's quantised graph, keyed by the weights and library versions."""
    import onnxruntime

    from arabic_events.encoders import resolve_cache_dir

    weights = run_dir / "model.safetensors"
    stat = weights.stat()
    key = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{torch.__version__}|" \
          f"{onnxruntime.__version__}"
    return resolve_cache_dir() / "onnx" / hashlib.sha256(key.encode()).hexdigest()[:20]


def export_int8_onnx(model: torch.nn.Module, run_dir: Path) -> Path:
    """Export the model to ONNX, quantise its weights to int8 dynamically, cache the result.

    Args:
        model: The fp32 model of `run_dir`, in eval mode.
        run_dir: Its run directory (the cache key uses its weights file).

    Returns:
        Path of `model.int8.onnx` in the cache (written once, atomically).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = _onnx_cache_dir(run_dir)
    final = target / "model.int8.onnx"
    if final.is_file():
        return final
    logger.info("exporting %s to ONNX int8 (once; cached in %s)", run_dir, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        example = torch.ones(2, 8, dtype=torch.long)
        axes = {"input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example, example), str(work / "model.onnx"), dynamo=False,
                              input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=17)
        quantize_dynamic(str(work / "model.onnx"), str(work / "model.int8.onnx"),
                         weight_type=QuantType.QInt8)
        (work / "model.onnx").unlink()
        (work / "source.txt").write_text(str(run_dir.resolve()), encoding="utf-8")
        try:
            os.replace(work, target)
        except OSError:  # another process cached it first
            if not final.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _torch_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Torch dynamic int8 quantisation of the Linear layers (deprecated API, still present)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _build_runner(model: torch.nn.Module, run_dir: Path, device: torch.device, precision: str,
                  int8_backend: str) -> tuple[Any, str]:
    """The callable that turns padded batches into logits, and a name for it."""
    if precision == "fp32":
        return _TorchRunner(model.to(device), device), "torch fp32"
    if precision == "bf16":
        return _TorchRunner(model.to(device=device, dtype=torch.bfloat16), device), "torch bf16"
    if int8_backend not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"int8_backend={int8_backend!r}: use auto, onnxruntime or torch.")
    if int8_backend in ("auto", "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if int8_backend == "onnxruntime":
                raise ModelLoadError("int8_backend='onnxruntime' needs onnxruntime: "
                                     "pip install 'arabic-events[int8]'.") from None
            logger.warning("onnxruntime is not installed: int8 uses torch dynamic quantisation "
                           "(slower); pip install 'arabic-events[int8]' for the faster path")
        else:
            path = export_int8_onnx(model, run_dir)
            return _OrtRunner(path, torch.get_num_threads()), "onnxruntime int8"
    return _TorchRunner(_torch_int8(model), device), "torch int8"


def _read_thresholds(run_dir: Path, labels: list[str]) -> np.ndarray:
    path = run_dir / "thresholds.json"
    if not path.is_file():
        logger.warning("%s is missing: using threshold 0.5 for every label", path)
        return np.full(len(labels), 0.5, dtype=np.float32)
    values = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in labels if name not in values]
    if missing:
        logger.warning("%s has no threshold for %s: using 0.5 for them", path, missing)
    return np.array([float(values.get(name, 0.5)) for name in labels], dtype=np.float32)


def _read_max_length(run_dir: Path, model: torch.nn.Module) -> int:
    path = run_dir / "run_config.yaml"
    if path.is_file():
        from arabic_events.config import config_from_dict

        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return config_from_dict(values).model.max_length
    limit = min(int(getattr(model.config, "max_position_embeddings", 512)), 512)
    logger.warning("%s is missing: truncating sentences at %d tokens", path, limit)
    return limit
