"""Inference with a trained run directory: `EventClassifier.from_pretrained(dir).predict(...)`.

Everything the model needs is read from the run directory that `arabic-events train` wrote:
weights, tokenizer, `preprocessing.json`, `thresholds.json` (per-label thresholds tuned on dev)
and `run_config.yaml` (the token limit the model was trained with), so inference cannot drift
from training.

Speed on CPU comes from sorting sentences by token length and batching neighbours (almost no
padding), tokenising a whole list at once, `torch.inference_mode`, SDPA attention and, by
`precision`: bf16 weights (CPUs with AMX or AVX512-BF16) or int8 dynamic quantisation of the
encoder's Linear layers. The classification head always runs in fp32.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import yaml

from arabic_events.config import config_from_dict
from arabic_events.modeling import cpu_supports_bf16, load_trained
from arabic_events.preprocess import Preprocessor
from arabic_events.sentences import split_sentences

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
_ARABIC = re.compile(r"[\u0621-\u064A\u0671-\u06D3\u06FA-\u06FF]")


@dataclass
class Prediction:
    """The labels of one sentence.

    Attributes:
        text: The sentence as given (before preprocessing).
        labels: Labels whose score reaches their threshold, in the model's label order.
        scores: Sigmoid score of every label.
    """

    text: str
    labels: list[str]
    scores: dict[str, float]


@dataclass
class SentencePrediction(Prediction):
    """A sentence of a document, with its place in the document.

    Attributes:
        index: Position among the document's sentences (`split_sentences` order).
        start: Offset of the sentence's first character in the document text.
        end: Offset just past its last character (`document[start:end] == text`).
    """

    index: int = 0
    start: int = 0
    end: int = 0


@dataclass
class DocumentPrediction:
    """The sentences of one document and their roll-up.

    Attributes:
        id: The document id given, or its position in the input.
        sentences: One prediction per sentence.
        labels: Labels predicted for at least one sentence, in label order.
        scores: Highest sentence score of each label (0.0 for a document without sentences).
        counts: Number of sentences carrying each label.
    """

    id: str
    sentences: list[SentencePrediction] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def arabic_ratio(text: str) -> float:
    """Share of Arabic letters among the letters of `text` (0.0 when it has no letter)."""
    letters = sum(ch.isalpha() for ch in text)
    return len(_ARABIC.findall(text)) / letters if letters else 0.0


def resolve_precision(precision: str, device: torch.device) -> str:
    """Resolve `auto` to `bf16` where the hardware runs it natively, else `fp32`.

    Raises:
        ValueError: An unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError("precision='int8' (dynamic quantisation) runs on CPU only; use bf16.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fp32_head(model: torch.nn.Module) -> None:
    """Keep the classification head in fp32 and feed it fp32 inputs (more exact scores)."""
    head = getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Module):
        head.float()
        head.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))


