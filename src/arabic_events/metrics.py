"""Multi-label metrics as an `evaluate` module defined here (no Hub look-up), plus thresholds.

`evaluate.load("f1")` fetches a script from the Hugging Face Hub; this module is the same kind
of object (`evaluate.Metric`) built locally, so it works offline and in distributed evaluation.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Per-label precision, recall, F1 and support for multi-label classification,
with macro and micro F1 and subset accuracy (exact match of the whole label set)."""

_INPUTS = """
Args:
    predictions: multi-hot lists of 0/1, one list per example.
    references: multi-hot lists of 0/1, same shape.
    label_names: optional names, one per column; default `label_0`, `label_1`, ...
Returns:
    dict with `macro_f1`, `micro_f1`, `subset_accuracy`, `per_label`.
"""


class MultiLabelF1(evaluate.Metric):
    """Multi-label precision/recall/F1 as an `evaluate.Metric`.

    Example:
        >>> metric = MultiLabelF1()
        >>> out = metric.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]],
        ...                      label_names=["airstrike", "arrest"])
        >>> round(out["macro_f1"], 3), out["per_label"]["airstrike"]["precision"]
        (0.833, 0.5)
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int8")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None):  # type: ignore[override]
        return multilabel_scores(np.asarray(references), np.asarray(predictions), label_names)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)


def multilabel_scores(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str] | None = None
) -> dict:
    """Scores for multi-hot arrays of shape (n_examples, n_labels).

    A label with no gold and no predicted positive scores F1 0 (scikit-learn's
    `zero_division=0`), so macro-F1 is never flattered by absent labels.
    """
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"predictions {y_pred.shape} and references {y_true.shape} differ")
    names = label_names or [f"label_{i}" for i in range(y_true.shape[1])]
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = _f1(tp, fp, fn)
    micro = _f1(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))[0]
    return {
        "macro_f1": float(f1.mean()),
        "micro_f1": float(micro),
        "subset_accuracy": float((y_true == y_pred).all(1).mean()) if len(y_true) else 0.0,
        "per_label": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(y_true[:, i].sum()),
            }
            for i, name in enumerate(names)
        },
    }


def compute(
    probs: np.ndarray, y_true: np.ndarray, thresholds: np.ndarray | float, label_names: list[str]
) -> dict:
    """Apply thresholds to probabilities and score through the `evaluate` module."""
    y_pred = (np.asarray(probs) >= np.asarray(thresholds)).astype(np.int8)
    return MultiLabelF1().compute(
        predictions=y_pred.tolist(),
        references=np.asarray(y_true, dtype=np.int8).tolist(),
        label_names=label_names,
    )


def tune_thresholds(
    probs: np.ndarray,
    y_true: np.ndarray,
    grid: int = 99,
    default: float = 0.5,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Per-label thresholds that maximise F1 on the data given (use dev only, never test).

    Among candidates whose F1 is within `tolerance` of the best, the one nearest `default` wins:
    on a dev set the model nearly separates, F1 is flat over a wide range, and the extreme end
    of that range transfers worst to new text. A label without positives keeps `default`.
    """
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true, dtype=bool)
    candidates = np.linspace(0.01, 0.99, grid)
    order = np.argsort(np.abs(candidates - default), kind="stable")
    best = np.full(probs.shape[1], default)
    for j in range(probs.shape[1]):
        if not y_true[:, j].any():
            continue
        pred = probs[:, j][None, :] >= candidates[:, None]  # (grid, n)
        tp = (pred & y_true[:, j]).sum(1)
        fp = (pred & ~y_true[:, j]).sum(1)
        fn = (~pred & y_true[:, j]).sum(1)
        f1 = _f1(tp.astype(float), fp.astype(float), fn.astype(float))
        good = f1[order] >= f1.max() - tolerance - 1e-12
        best[j] = candidates[order[np.argmax(good)]]
    return best
