"""Evaluation harness: score a trained run (or a baseline) on a labelled file, and compare models.

`evaluate_run` writes into one output folder, all at once (a temporary folder renamed at the
end, so an error leaves the folder absent or as it was):

- `metrics.json`: macro/micro F1, subset accuracy and per-label precision/recall/F1/support at
  the run's tuned thresholds, the same under `at_0.5`, bootstrap confidence intervals, and
  metadata (run, data, n, thresholds);
- `report.md`: both threshold settings side by side, with intervals, plots and the most
  confident errors;
- `pr_curves.png`, `confusion_matrices.png`, `label_cooccurrence.png`;
- `errors.jsonl` and `errors.csv`: every false positive and false negative, per label.

Thresholds come from the run's `thresholds.json`, tuned on dev at the end of training.
Evaluation never tunes: the scores on any file, test included, use thresholds chosen elsewhere.
Every score goes through `metrics.MultiLabelF1`, the project's `evaluate` module.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from arabic_events import metrics, plots
from arabic_events.config import Config, load_config
from arabic_events.data import Fields, label_matrix, read_records
from arabic_events.labels import LABELS

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test", "seed_test")
"""Split names that `--data` accepts in place of a path: `data/splits/<name>.jsonl`."""
SPLITS_DIR = Path("data/splits")
HELD_OUT_SPLITS = ("test", "seed_test")
"""Split names that are never tuned on."""
HALF = 0.5
BOOTSTRAP_SEED = 13
"""Fixed seed of the bootstrap, so intervals are reproducible."""
CONFIDENCE = 0.95
TOP_ERRORS = 15
"""How many of the most confident errors the report lists."""


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated as given (data, run directory, output folder)."""


class Scorer(Protocol):
    """What the harness needs from a model: a fine-tuned run or a baseline."""

    name: str
    labels: list[str]
    thresholds: np.ndarray

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Scores in [0, 1], shape (len(texts), len(labels))."""
        ...


# --------------------------------------------------------------------------- data


def resolve_data(spec: str | Path, splits_dir: Path | None = None) -> Path:
    """A data file from a path, or from a split name (`test` -> `data/splits/test.jsonl`).

    Args:
        spec: A file path or a split name.
        splits_dir: Folder of the split files; None for `SPLITS_DIR` (`data/splits`).

    Raises:
        EvaluationError: Neither an existing file nor a split name, or the split file is absent.
    """
    path = Path(spec)
    if path.is_file():
        return path
    if str(spec) in SPLITS:
        split = (splits_dir or SPLITS_DIR) / f"{spec}.jsonl"
        if not split.is_file():
            raise EvaluationError(f"split {str(spec)!r} resolves to {split}, which does not "
                                  "exist; create the splits first or pass a file path.")
        return split
    raise EvaluationError(f"--data {str(spec)!r}: no such file, and not a split name "
                          f"({', '.join(SPLITS)}).")


def data_fields(cfg: Config) -> Fields:
    """The record field names of a config's `data` section."""
    d = cfg.data
    return Fields(text=d.text_field, labels=d.labels_field, id=d.id_field, doc=d.doc_field)


def _has_records(path: Path) -> bool:
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    header = 1 if path.suffix.lower() in (".csv", ".tsv") else 0
    return len(lines) > header


def read_eval_records(path: str | Path, labels: list[str], fields: Fields | None = None
                      ) -> list[dict[str, Any]]:
    """Read labelled records, failing clearly on labels the model does not know.

    Args:
        path: JSONL, CSV or TSV with text and labels (id and doc_id optional).
        labels: The labels the model predicts.
        fields: Field names; None for the defaults (`text`, `labels`, `id`, `doc_id`).

    Raises:
        EvaluationError: An empty file, or labels outside `labels` (each named with its lines).
        ValueError: Any other problem `data.read_records` finds (`DataError`, with the file and
            line).
    """
    path = Path(path)
    if path.is_file() and not _has_records(path):
        raise EvaluationError(f"{path}: the file holds no records; nothing to evaluate.")
    # read with every guideline label, so that all the model's unknown ones are found at once;
    # a name outside the guideline stops `read_records` at its first line
    known = list(labels) + [name for name in LABELS if name not in labels]
    records = read_records(path, fields or Fields(), known, require_ids=False)
    unknown: dict[str, list[int]] = {}
    for record in records:
        for name in record["labels"]:
            if name not in labels:
                unknown.setdefault(name, []).append(record["line"])
    if unknown:
        found = "; ".join(f"{name!r} on line(s) {', '.join(map(str, lines[:10]))}"
                          + (" ..." if len(lines) > 10 else "")
                          for name, lines in unknown.items())
        raise EvaluationError(
            f"{path}: label(s) the model does not know: {found}. The model predicts "
            f"{', '.join(labels)}; drop those labels from the data or evaluate a model "
            "trained with them.")
    return records


