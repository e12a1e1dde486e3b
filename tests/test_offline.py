"""The real offline path: the rebuilt multilingual encoder fine-tuned for a few steps (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from arabic_events.config import load_config
from arabic_events.training import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_finetune_of_the_offline_encoder(tmp_path: Path):
    cfg = load_config(
        ROOT / "configs/offline/e5-small.yaml",
        [
            f"data.train_file={ROOT / 'data/splits/train.jsonl'}",
            f"data.dev_file={ROOT / 'data/splits/dev.jsonl'}",
            "data.eval_files={seed_test: " + str(ROOT / "data/splits/seed_test.jsonl") + "}",
            "data.max_train_samples=192",
            "train.max_steps=12",
            "train.eval_every=6",
            "train.early_stopping_patience=0",
            f"train.output_dir={tmp_path}",
            "train.run_name=e5",
        ],
    )
    out = run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 12
    assert {"dev", "seed_test"} <= set(metrics)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 250037 and config["hidden_size"] == 384
    clf = transformers.pipeline("text-classification", model=str(out), top_k=None)
    scores = clf("شنت طائرات التحالف غارات جوية على مواقع التنظيم قرب الحويجة")[0]
    assert len(scores) == 5
    # the word-embedding matrix was frozen: identical to the rebuilt encoder's
    from safetensors import safe_open

    from arabic_events.encoders import fetch_encoder

    with (
        safe_open(out / "model.safetensors", "pt") as tuned,
        safe_open(Path(fetch_encoder()) / "model.safetensors", "pt") as base,
    ):
        assert tuned.get_tensor("bert.embeddings.word_embeddings.weight").equal(
            base.get_tensor("embeddings.word_embeddings.weight")
        )