def prepare_model(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    """Cast or quantise a loaded model for inference at a resolved precision.

    Args:
        model: A `...ForSequenceClassification` model in eval mode.
        precision: `fp32`, `bf16` (bf16 weights; head in fp32) or `int8` (dynamic int8
            quantisation of the encoder's Linear layers, oneDNN kernels where available).
        device: Where the model runs.

    Returns:
        The model ready to run (a quantised copy for int8).
    """
    model = model.to(device).eval()
    if precision == "bf16":
        model.to(torch.bfloat16)
        _fp32_head(model)
    elif precision == "int8":
        model = _quantize_int8(model)
    return model


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    from torch.ao.quantization import quantize_dynamic

    head = getattr(model, "classifier", None)
    skip = {id(m) for m in head.modules()} if isinstance(head, torch.nn.Module) else set()
    targets = {
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and id(m) not in skip
    }
    engines = torch.backends.quantized.supported_engines
    previous = torch.backends.quantized.engine
    # oneDNN's int8 kernels (VNNI/AMX) beat fbgemm's on recent Xeons; packed weights keep
    # the engine they were packed with, so the global setting is restored afterwards.
    if "onednn" in engines:
        torch.backends.quantized.engine = "onednn"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, not removed
            return quantize_dynamic(copy.deepcopy(model), targets, dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = previous


def _max_length(run_dir: Path, tokenizer: Any, model: torch.nn.Module) -> int:
    """The token limit the model was trained with (`model.max_length` of run_config.yaml)."""
    path = run_dir / "run_config.yaml"
    if path.is_file():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return config_from_dict(raw).model.max_length
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    logger.warning("%s is missing: truncating sentences at %d tokens", path, limit)
    return limit


def _thresholds(run_dir: Path, labels: list[str]) -> np.ndarray:
    path = run_dir / "thresholds.json"
    if not path.is_file():
        logger.warning("%s is missing: using the threshold 0.5 for every label", path)
        return np.full(len(labels), 0.5, dtype=np.float32)
    values = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in labels if name not in values]
    if missing:
        raise ValueError(f"{path}: no threshold for label(s) {missing}; found {sorted(values)}.")
    return np.array([values[name] for name in labels], dtype=np.float32)


def document_sentences(text: str, min_arabic_ratio: float = 0.0) -> list[tuple[int, Any]]:
    """Sentences of a document with their `split_sentences` index, non-Arabic ones left out.

    Args:
        text: The document text.
        min_arabic_ratio: Leave out sentences whose share of Arabic letters is smaller.

    Returns:
        `(index, Sentence)` pairs; each `Sentence` carries offsets into `text`.
    """
    return [
        (i, s)
        for i, s in enumerate(split_sentences(text))
        if min_arabic_ratio <= 0 or arabic_ratio(s.text) >= min_arabic_ratio
    ]


class EventClassifier:
    """A trained event classifier: preprocessing, tokenizer, model and tuned thresholds.

    Example:
        >>> clf = EventClassifier.from_pretrained("models/e5-small-offline")  # doctest: +SKIP
        >>> result = clf.predict("شنت مقاتلات التحالف غارات جوية على مواقع لتنظيم داعش.")
        >>> result.labels
        ['airstrike']
        >>> {k: round(v, 3) for k, v in result.scores.items()}
        {'airstrike': 0.987, 'arrest': 0.004, 'base_handover': 0.006, 'statement': 0.031, \
'political_pressure': 0.005}
        >>> doc = clf.predict_documents([("d1", "قال المتحدث إن القوات اعتقلت ثلاثة مسلحين.\\n"
        ...                                      "وأكدت الوزارة تسليم القاعدة للجيش.")])[0]
        >>> doc.labels, doc.counts["statement"], [(s.start, s.end) for s in doc.sentences]
        (['arrest', 'base_handover', 'statement'], 2, [(0, 42), (43, 77)])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        preprocessor: Preprocessor,
        labels: list[str],
        thresholds: np.ndarray,
        max_length: int,
        *,
        device: torch.device,
        precision: str,
        batch_size: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.preprocessor = preprocessor
        self.labels = labels
        self.thresholds = thresholds
        self.max_length = max_length
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> EventClassifier:
        """Load a run directory written by `arabic-events train`.

        Args:
            run_dir: The run directory.
            device: `auto` (CUDA when present), `cpu` or `cuda`.
            precision: `auto`, `fp32`, `bf16` or `int8`; None takes `predict.precision`'s default.
            batch_size: Sentences per forward pass; None takes `predict.batch_size`'s default.
            threads: CPU threads for torch; None uses every core this process may run on.

        Raises:
            ModelLoadError: The folder holds no finished run.
            ValueError: A precision the device cannot run, or thresholds that miss a label.
        """
        from arabic_events.config import PredictConfig
        from arabic_events.modeling import pick_device

        defaults = PredictConfig()
        run_dir = Path(run_dir)
        torch_device = pick_device(device)
        resolved = resolve_precision(precision or defaults.precision, torch_device)
        if torch_device.type == "cpu":
            torch.set_num_threads(threads or cpu_cores())
        tokenizer, model = load_trained(run_dir)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        clf = cls(
            prepare_model(model, resolved, torch_device),
            tokenizer,
            Preprocessor.load(run_dir),
            labels,
            _thresholds(run_dir, labels),
            _max_length(run_dir, tokenizer, model),
            device=torch_device,
            precision=resolved,
            batch_size=batch_size or defaults.batch_size,
        )
        logger.info("loaded %s: %s on %s, %d threads", run_dir, resolved, torch_device,
                    torch.get_num_threads())
        return clf

    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Sigmoid scores of raw sentences, shape (len(texts), len(labels)), in input order.

        The sentences are preprocessed and tokenised in one call, then run in batches of similar
        length (sorted), so a batch carries almost no padding; the result does not depend on the
        batch size beyond float rounding (about 1e-6).
        """
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return probs
        ids = self.tokenizer(
            self.preprocessor.batch(list(texts)),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        size = batch_size or self.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                index = order[start : start + size]
                probs[index] = self._forward([ids[i] for i in index], int(lengths[index].max()))
        return probs

    def _forward(self, rows: list[list[int]], width: int) -> np.ndarray:
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        logits = self.model(
            input_ids=torch.from_numpy(input_ids).to(self.device),
            attention_mask=torch.from_numpy(mask).to(self.device),
        ).logits
        return torch.sigmoid(logits.float()).cpu().numpy()

    def decide(self, probs: np.ndarray) -> list[list[str]]:
        """Label names whose score reaches the label's threshold, per row of `probs`."""
        hits = probs >= self.thresholds
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in hits]

    def _score_dicts(self, probs: np.ndarray) -> list[dict[str, float]]:
        return [dict(zip(self.labels, map(float, row), strict=True)) for row in probs]

    @overload
    def predict(self, texts: str, batch_size: int | None = None) -> Prediction: ...

    @overload
    def predict(self, texts: list[str], batch_size: int | None = None) -> list[Prediction]: ...

    def predict(
        self, texts: str | list[str], batch_size: int | None = None
    ) -> Prediction | list[Prediction]:
        """Label one sentence or a list of sentences.

        Args:
            texts: A raw sentence (preprocessing is applied here) or a list of them.
            batch_size: Sentences per forward pass; None uses the classifier's.

        Returns:
            A `Prediction` for a string, a list of them (input order) for a list.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        probs = self.predict_scores(batch, batch_size)
        results = [
            Prediction(text, labels, scores)
            for text, labels, scores in zip(
                batch, self.decide(probs), self._score_dicts(probs), strict=True
            )
        ]
        return results[0] if single else results

    def predict_documents(
        self,
        documents: Iterable[str | tuple[str, str]],
        batch_size: int | None = None,
        min_arabic_ratio: float = 0.0,
    ) -> list[DocumentPrediction]:
        """Split articles into sentences, label each, and roll the labels up per document.

        Args:
            documents: Texts, or `(id, text)` pairs; a bare text's id is its position ("0", ...).
            batch_size: Sentences per forward pass; None uses the classifier's.
            min_arabic_ratio: Leave out sentences with a smaller share of Arabic letters.

        Returns:
            One `DocumentPrediction` per document, in input order; sentence offsets point into
            the text given.
        """
        docs = [(str(i), d) if isinstance(d, str) else (str(d[0]), d[1]) for i, d in
                enumerate(documents)]
        split = [document_sentences(text, min_arabic_ratio) for _, text in docs]
        flat = [s.text for sentences in split for _, s in sentences]
        probs = self.predict_scores(flat, batch_size)
        names, scores = self.decide(probs), self._score_dicts(probs)
        results, k = [], 0
        for (doc_id, _), sentences in zip(docs, split, strict=True):
            preds = []
            for index, s in sentences:
                preds.append(SentencePrediction(s.text, names[k], scores[k], index, s.start, s.end))
                k += 1
            results.append(self._roll_up(doc_id, preds, probs[k - len(preds) : k]))
        return results

    def _roll_up(
        self, doc_id: str, sentences: list[SentencePrediction], probs: np.ndarray
    ) -> DocumentPrediction:
        counts = {name: sum(name in s.labels for s in sentences) for name in self.labels}
        top = probs.max(axis=0) if len(probs) else np.zeros(len(self.labels), dtype=np.float32)
        return DocumentPrediction(
            id=doc_id,
            sentences=sentences,
            labels=[name for name in self.labels if counts[name]],
            scores=dict(zip(self.labels, map(float, top), strict=True)),
            counts=counts,
        )
