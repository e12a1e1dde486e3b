"""Inference on trained run directories: `EventClassifier.from_pretrained(dir).predict(...)`.

The classifier reads everything from the run directory (model, tokenizer, preprocessing, tuned
thresholds, max length), so it cannot drift from training. Sentences are tokenised once, sorted
by length and scored in batches padded only to their own longest sentence, under
`torch.inference_mode`, in one of three precisions (`predict.precision`):

- `fp32`: the model as trained;
- `bf16`: the encoder cast to bfloat16, the 5-label head kept in float32 (fast on CPUs with
  AMX / AVX512-BF16 and on GPUs; scores move by about 1e-3); on such CPUs its Linear layers
  run as oneDNN GEMMs on prepacked weights with query/key/value, GELU and residual adds fused
  (`cpu_kernels.py`);
- `int8`: the encoder's Linear layers in int8 (`cpu_kernels.py`: weights per output channel,
  activations quantised per call over their range, outlier feature columns added back in
  float32; with the run's `int8_calibration.json`, the feed-forward GEMMs hand uint8 codes to
  each other; oneDNN GEMMs with the same fusions on x86 CPUs with VNNI/AMX), head kept in
  float32; CPU only, scores move by about 1e-2 (on the offline e5-small 0.55% of label
  decisions differ from fp32, against 0.07% for bf16). On an AMX Xeon it ran 1.5x as fast as
  bf16 on an AraBERT-sized model and 0.9x on the offline e5-small
  (benchmarks/results/inference-2026-12-06-calibrated.md), so `auto` keeps bf16.

`auto` picks bf16 where the hardware runs it natively and fp32 elsewhere; int8 is never picked
automatically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
import yaml

from arabic_events.config import PredictConfig
from arabic_events.cpu_kernels import calibrate_feed_forward, lower_encoder
from arabic_events.modeling import cpu_supports_bf16, load_trained, pick_device
from arabic_events.preprocess import Preprocessor
from arabic_events.sentences import document_sentences

logger = logging.getLogger(__name__)

_DEFAULTS = PredictConfig()
CALIBRATION_FILE = "int8_calibration.json"
"""In a run directory: the feed-forward ranges that let int8 hand uint8 codes between GEMMs
(`cpu_kernels.StaticFeedForward`); written by `train` (dev sentences) or `calibrate_int8`."""
PRECISIONS = ("auto", "fp32", "bf16", "int8")
CPU_BATCH_TOKENS = 1024
"""Default cap on padded tokens per batch on CPU. Activations of a batch that fits in cache are
cheaper than GEMM efficiency gained by bigger batches: on 2 Xeon cores (AMX), batches of 64
sentences ran 1.4-2x slower than batches of about 1024 tokens, in fp32 and bf16 alike."""


@dataclass(frozen=True)
class SentencePrediction:
    """Labels and scores of one sentence.

    Attributes:
        text: The sentence as given (before preprocessing).
        labels: Labels whose score reaches their threshold, in the model's label order.
        scores: Sigmoid score of every label, in the model's label order.
        index: Position of the sentence in the input list, or among all sentences of its
            document (non-Arabic ones included).
        start: Offset of its first character in the document text (documents only).
        end: Offset just past its last character in the document text (documents only).
    """

    text: str
    labels: list[str]
    scores: dict[str, float]
    index: int = 0
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class DocumentPrediction:
    """The sentences of one document with a document-level roll-up.

    Attributes:
        id: Document id.
        sentences: Predictions for the sentences that were scored (the Arabic ones).
        labels: Labels present in at least one sentence, in the model's label order.
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn `auto` into `bf16` or `fp32`, and reject combinations that cannot run.

    Raises:
        ValueError: An unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError("precision='int8' runs on the CPU only; use bf16 on a GPU.")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        logger.warning("this CPU has no native bf16 instructions: bf16 runs emulated and slowly; "
                       "fp32 or int8 are faster here")
    return precision


