"""Shared fixtures: small Arabic data files and a tiny trained run directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_overrides(tmp: Path, run_name: str = "tiny", **extra: str) -> list[str]:
    """Overrides that train configs/debug/tiny-bert.yaml into `tmp`."""
    values = {
        "data.train_file": str(FIXTURES / "train.jsonl"),
        "data.dev_file": str(FIXTURES / "dev.jsonl"),
        "data.eval_files": "{test: " + str(FIXTURES / "test.jsonl") + "}",
        "train.output_dir": str(tmp),
        "train.run_name": run_name,
        "train.log_every": "0",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT trained for a few steps on the fixture (seconds)."""
    from arabic_events.config import load_config
    from arabic_events.training import run

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(ROOT / "configs/debug/tiny-bert.yaml", tiny_overrides(out))
    return run(cfg)