def check_tuning_file(path: str | Path, cfg: Config, splits_dir: Path | None = None) -> None:
    """Refuse to tune anything on a held-out file (an eval file, or a test split).

    Raises:
        EvaluationError: `path` is one of `data.eval_files`, or a test split by name.
    """
    resolved = Path(path).resolve()
    held_out = {Path(p).resolve(): f"data.eval_files.{name}"
                for name, p in cfg.data.eval_files.items()}
    held_out.update({((splits_dir or SPLITS_DIR) / f"{name}.jsonl").resolve(): f"split {name!r}"
                     for name in HELD_OUT_SPLITS})
    if resolved in held_out or resolved.stem in HELD_OUT_SPLITS:
        what = held_out.get(resolved, "a file named like a test split")
        raise EvaluationError(f"refusing to tune thresholds on {path}: it is {what}, a held-out "
                              "set. Tune on dev (data.dev_file) only.")


# --------------------------------------------------------------------------- models


class _NoAutocast:
    """What `training.predict_probs` needs of an Accelerator, without accelerate's shared state
    (a second Accelerator in one process inherits the first one's mixed precision)."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def autocast(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_preprocessing(run_dir: Path, cfg: Config) -> None:
    """`preprocessing.json` must exist and agree with the run config's model section.

    Raises:
        EvaluationError: The file is missing, or a setting differs (each one named).
    """
    from arabic_events.preprocess import FILE_NAME, Preprocessor

    if not (run_dir / FILE_NAME).is_file():
        raise EvaluationError(
            f"{run_dir / FILE_NAME} is missing, so the preprocessing the model was trained with "
            "is unknown; evaluate a complete run directory written by `arabic-events train`.")
    saved = _flat(Preprocessor.load(run_dir).to_dict())
    expected = _flat(Preprocessor.from_config(cfg.model).to_dict())
    differ = [f"{key}: preprocessing.json has {saved.get(key)!r}, the model section gives "
              f"{expected.get(key)!r}" for key in sorted(set(saved) | set(expected))
              if saved.get(key) != expected.get(key)]
    if differ:
        raise EvaluationError(
            f"{run_dir}: preprocessing.json and run_config.yaml (with overrides) disagree: "
            + "; ".join(differ) + ". Remove model.* overrides, or retrain.")


class RunModel:
    """A fine-tuned run directory as a `Scorer`, checked before its weights are loaded."""

    def __init__(self, run_dir: str | Path, overrides: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.name = self.run_dir.name
        config_file = self.run_dir / "run_config.yaml"
        if not config_file.is_file():
            raise EvaluationError(f"{self.run_dir} has no run_config.yaml: not a run directory "
                                  "written by `arabic-events train`.")
        self.cfg = load_config(config_file, overrides)
        check_preprocessing(self.run_dir, self.cfg)
        info = json.loads((self.run_dir / "config.json").read_text(encoding="utf-8"))
        self.labels = [info["id2label"][str(i)] for i in range(len(info["id2label"]))]
        self.thresholds = _read_thresholds(self.run_dir, self.labels)
        from arabic_events.modeling import load_trained, pick_device
        from arabic_events.preprocess import Preprocessor

        self.prep = Preprocessor.load(self.run_dir)
        self.tokenizer, self.model = load_trained(self.run_dir)
        self.device = pick_device(self.cfg.train.device)
        self.model.to(self.device)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Sigmoid scores in fp32, computed in length-sorted batches."""
        from transformers import DataCollatorWithPadding

        from arabic_events.training import Encoded, predict_probs

        records = [{"text": text, "labels": []} for text in texts]
        data = Encoded(records, self.tokenizer, self.prep, self.labels, self.cfg.model.max_length)
        collator = DataCollatorWithPadding(self.tokenizer)
        return predict_probs(self.model, data, collator, self.cfg.eval.batch_size,
                             _NoAutocast(self.device))