def _float32_head(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _lower_precision(model: torch.nn.Module, precision: str, kernel: str = "auto",
                     device: torch.device | None = None,
                     feed_forward: list[dict] | None = None) -> torch.nn.Module:
    """Lower the encoder to bf16 or int8 (see `cpu_kernels.py`); the head stays float32."""
    if precision == "fp32":
        return model
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no `classifier` head; use precision=fp32.")
    if device is not None and device.type != "cpu":
        if kernel == "onednn":
            raise ValueError("kernel='onednn' runs on the CPU; use kernel='auto' on a GPU.")
        kernel = "portable"  # bf16 on a GPU: the encoder cast, run by cuBLAS
    used = lower_encoder(model.base_model, precision, kernel, feed_forward)
    static = " with calibrated feed-forward hand-over" if (
        precision == "int8" and used == "onednn" and feed_forward is not None) else ""
    logger.info("%s: %s kernel%s", precision, used, static)
    head.register_forward_pre_hook(_float32_head)
    return model


def _read_thresholds(run_dir: Path, labels: list[str]) -> np.ndarray:
    path = run_dir / "thresholds.json"
    if not path.is_file():
        logger.warning("%s is missing: using the threshold 0.5 for every label", path)
        return np.full(len(labels), 0.5)
    values = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in labels if name not in values]
    if missing:
        logger.warning("%s has no threshold for %s: using 0.5 for them", path, missing)
    return np.array([float(values.get(name, 0.5)) for name in labels])


def _read_calibration(run_dir: Path) -> list[dict] | None:
    path = run_dir / CALIBRATION_FILE
    if not path.is_file():
        logger.info("%s is missing: int8 quantises every feed-forward activation per batch "
                    "(`arabic-events calibrate --run %s --input DOCUMENTS` writes it)", path,
                    run_dir)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["feed_forward"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not an int8 calibration ({error}): delete it, or write it "
                         f"again with `arabic-events calibrate --run {run_dir} --input "
                         "DOCUMENTS`") from error


def calibrate_int8(run_dir: str | Path, sentences: Sequence[str], source: str = "") -> Path:
    """Measure the feed-forward ranges int8 needs on `sentences`; write `CALIBRATION_FILE`.

    Run on sentences like those the model will label (a few hundred suffice); the float model
    runs over them once, on the CPU. `train` calls this with the dev sentences.

    Args:
        run_dir: A run directory with its model, tokenizer and preprocessing.
        sentences: Raw sentences (the run's preprocessing is applied).
        source: Where the sentences come from, recorded in the file.

    Returns:
        The path written (atomically).
    """
    run_dir = Path(run_dir)
    if not len(sentences):
        raise ValueError("calibrate_int8 needs at least one sentence")
    classifier = EventClassifier.from_pretrained(run_dir, device="cpu", precision="fp32")
    ranges = calibrate_feed_forward(classifier.model.base_model,
                                    lambda: classifier.predict_scores(list(sentences)))
    payload = {"feed_forward": ranges, "sentences": len(sentences), "source": source}
    path = run_dir / CALIBRATION_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def _read_max_length(run_dir: Path, model: torch.nn.Module) -> int:
    path = run_dir / "run_config.yaml"
    if path.is_file():
        from arabic_events.config import config_from_dict

        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return config_from_dict(values).model.max_length
    limit = min(int(getattr(model.config, "max_position_embeddings", 512)), 512)
    logger.warning("%s is missing: truncating sentences at %d tokens", path, limit)
    return limit


