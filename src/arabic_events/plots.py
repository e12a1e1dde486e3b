"""PNG plots for evaluation reports: precision-recall curves, confusion matrices, co-occurrence.

Figures are drawn with matplotlib's object API (no pyplot state, no display needed) in DejaVu
Sans, the font matplotlib ships, which has Arabic glyphs; no system font is needed.

Arabic must come out joined and right to left. matplotlib 3.11 and later lay text out with
libraqm (HarfBuzz shaping + FriBiDi reordering) themselves; older versions draw code points one
by one, left to right. `rtl` therefore shapes with `arabic_reshaper` and reorders with
python-bidi's `get_display` only when matplotlib has no libraqm: doing it under libraqm reverses
the text a second time (checked by rendering both ways and looking at the PNG).
"""

from __future__ import annotations

import logging
from pathlib import Path

import arabic_reshaper
import matplotlib
import numpy as np
from bidi.algorithm import get_display
from matplotlib import ft2font
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

logger = logging.getLogger(__name__)

FONT = "DejaVu Sans"
"""Bundled with matplotlib (mpl-data/fonts/ttf), covers Arabic and its presentation forms."""

ARABIC_GLOSS: dict[str, str] = {
    "airstrike": "غارة جوية",
    "arrest": "اعتقال",
    "base_handover": "تسليم قاعدة",
    "statement": "تصريح رسمي",
    "political_pressure": "ضغط سياسي",
}
"""Arabic name of each label, shown beside the English one in plot titles."""

_STYLE = {"font.family": FONT, "font.size": 9, "axes.titlesize": 10}

NATIVE_BIDI = bool(getattr(ft2font, "__libraqm_version__", ""))
"""True when matplotlib shapes and reorders complex scripts itself (libraqm, matplotlib >= 3.11)."""


def rtl(text: str, native: bool = NATIVE_BIDI) -> str:
    """Arabic text as matplotlib must receive it to draw it joined and right to left.

    Args:
        text: Text in logical (typed) order.
        native: Whether the renderer shapes and reorders by itself; then `text` is returned
            unchanged, else it is shaped (`arabic_reshaper`) and reordered (`get_display`).

    Example:
        >>> [hex(ord(c)) for c in rtl("غارة", native=False)]  # joined forms, last letter first
        ['0xfe93', '0xfead', '0xfe8e', '0xfecf']
        >>> rtl("غارة", native=True)
        'غارة'
    """
    if native:
        return text
    return get_display(arabic_reshaper.reshape(text))


def label_title(label: str) -> str:
    """`airstrike · غارة جوية`, the Arabic part shaped for display."""
    gloss = ARABIC_GLOSS.get(label)
    return f"{label} · {rtl(gloss)}" if gloss else label


def _grid(n: int, cols: int = 3, size: float = 3.4) -> tuple[Figure, list]:
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(size * cols, size * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _point(probs: np.ndarray, gold: np.ndarray, threshold: float) -> tuple[float, float]:
    """(recall, precision) of `probs >= threshold`; precision 1 when nothing is predicted."""
    pred = probs >= threshold
    tp = float((pred & gold).sum())
    precision = tp / pred.sum() if pred.any() else 1.0
    recall = tp / gold.sum() if gold.any() else 0.0
    return recall, precision


def pr_curves(probs: np.ndarray, y_true: np.ndarray, thresholds: np.ndarray,
              labels: list[str], path: Path) -> Path:
    """Per-label precision-recall curves, marking the tuned threshold and 0.5.

    Args:
        probs: Scores, shape (n_sentences, n_labels).
        y_true: Multi-hot gold labels, same shape.
        thresholds: The tuned threshold of each label.
        labels: Label names, one per column.
        path: The PNG to write.

    Returns:
        `path`.
    """
    gold = np.asarray(y_true, dtype=bool)
    with matplotlib.rc_context(_STYLE):
        fig, axes = _grid(len(labels))
        for j, (ax, label) in enumerate(zip(axes, labels, strict=True)):
            ax.set_title(label_title(label))
            ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
            ax.grid(alpha=0.3)
            if not gold[:, j].any():
                ax.text(0.5, 0.5, "no gold positives", ha="center", va="center")
                continue
            precision, recall, _ = precision_recall_curve(gold[:, j], probs[:, j])
            ax.step(recall, precision, where="post", color="tab:blue")
            base = gold[:, j].mean()
            ax.axhline(base, color="grey", ls=":", lw=1, label=f"prevalence {base:.2f}")
            r, p = _point(probs[:, j], gold[:, j], 0.5)
            ax.plot([r], [p], marker="s", color="tab:orange", ms=6, ls="", label="0.5")
            r, p = _point(probs[:, j], gold[:, j], float(thresholds[j]))
            ax.plot([r], [p], marker="o", mfc="none", mec="tab:red", mew=2, ms=11, ls="",
                    label=f"tuned {thresholds[j]:.2f}")
            ax.legend(loc="lower left", fontsize=7)
        fig.suptitle(f"Precision-recall per label (n = {len(gold)})")
        fig.savefig(path, dpi=110)
    return path


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                       path: Path) -> Path:
    """One 2x2 confusion matrix per label (rows gold, columns predicted)."""
    gold = np.asarray(y_true, dtype=bool)
    pred = np.asarray(y_pred, dtype=bool)
    with matplotlib.rc_context(_STYLE):
        fig, axes = _grid(len(labels), size=3.0)
        for j, (ax, label) in enumerate(zip(axes, labels, strict=True)):
            cells = np.array([[(~gold[:, j] & ~pred[:, j]).sum(), (~gold[:, j] & pred[:, j]).sum()],
                              [(gold[:, j] & ~pred[:, j]).sum(), (gold[:, j] & pred[:, j]).sum()]])
            ax.imshow(cells, cmap="Blues", vmin=0, vmax=max(1, cells.max()))
            for (r, c), value in np.ndenumerate(cells):
                dark = value > cells.max() / 2
                ax.text(c, r, str(value), ha="center", va="center",
                        color="white" if dark else "black", fontsize=12)
            ax.set_xticks([0, 1], ["pred no", "pred yes"])
            ax.set_yticks([0, 1], ["gold no", "gold yes"])
            ax.set_title(label_title(label))
        fig.suptitle("Confusion matrices at the tuned thresholds")
        fig.savefig(path, dpi=110)
    return path


def cooccurrence(y_true: np.ndarray, labels: list[str], path: Path) -> Path:
    """Gold label co-occurrence counts (diagonal: sentences carrying the label)."""
    gold = np.asarray(y_true, dtype=np.int64)
    counts = gold.T @ gold
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.4, 5.6), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(counts, cmap="Purples")
        for (r, c), value in np.ndenumerate(counts):
            dark = value > counts.max() / 2
            ax.text(c, r, str(value), ha="center", va="center",
                    color="white" if dark else "black")
        names = [f"{label}\n{rtl(ARABIC_GLOSS.get(label, ''))}" for label in labels]
        ax.set_xticks(range(len(labels)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), names)
        ax.set_title(f"Gold label co-occurrence (n = {len(gold)} sentences)")
        fig.colorbar(image, ax=ax, shrink=0.8)
        fig.savefig(path, dpi=110)
    return path