def _read_thresholds(run_dir: Path, labels: list[str]) -> np.ndarray:
    path = run_dir / "thresholds.json"
    if not path.is_file():
        raise EvaluationError(f"{path} is missing: the run has no dev-tuned thresholds; "
                              "evaluate a complete run directory.")
    values = json.loads(path.read_text(encoding="utf-8"))
    if sorted(values) != sorted(labels):
        raise EvaluationError(f"{path} has thresholds for {sorted(values)} but the model "
                              f"predicts {labels}; the run directory is inconsistent.")
    return np.array([float(values[name]) for name in labels])


def load_model(path: str | Path, overrides: list[str] | None = None) -> tuple[Scorer, Config]:
    """A run directory or a saved baseline folder, with the config to evaluate it under.

    A run uses its `run_config.yaml` plus `overrides`; a baseline uses the defaults plus
    `overrides`.
    """
    from arabic_events.baselines import is_baseline_dir, load_baseline

    path = Path(path)
    if not path.is_dir():
        raise EvaluationError(f"--run {str(path)!r}: no such directory.")
    if is_baseline_dir(path):
        return load_baseline(path), load_config(None, overrides)
    model = RunModel(path, overrides)
    return model, model.cfg


# --------------------------------------------------------------------------- scores


def scores_at(probs: np.ndarray, y_true: np.ndarray, thresholds: np.ndarray,
              labels: list[str]) -> dict[str, Any]:
    """Scores at the tuned thresholds (`tuned`) and at 0.5 (`at_0.5`)."""
    return {"tuned": metrics.compute(probs, y_true, thresholds, labels),
            "at_0.5": metrics.compute(probs, y_true, HALF, labels)}


def score_sets(model: Scorer, sets: dict[str, str], cfg: Config) -> dict[str, Any]:
    """Score `model` on named files: set -> {n, data, tuned, at_0.5}."""
    out = {}
    for name, path in sets.items():
        records = read_eval_records(path, model.labels, data_fields(cfg))
        probs = model.predict_proba([r["text"] for r in records])
        y = label_matrix(records, model.labels)
        out[name] = {"n": len(records), "data": str(path),
                     **scores_at(probs, y, model.thresholds, model.labels)}
    return out