class EventClassifier:
    """A trained run directory, ready to label Arabic sentences and documents.

    Build it with `from_pretrained`. Scores are sigmoid outputs; a label is predicted when its
    score reaches the threshold tuned for it on dev (`thresholds.json`).

    Example (the offline run written by `make train`; a retrained model's scores will vary):
        >>> from arabic_events import EventClassifier
        >>> clf = EventClassifier.from_pretrained("models/e5-small-offline", precision="fp32")
        >>> pred = clf.predict("شنت مقاتلات التحالف غارات جوية على مواقع لتنظيم داعش قرب الموصل.")
        >>> pred.labels, {name: round(score, 2) for name, score in pred.scores.items()}
        (['airstrike'], {'airstrike': 0.99, 'arrest': 0.05, 'base_handover': 0.05, \
'statement': 0.13, 'political_pressure': 0.08})
        >>> text = ("التحالف يسلم قاعدة K1 للقوات العراقية\\n"
        ...         "وقال المتحدث باسم التحالف إن القوات اعتقلت ثلاثة مسلحين.")
        >>> doc = clf.predict_documents([("k1", text)])[0]
        >>> doc.labels, doc.counts["arrest"]
        (['arrest', 'base_handover', 'statement'], 1)
        >>> [(s.start, s.end, s.labels) for s in doc.sentences]
        [(0, 37, ['base_handover']), (38, 94, ['arrest', 'statement'])]
    """

    def __init__(self, model: torch.nn.Module, tokenizer, preprocessor: Preprocessor,
                 thresholds: np.ndarray, *, max_length: int, precision: str,
                 device: torch.device, batch_size: int = _DEFAULTS.batch_size,
                 max_batch_tokens: int | None = None,
                 min_arabic_ratio: float = _DEFAULTS.min_arabic_ratio) -> None:
        self.model, self.tokenizer, self.preprocessor = model, tokenizer, preprocessor
        self.labels: list[str] = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.max_length, self.precision, self.device = max_length, precision, device
        self.batch_size, self.min_arabic_ratio = batch_size, min_arabic_ratio
        if max_batch_tokens is None and device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        self.max_batch_tokens = max_batch_tokens
        pad = tokenizer.pad_token_id
        self.pad_id = 0 if pad is None else int(pad)

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        device: str = "auto",
        precision: str = _DEFAULTS.precision,
        batch_size: int = _DEFAULTS.batch_size,
        min_arabic_ratio: float = _DEFAULTS.min_arabic_ratio,
        max_batch_tokens: int | None = None,
        kernel: str = "auto",
        int8_calibration: bool = True,
    ) -> EventClassifier:
        """Load a run directory written by `arabic-events train`.

        Args:
            run_dir: Folder with `config.json`, `model.safetensors`, tokenizer files,
                `preprocessing.json`, `thresholds.json` and `run_config.yaml`.
            device: `auto` (CUDA when present), `cpu` or `cuda`.
            precision: `auto`, `fp32`, `bf16` or `int8` (see the module docstring).
            batch_size: Most sentences per forward pass.
            min_arabic_ratio: For documents: sentences with a smaller share of Arabic letters
                are not scored.
            max_batch_tokens: Most padded tokens per forward pass (a batch holds at least one
                sentence); None: `CPU_BATCH_TOKENS` on CPU, no cap on a GPU.
            kernel: With bf16 or int8 on the CPU: `auto`, `onednn` or `portable` (see
                `cpu_kernels.py`).
            int8_calibration: With int8 on the oneDNN kernel: use the run's
                `int8_calibration.json` where present (False: every activation is quantised
                over its per-batch range, as without the file).

        Raises:
            ModelLoadError: Not a finished run directory.
            PreprocessingError: `preprocessing.json` is missing or cannot run here.
            ValueError: An unknown precision or kernel, or int8 on a GPU.
        """
        run_dir = Path(run_dir)
        torch_device = pick_device(device)
        resolved = resolve_precision(precision, torch_device)
        preprocessor = Preprocessor.load(run_dir)
        tokenizer, model = load_trained(run_dir)
        thresholds = _read_thresholds(run_dir, [model.config.id2label[i]
                                                for i in range(model.config.num_labels)])
        max_length = _read_max_length(run_dir, model)
        feed_forward = (_read_calibration(run_dir) if resolved == "int8" and int8_calibration
                        else None)
        model = _lower_precision(model, resolved, kernel, torch_device,
                                 feed_forward).to(torch_device).eval()
        logger.info("loaded %s: precision %s on %s, max_length %d, batch_size %d", run_dir,
                    resolved, torch_device, max_length, batch_size)
        return cls(model, tokenizer, preprocessor, thresholds, max_length=max_length,
                   precision=resolved, device=torch_device, batch_size=batch_size,
                   max_batch_tokens=max_batch_tokens,
                   min_arabic_ratio=min_arabic_ratio)

    def preprocess(self, text: str) -> str:
        """The text as the model sees it (the run's preprocessing)."""
        return self.preprocessor(text)

    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Sigmoid scores, shape `(len(texts), n_labels)`, in input order.

        Sentences are preprocessed, tokenised (truncated at the run's `max_length`) and sorted
        by length, longest first; each batch holds at most `batch_size` sentences and
        `max_batch_tokens` padded tokens and is padded to its own longest sentence. In fp32
        and bf16 the scores do not depend on the batch size beyond float rounding (about 1e-7
        in fp32); int8 quantises each batch's activations with one scale, so its scores do.

        Args:
            texts: Raw sentences.
            batch_size: Most sentences per forward pass; default: the classifier's.
        """
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not len(texts):
            return probs
        prepared = self.preprocessor.batch(list(texts))
        ids = self.tokenizer(prepared, truncation=True, max_length=self.max_length,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        with torch.inference_mode():
            for idx in self._batches(lengths, batch_size or self.batch_size):
                input_ids = np.full((len(idx), lengths[idx[0]]), self.pad_id, dtype=np.int64)
                mask = np.zeros_like(input_ids)
                for row, i in enumerate(idx):
                    input_ids[row, : lengths[i]] = ids[i]
                    mask[row, : lengths[i]] = 1
                logits = self.model(input_ids=torch.from_numpy(input_ids).to(self.device),
                                    attention_mask=torch.from_numpy(mask).to(self.device)).logits
                probs[idx] = torch.sigmoid(logits.float()).cpu().numpy()
        return probs

    def _batches(self, lengths: np.ndarray, size: int) -> list[np.ndarray]:
        """Indices of each batch: longest sentences first, capped in sentences and tokens."""
        order = np.argsort(-lengths, kind="stable")
        budget = self.max_batch_tokens or int(lengths.max()) * size
        batches, start = [], 0
        while start < len(order):
            width = int(lengths[order[start]])
            count = max(1, min(size, budget // max(width, 1)))
            batches.append(order[start : start + count])
            start += count
        return batches

    def decide(self, probs: np.ndarray) -> list[list[str]]:
        """Label names whose score reaches the label's threshold, per row of `probs`."""
        hits = np.asarray(probs) >= self.thresholds
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in hits]

    @overload
    def predict(self, texts: str) -> SentencePrediction: ...
    @overload
    def predict(self, texts: Sequence[str]) -> list[SentencePrediction]: ...

    def predict(self, texts: str | Sequence[str]) -> SentencePrediction | list[SentencePrediction]:
        """Labels and scores for one sentence or a list of sentences.

        Args:
            texts: A sentence, or a list of sentences (raw text; preprocessing is applied).

        Returns:
            A `SentencePrediction` for a string, a list of them for a list.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        probs = self.predict_scores(batch)
        out = [self._sentence(text, row, names, index)
               for index, (text, row, names) in enumerate(zip(batch, probs, self.decide(probs),
                                                              strict=True))]
        return out[0] if single else out

    def predict_documents(
        self, documents: Iterable[str | tuple[str, str]]
    ) -> list[DocumentPrediction]:
        """Split articles into sentences, label each, and roll the labels up per document.

        All sentences of all documents are scored together (one length-sorted pass).

        Args:
            documents: Texts, or `(id, text)` pairs; a bare text gets its position as id.

        Returns:
            One `DocumentPrediction` per document, in input order.
        """
        items = [(str(i), doc) if isinstance(doc, str) else (str(doc[0]), doc[1])
                 for i, doc in enumerate(documents)]
        split = [(doc_id, *document_sentences(text, self.min_arabic_ratio))
                 for doc_id, text in items]
        probs = self.predict_scores([s.text for _, kept, _ in split for _, s in kept])
        names = self.decide(probs)
        results, k = [], 0
        for doc_id, kept, skipped in split:
            sentences = [self._sentence(s.text, probs[k + j], names[k + j], i, s.start, s.end)
                         for j, (i, s) in enumerate(kept)]
            k += len(kept)
            results.append(self._roll_up(doc_id, sentences, skipped))
        return results

    def _sentence(self, text: str, row: np.ndarray, names: list[str], index: int,
                  start: int | None = None, end: int | None = None) -> SentencePrediction:
        scores = {name: float(v) for name, v in zip(self.labels, row, strict=True)}
        return SentencePrediction(text, names, scores, index, start, end)

    def _roll_up(self, doc_id: str, sentences: list[SentencePrediction],
                 skipped: int) -> DocumentPrediction:
        counts = {name: sum(name in s.labels for s in sentences) for name in self.labels}
        scores = {name: max((s.scores[name] for s in sentences), default=0.0)
                  for name in self.labels}
        labels = [name for name in self.labels if counts[name]]
        return DocumentPrediction(doc_id, sentences, labels, scores, counts, skipped)

    def __repr__(self) -> str:
        return (f"EventClassifier(labels={self.labels}, precision={self.precision!r}, "
                f"device={str(self.device)!r}, max_length={self.max_length})")
