"""The model card (`README.md`) written into every run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_events.config import Config
from arabic_events.labels import ONTOLOGY


def _table(results: dict[str, Any], labels: list[str]) -> list[str]:
    sets = [name for name in results if name != "training"]
    lines = [
        "| set | macro-F1 | micro-F1 | " + " | ".join(labels) + " |",
        "|---" * (3 + len(labels)) + "|",
    ]
    for name in sets:
        scores = results[name]["tuned"]
        per = " | ".join(f"{scores['per_label'][lab]['f1']:.3f}" for lab in labels)
        lines.append(f"| {name} | {scores['macro_f1']:.3f} | {scores['micro_f1']:.3f} | {per} |")
    return lines


def write_model_card(
    run_dir: Path,
    cfg: Config,
    results: dict[str, Any],
    thresholds: dict[str, float],
    name: str | None = None,
) -> None:
    """Write `README.md`: data, config, metrics, intended use and limits."""
    labels = list(cfg.data.labels)
    training = results.get("training", {})
    lines = [
        "---",
        "language: ar",
        "pipeline_tag: text-classification",
        "tags: [arabic, event-extraction, multi-label, arabic-events]",
        "---",
        f"# arabic-events: {cfg.train.run_name}",
        "",
        "Sentence-level event typing for Arabic news: each sentence gets zero or more of "
        + ", ".join(f"`{lab}`" for lab in labels)
        + ".",
        "",
        "## Model",
        f"- Encoder: `{cfg.model.name_or_path}`, fine-tuned for multi-label classification "
        "(sigmoid + binary cross-entropy).",
        f"- Preprocessing: `{cfg.model.preprocessing}` (saved in `preprocessing.json`; "
        "`EventClassifier` applies it; plain `transformers.pipeline` does not).",
        f"- Max length {cfg.model.max_length} tokens; precision {training.get('precision')}; "
        f"{training.get('steps')} steps, best dev macro-F1 at step {training.get('best_step')}.",
        "",
        "## Data",
        f"- Train: `{cfg.data.train_file}` ({training.get('train_sentences')} sentences); dev: "
        f"`{cfg.data.dev_file}` ({training.get('dev_sentences')} sentences).",
        "- Labels follow the project's annotation guideline (`data/GUIDELINE.md`).",
        "",
        "## Metrics (thresholds tuned on dev only)",
        *_table(results, labels),
        "",
        "Thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()),
        "",
        "## Use",
        "```python",
        "from arabic_events import EventClassifier",
        f'clf = EventClassifier.from_pretrained("{cfg.train.output_dir}/{name or run_dir.name}")',
        'clf.predict("نفذت طائرات التحالف غارات جوية على مواقع التنظيم غرب الموصل.")',
        "```",
        'Or `transformers.pipeline("text-classification", model=DIR, top_k=None)` on text '
        "preprocessed the same way.",
        "",
        "On CPUs, `precision=\"int8\"` (`EventClassifier.from_pretrained(..., precision=...)` or "
        "`arabic-events predict ... precision=int8`) reads `int8_calibration.json`, the "
        "feed-forward ranges measured on the dev sentences.",
        "",
        "Ontology codes per label (approximate): "
        + "; ".join(f"{k}: CAMEO {v['cameo']}" for k, v in ONTOLOGY.items() if k in labels)
        + ".",
        "",
        "## Intended use and limits",
        "- For coding Arabic news at the sentence level (conflict-event research, OSINT triage), "
        "with a human reviewing what feeds any decision.",
        "- Trained mostly on sentences written for the project in the style of news, so real "
        "news scores lower than the authored test split; see the held-out real-news figures "
        "in the project's reports.",
        "- Judges each sentence alone (no document context); realis only, as the guideline says.",
        "- Modern Standard Arabic news; dialect, social media and other domains are untested.",
    ]
    (run_dir / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