def bootstrap_weights(n: int, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each sentence is drawn in each resample, shape (resamples, n).

    The same matrix scores every model on a dataset, so comparisons are paired.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Macro/micro F1, subset accuracy and per-label F1 of every resample.

    Scores follow `metrics.multilabel_scores` (F1 0 for a label without gold or predicted
    positives); a weight row of all ones reproduces it exactly.
    """
    t, p = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp, fp, fn = weights @ (t & p), weights @ (~t & p), weights @ (t & ~p)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    micro_den = denominator.sum(1)
    micro = np.divide(2 * tp.sum(1), micro_den, out=np.zeros_like(micro_den),
                      where=micro_den > 0)
    exact = (t == p).all(1).astype(float)
    subset = weights @ exact / np.maximum(weights.sum(1), 1)
    return {"macro_f1": f1.mean(1), "micro_f1": micro, "subset_accuracy": subset,
            "per_label_f1": f1}


def interval(samples: np.ndarray, level: float = CONFIDENCE) -> list[float]:
    """Percentile interval [low, high] of bootstrap samples."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return [float(low), float(high)]


def confidence_intervals(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray,
                         labels: list[str]) -> dict[str, Any]:
    """Bootstrap intervals of macro/micro F1, subset accuracy and each label's F1."""
    boot = bootstrap_scores(y_true, y_pred, weights)
    return {
        "macro_f1": interval(boot["macro_f1"]),
        "micro_f1": interval(boot["micro_f1"]),
        "subset_accuracy": interval(boot["subset_accuracy"]),
        "per_label": {name: {"f1": interval(boot["per_label_f1"][:, j])}
                      for j, name in enumerate(labels)},
    }


# --------------------------------------------------------------------------- errors


def find_errors(records: list[dict[str, Any]], probs: np.ndarray, thresholds: np.ndarray,
                labels: list[str]) -> list[dict[str, Any]]:
    """Every false positive and false negative, one row per sentence and label.

    `confidence` is the probability the model gave to its wrong decision (the score for a
    false positive, one minus the score for a false negative); rows are sorted by it, highest
    first.
    """
    predicted = np.asarray(probs) >= np.asarray(thresholds)
    rows = []
    for i, record in enumerate(records):
        gold = set(record["labels"])
        chosen = [name for j, name in enumerate(labels) if predicted[i, j]]
        for j, name in enumerate(labels):
            if predicted[i, j] == (name in gold):
                continue
            score = float(probs[i, j])
            kind = "false_positive" if predicted[i, j] else "false_negative"
            rows.append({
                "id": record["id"], "line": record["line"], "doc_id": record["doc_id"],
                "label": name, "error": kind, "score": round(score, 4),
                "threshold": round(float(thresholds[j]), 4),
                "confidence": round(score if predicted[i, j] else 1 - score, 4),
                "gold_labels": [lab for lab in labels if lab in gold],
                "predicted_labels": chosen,
                "scores": {lab: round(float(probs[i, k]), 4) for k, lab in enumerate(labels)},
                "text": record["text"],
            })
    rows.sort(key=lambda r: -r["confidence"])
    return rows


def write_errors(errors: list[dict[str, Any]], directory: Path) -> None:
    """`errors.jsonl` (UTF-8) and `errors.csv` (UTF-8 with BOM, so Excel reads the Arabic)."""
    with (directory / "errors.jsonl").open("w", encoding="utf-8") as handle:
        for row in errors:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    columns = ["id", "line", "doc_id", "label", "error", "score", "threshold", "confidence",
               "gold_labels", "predicted_labels", "scores", "text"]
    with (directory / "errors.csv").open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in errors:
            writer.writerow({**row, "gold_labels": ";".join(row["gold_labels"]),
                             "predicted_labels": ";".join(row["predicted_labels"]),
                             "scores": json.dumps(row["scores"], ensure_ascii=False)})


# --------------------------------------------------------------------------- output folders


def write_json(path: Path, payload: Any) -> None:
    """Pretty JSON, Arabic kept readable."""
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; rename it to `out` only if the block succeeds.

    Args:
        out: The final folder.
        overwrite: Replace `out` if it exists (it is kept until the new one is complete).

    Raises:
        EvaluationError: `out` exists and `overwrite` is false (checked before any work).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise EvaluationError(f"{out} exists already; choose another --out, delete it, or pass "
                              "--overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- evaluate


def _data_note(path: Path, cfg: Config, is_run: bool) -> str | None:
    """A warning when the data is the set the thresholds were tuned on, or the training set."""
    if not is_run:
        return None
    resolved = path.resolve()
    if resolved == Path(cfg.data.dev_file).resolve():
        return ("This is the run's dev set, on which the thresholds were tuned: scores at the "
                "tuned thresholds are optimistic.")
    if resolved == Path(cfg.data.train_file).resolve():
        return "This is the run's training set: every score here is optimistic."
    return None


def build_metrics(records: list[dict[str, Any]], probs: np.ndarray, model: Scorer,
                  cfg: Config) -> dict[str, Any]:
    """Scores at the tuned thresholds (top level) and at 0.5, with bootstrap intervals."""
    labels = model.labels
    y = label_matrix(records, labels)
    scores = scores_at(probs, y, model.thresholds, labels)
    result: dict[str, Any] = {**scores["tuned"], "at_0.5": scores["at_0.5"]}
    resamples = cfg.eval.bootstrap
    if resamples > 0:
        weights = bootstrap_weights(len(records), resamples)
        result["confidence_intervals"] = {
            "tuned": confidence_intervals(y, probs >= model.thresholds, weights, labels),
            "at_0.5": confidence_intervals(y, probs >= HALF, weights, labels),
        }
    result["bootstrap"] = {"resamples": resamples, "seed": BOOTSTRAP_SEED,
                           "level": CONFIDENCE, "unit": "sentence"}
    return result


def evaluate_run(run: str | Path, data: str | Path, out: str | Path,
                 overrides: list[str] | None = None, overwrite: bool = False) -> Path:
    """Score a run directory (or a saved baseline) on a labelled file; write the report folder.

    Args:
        run: A run directory written by `arabic-events train`, or a baseline folder.
        data: A JSONL/CSV/TSV path, or a split name (`dev`, `test`, ...).
        out: Output folder (written all at once; see the module docstring for its files).
        overrides: `key.sub=value` overrides applied to the run's config (`eval.bootstrap=200`,
            `data.text_field=sentence`, ...).
        overwrite: Replace an existing `out`.

    Returns:
        `out`.

    Raises:
        EvaluationError, DataError, ConfigError: Bad inputs, before anything is written.
    """
    with atomic_output_dir(out, overwrite) as tmp:
        model, cfg = load_model(run, overrides)
        path = resolve_data(data)
        records = read_eval_records(path, model.labels, data_fields(cfg))
        logger.info("evaluating %s on %s (%d sentences)", model.name, path, len(records))
        probs = model.predict_proba([r["text"] for r in records])
        errors = find_errors(records, probs, model.thresholds, model.labels)
        result = {
            "run": str(run), "model": model.name, "data": str(path), "n": len(records),
            "thresholds": {n: float(t) for n, t in zip(model.labels, model.thresholds,
                                                       strict=True)},
            "thresholds_source": ("the run's thresholds.json" if isinstance(model, RunModel)
                                  else "the baseline's saved thresholds")
                                 + ", tuned on dev when it was trained; evaluation tunes nothing",
            "note": _data_note(path, cfg, isinstance(model, RunModel)),
            "errors": {kind: sum(e["error"] == kind for e in errors)
                       for kind in ("false_positive", "false_negative")},
            "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **build_metrics(records, probs, model, cfg),
        }
        write_json(tmp / "metrics.json", result)
        write_errors(errors, tmp)
        figures = _draw(tmp, probs, records, model) if cfg.eval.plots else {}
        (tmp / "report.md").write_text(render_report(result, errors, figures, model.labels),
                                       encoding="utf-8")
    logger.info("evaluation written to %s", out)
    return Path(out)


def _draw(directory: Path, probs: np.ndarray, records: list[dict[str, Any]],
          model: Scorer) -> dict[str, str]:
    y = label_matrix(records, model.labels)
    plots.pr_curves(probs, y, model.thresholds, model.labels, directory / "pr_curves.png")
    plots.confusion_matrices(y, probs >= model.thresholds, model.labels,
                             directory / "confusion_matrices.png")
    plots.cooccurrence(y, model.labels, directory / "label_cooccurrence.png")
    return {"Precision-recall curves (circle: tuned threshold, square: 0.5)": "pr_curves.png",
            "Confusion matrices at the tuned thresholds": "confusion_matrices.png",
            "Gold label co-occurrence": "label_cooccurrence.png"}


# --------------------------------------------------------------------------- report


def _cell(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _overall_table(result: dict[str, Any]) -> list[str]:
    cis = result.get("confidence_intervals", {})
    lines = ["| metric | at 0.5 | tuned thresholds |", "|---|---|---|"]
    for key, title in (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"),
                       ("subset_accuracy", "subset accuracy")):
        half = _cell(result["at_0.5"][key], cis.get("at_0.5", {}).get(key))
        tuned = _cell(result[key], cis.get("tuned", {}).get(key))
        lines.append(f"| {title} | {half} | {tuned} |")
    return lines


def _label_table(result: dict[str, Any], labels: list[str]) -> list[str]:
    cis = result.get("confidence_intervals", {})
    lines = ["| label | support | P @0.5 | R @0.5 | F1 @0.5 | threshold | P tuned | R tuned "
             "| F1 tuned |", "|---" * 9 + "|"]
    for name in labels:
        half, tuned = result["at_0.5"]["per_label"][name], result["per_label"][name]
        ci_half = cis.get("at_0.5", {}).get("per_label", {}).get(name, {}).get("f1")
        ci_tuned = cis.get("tuned", {}).get("per_label", {}).get(name, {}).get("f1")
        lines.append(
            f"| {name} | {tuned['support']} | {half['precision']:.3f} | {half['recall']:.3f} "
            f"| {_cell(half['f1'], ci_half)} | {result['thresholds'][name]:.2f} "
            f"| {tuned['precision']:.3f} | {tuned['recall']:.3f} "
            f"| {_cell(tuned['f1'], ci_tuned)} |")
    return lines


def _errors_table(errors: list[dict[str, Any]]) -> list[str]:
    if not errors:
        return ["No errors at the tuned thresholds."]
    lines = ["| # | id | label | error | score | gold | predicted | text |",
             "|---" * 8 + "|"]
    for rank, e in enumerate(errors[:TOP_ERRORS], 1):
        kind = "FP" if e["error"] == "false_positive" else "FN"
        lines.append(f"| {rank} | {_md(e['id'])} | {e['label']} | {kind} | {e['score']:.3f} "
                     f"| {', '.join(e['gold_labels']) or '-'} "
                     f"| {', '.join(e['predicted_labels']) or '-'} | {_md(e['text'])} |")
    return lines


def render_report(result: dict[str, Any], errors: list[dict[str, Any]],
                  figures: dict[str, str], labels: list[str]) -> str:
    """The researcher-readable `report.md` of one evaluation."""
    boot = result["bootstrap"]
    ci_text = (f"95% confidence intervals in brackets: percentile bootstrap over sentences, "
               f"{boot['resamples']} resamples, seed {boot['seed']}." if boot["resamples"] > 0
               else "No confidence intervals (eval.bootstrap=0).")
    lines = [
        f"# Evaluation of `{result['model']}` on `{result['data']}`", "",
        f"- Model: `{result['run']}`",
        f"- Data: `{result['data']}`, {result['n']} sentences",
        f"- Thresholds: {result['thresholds_source']}.",
        f"- {ci_text}",
        f"- Evaluated {result['evaluated_at']}.",
    ]
    if result.get("note"):
        lines += ["", f"> **Note.** {result['note']}"]
    lines += ["", "## Overall", "", *_overall_table(result), "",
              "## Per label", "", *_label_table(result, labels), ""]
    if figures:
        lines += ["## Plots", ""]
        for title, file in figures.items():
            lines += [f"### {title}", "", f"![{title}]({file})", ""]
    counts = result["errors"]
    lines += [
        "## Most confident errors", "",
        f"{counts['false_positive']} false positives and {counts['false_negative']} false "
        f"negatives at the tuned thresholds; the {min(TOP_ERRORS, len(errors))} the model was "
        "surest of are below (score: the label's probability). All of them are in "
        "`errors.jsonl` and `errors.csv`.", "",
        *_errors_table(errors), "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- compare


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def compare_rows(models: list[Scorer], names: list[str], records: list[dict[str, Any]],
                 dataset: str, resamples: int) -> list[dict[str, Any]]:
    """One row per model on one dataset: macro-F1 with its interval, the paired difference
    from the first model with its interval, micro-F1 and per-label F1 (tuned thresholds)."""
    labels = models[0].labels
    y = label_matrix(records, labels)
    texts = [r["text"] for r in records]
    weights = bootstrap_weights(len(records), max(resamples, 1))
    rows, reference = [], None
    for model, model_name in zip(models, names, strict=True):
        pred = model.predict_proba(texts) >= model.thresholds
        scores = metrics.MultiLabelF1().compute(predictions=pred.astype(np.int8).tolist(),
                                                references=y.astype(np.int8).tolist(),
                                                label_names=labels)
        boot = bootstrap_scores(y, pred, weights)["macro_f1"]
        reference = boot if reference is None else reference
        low, high = interval(boot)
        d_low, d_high = interval(boot - reference)
        rows.append({
            "data": dataset, "model": model_name, "n": len(records),
            "macro_f1": scores["macro_f1"], "macro_f1_low": low, "macro_f1_high": high,
            "delta_vs_first": scores["macro_f1"] - rows[0]["macro_f1"] if rows else 0.0,
            "delta_low": d_low, "delta_high": d_high,
            "micro_f1": scores["micro_f1"],
            **{f"f1_{name}": scores["per_label"][name]["f1"] for name in labels},
        })
    return rows


def compare(models: list[Scorer], data: list[str | Path], out: str | Path, cfg: Config,
            overwrite: bool = False) -> Path:
    """Score several models on several datasets with paired bootstrap intervals.

    Every model on a dataset is scored on the same resamples (fixed seed), so the interval of
    the difference from the first model is paired.

    Args:
        models: Runs and baselines, each with its own dev-tuned thresholds; same labels.
        data: Paths or split names.
        out: Output folder for `compare.md`, `compare.csv` and `compare.json`.
        cfg: Supplies `eval.bootstrap` and the data field names.
        overwrite: Replace an existing `out`.

    Returns:
        `out`.
    """
    if not models:
        raise EvaluationError("compare: give at least one --run or --baselines.")
    labels = models[0].labels
    for model in models[1:]:
        if model.labels != labels:
            raise EvaluationError(f"compare: {model.name} predicts {model.labels} but "
                                  f"{models[0].name} predicts {labels}; compare like with like.")
    model_names = _unique_names([m.name for m in models])
    with atomic_output_dir(out, overwrite) as tmp:
        paths = [resolve_data(spec) for spec in data]
        names = _unique_names([str(s) if str(s) in SPLITS else Path(s).stem for s in data])
        rows = []
        for name, path in zip(names, paths, strict=True):
            records = read_eval_records(path, labels, data_fields(cfg))
            logger.info("compare: %s (%d sentences), %d model(s)", name, len(records),
                        len(models))
            rows += compare_rows(models, model_names, records, name, cfg.eval.bootstrap)
        meta = {"data": {n: str(p) for n, p in zip(names, paths, strict=True)},
                "models": model_names, "labels": labels,
                "bootstrap": {"resamples": cfg.eval.bootstrap, "seed": BOOTSTRAP_SEED,
                              "level": CONFIDENCE, "paired": True},
                "thresholds": "each model's own, tuned on dev"}
        write_json(tmp / "compare.json", {"meta": meta, "rows": rows})
        with (tmp / "compare.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (tmp / "compare.md").write_text(_compare_markdown(rows, labels, meta), encoding="utf-8")
    return Path(out)


def _compare_markdown(rows: list[dict[str, Any]], labels: list[str], meta: dict[str, Any]
                      ) -> str:
    boot = meta["bootstrap"]
    lines = ["# Model comparison", "",
             f"Macro-F1 at each model's dev-tuned thresholds, with a {boot['level']:.0%} "
             f"percentile bootstrap interval over sentences ({boot['resamples']} paired "
             f"resamples, seed {boot['seed']}); Δ is the difference from the first model on "
             "the same resamples.", "",
             "| data | model | n | macro-F1 [95% CI] | Δ vs first [95% CI] | micro-F1 | "
             + " | ".join(labels) + " |", "|---" * (6 + len(labels)) + "|"]
    for r in rows:
        per = " | ".join(f"{r[f'f1_{name}']:.3f}" for name in labels)
        lines.append(
            f"| {r['data']} | {r['model']} | {r['n']} | {r['macro_f1']:.3f} "
            f"[{r['macro_f1_low']:.3f}, {r['macro_f1_high']:.3f}] | {r['delta_vs_first']:+.3f} "
            f"[{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] | {r['micro_f1']:.3f} | {per} |")
    return "\n".join(lines) + "\n"


def compare_from_paths(runs: list[str | Path], data: list[str | Path], out: str | Path,
                       baselines: str | None = None, overrides: list[str] | None = None,
                       overwrite: bool = False) -> Path:
    """`arabic-events compare`: load runs (and baselines), then `compare`.

    Args:
        runs: Run directories (or saved baseline folders).
        data: Paths or split names.
        out: Output folder.
        baselines: None for no baselines; a folder written by `arabic-events baselines` to load
            them from; "" to fit both on the first run's train/dev files (tuned on dev).
        overrides: Applied to each run's config (and to the defaults for baselines).
        overwrite: Replace an existing `out`.
    """
    loaded = [load_model(path, overrides) for path in runs]
    models: list[Scorer] = [model for model, _ in loaded]
    cfg = loaded[0][1] if loaded else load_config(None, overrides)
    if baselines:
        from arabic_events.baselines import BASELINES, load_baseline

        models += [load_baseline(Path(baselines) / name) for name in BASELINES]
    elif baselines is not None:
        if not loaded:
            raise EvaluationError("compare --baselines without a folder fits them on the first "
                                  "run's train/dev files; give a --run, or --baselines DIR.")
        from arabic_events.baselines import fit_baselines

        models += list(fit_baselines(cfg).values())
    return compare(models, data, out, cfg, overwrite)
