"""Seed variance: train one run per seed and summarise every metric as mean and spread.

`train_seeds(cfg, [13, 42, 77])` trains `<run_name>-seed13`, `-seed42`, `-seed77` under
`train.output_dir` and writes `<output_dir>/<run_name>-seeds.json` and `.md`: for every number
in the runs' `metrics.json` (each set's macro/micro F1, subset accuracy and per-label
precision/recall/F1, at the tuned thresholds and at 0.5) the mean, the sample standard
deviation (n - 1; 0 for a single seed), the minimum, the maximum and the value of each seed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from arabic_events.config import Config, ConfigError

logger = logging.getLogger(__name__)


def parse_seeds(text: str) -> list[int]:
    """`"13,42,77"` -> `[13, 42, 77]`; repeats and non-integers are errors."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers separated by commas, "
                          "e.g. --seeds 13,42,77.") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give one or more different seeds.")
    return seeds


def seed_run_name(run_name: str, seed: int) -> str:
    """The run name of one seed: `<run_name>-seed<seed>`."""
    return f"{run_name}-seed{seed}"


def flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The numbers of a run's `metrics.json` as `set.variant.metric` keys.

    Keeps scores (not supports, which do not vary, nor the training log); e.g.
    `test.tuned.macro_f1`, `dev.at_0.5.per_label.arrest.f1`.
    """
    flat: dict[str, float] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for sub, inner in value.items():
                walk(inner, f"{key}.{sub}" if key else sub)
        elif isinstance(value, float) and not key.endswith(".support"):
            flat[key] = value

    walk({k: v for k, v in results.items() if k != "training"}, "")
    return flat


def summarize(runs: dict[int, Path]) -> dict[str, Any]:
    """Mean, sample standard deviation, min, max and per-seed values of every metric."""
    per_seed = {seed: flatten_metrics(json.loads((run / "metrics.json").read_text("utf-8")))
                for seed, run in runs.items()}
    keys = list(next(iter(per_seed.values())))
    summary = {}
    for key in keys:
        values = np.array([per_seed[seed][key] for seed in runs])
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max()),
            "values": {str(seed): float(v) for seed, v in zip(runs, values, strict=True)},
        }
    return {"seeds": list(runs), "runs": {str(s): str(p) for s, p in runs.items()},
            "std": "sample standard deviation (n - 1)", "metrics": summary}


def _markdown(name: str, summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [f"# {name}: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             "Mean ± sample standard deviation over seeds; thresholds tuned on dev in each run.",
             "", "| metric | mean ± std | min | max | " + " | ".join(f"seed {s}" for s in seeds)
             + " |", "|---" * (4 + len(seeds)) + "|"]
    for key, row in summary["metrics"].items():
        values = " | ".join(f"{row['values'][str(s)]:.3f}" for s in seeds)
        lines.append(f"| {key} | {row['mean']:.3f} ± {row['std']:.3f} | {row['min']:.3f} "
                     f"| {row['max']:.3f} | {values} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def train_seeds(cfg: Config, seeds: list[int], resume: bool = False) -> Path:
    """Train one run per seed, then write the seed summary (JSON and Markdown).

    Args:
        cfg: A validated config; `train.seed` and `train.run_name` are set per seed.
        seeds: The seeds.
        resume: Keep seed runs that are already complete and resume interrupted ones, so a
            crashed sweep continues where it stopped; without it an existing run is an error.

    Returns:
        The summary `<output_dir>/<run_name>-seeds.json`.
    """
    from arabic_events.training import run

    output_dir = Path(cfg.train.output_dir)
    runs: dict[int, Path] = {}
    for seed in seeds:
        seeded = copy.deepcopy(cfg)
        seeded.train.seed = seed
        seeded.train.run_name = seed_run_name(cfg.train.run_name, seed)
        final = output_dir / seeded.train.run_name
        partial = output_dir / f".{seeded.train.run_name}.partial"
        if resume and (final / "metrics.json").is_file():
            logger.info("seed %d: %s is complete, kept", seed, final)
            runs[seed] = final
            continue
        logger.info("seed %d: training %s", seed, final)
        runs[seed] = run(seeded, resume=resume and partial.is_dir())
    summary_json = output_dir / f"{cfg.train.run_name}-seeds.json"
    # under `accelerate launch` one process writes; RANK, not accelerate's PartialState, whose
    # shared state would outlive training.run's reset and clash with a later run's precision
    if int(os.environ.get("RANK", "0")) == 0:
        summary = summarize(runs)
        _write(summary_json, json.dumps(summary, indent=2) + "\n")
        _write(summary_json.with_suffix(".md"), _markdown(cfg.train.run_name, summary))
        logger.info("seed summary written to %s and .md", summary_json)
    return summary_json
