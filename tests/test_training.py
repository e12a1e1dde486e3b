"""Training end to end on a tiny BERT: run directory, pipeline interop, resume, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers
import yaml
from conftest import ROOT, tiny_overrides

from arabic_events.config import load_config
from arabic_events.modeling import ModelLoadError, build_tokenizer_and_model, pick_device
from arabic_events.training import RunDirError, run

DEBUG = ROOT / "configs/debug/tiny-bert.yaml"
RUN_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "run_config.yaml",
    "metrics.json",
    "preprocessing.json",
    "thresholds.json",
    "int8_calibration.json",
    "README.md",
}


def test_run_directory_is_complete_and_self_describing(tiny_run: Path):
    assert {p.name for p in tiny_run.iterdir()} >= RUN_FILES
    assert not list(tiny_run.glob("*.bin")) and not (tiny_run / "checkpoints").exists()
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {
        "0": "airstrike",
        "1": "arrest",
        "2": "base_handover",
        "3": "statement",
        "4": "political_pressure",
    }
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"dev", "test", "training"} <= set(metrics)
    assert set(metrics["dev"]["tuned"]["per_label"]) == set(config["label2id"])
    thresholds = json.loads((tiny_run / "thresholds.json").read_text())
    assert set(thresholds) == set(config["label2id"]) and all(
        0 < v < 1 for v in thresholds.values()
    )
    calibration = json.loads((tiny_run / "int8_calibration.json").read_text())
    assert calibration["source"].startswith("dev: ") and calibration["sentences"] > 0
    assert len(calibration["feed_forward"]) == config["num_hidden_layers"]
    card = (tiny_run / "README.md").read_text()
    for heading in ("## Data", "## Metrics", "## Intended use and limits"):
        assert heading in card
    assert "int8_calibration.json" in card
    assert not (tiny_run.parent / ".tiny.partial").exists()
    saved = json.loads((tiny_run / "tokenizer_config.json").read_text())
    run_config = yaml.safe_load((tiny_run / "run_config.yaml").read_text())
    assert saved["model_max_length"] == run_config["model"]["max_length"]


def test_run_directory_loads_in_plain_transformers_pipeline(tiny_run: Path):
    clf = transformers.pipeline("text-classification", model=str(tiny_run), top_k=None)
    out = clf(["شنت مقاتلات التحالف غارات جوية على مواقع التنظيم.", "ارتفعت أسعار النفط."])
    assert len(out) == 2
    for scores in out:
        assert {s["label"] for s in scores} == {
            "airstrike",
            "arrest",
            "base_handover",
            "statement",
            "political_pressure",
        }
        assert all(0.0 <= s["score"] <= 1.0 for s in scores)
        # multi-label: independent sigmoids, so scores need not sum to one
        assert abs(sum(s["score"] for s in scores) - 1.0) > 1e-3


def test_same_config_and_seed_give_same_metrics(tmp_path: Path, tiny_run: Path):
    cfg = load_config(DEBUG, tiny_overrides(tmp_path, "again"))
    again = json.loads((run(cfg) / "metrics.json").read_text())
    first = json.loads((tiny_run / "metrics.json").read_text())
    assert again["dev"] == first["dev"] and again["test"] == first["test"]


def test_existing_run_directory_is_not_overwritten(tiny_run: Path):
    cfg = load_config(DEBUG, tiny_overrides(tiny_run.parent, tiny_run.name))
    with pytest.raises(RunDirError, match="holds a trained model already"):
        run(cfg)


def test_a_model_card_without_weights_is_replaced(tmp_path: Path):
    card = tmp_path / "carded"
    card.mkdir(parents=True)
    (card / "README.md").write_text("an old model card kept in git", encoding="utf-8")
    out = run(load_config(DEBUG, tiny_overrides(tmp_path, "carded", **{"train.max_steps": "2"})))
    assert (out / "model.safetensors").is_file()
    assert "an old model card" not in (out / "README.md").read_text()


KILLER = """
import os, signal, sys
import arabic_events.training as T
original = T.save_checkpoint
def save_then_die(*args, **kwargs):
    path = original(*args, **kwargs)
    if args[1] >= int(os.environ["DIE_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return path
T.save_checkpoint = save_then_die
from arabic_events.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(args: list[str], env: dict | None = None, code: str | None = None):
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "arabic_events.cli"]
    return subprocess.run(
        command + args,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_kill_and_resume_reaches_the_same_metrics(tmp_path: Path):
    args = ["train", "--config", str(DEBUG)]
    extra = {"train.save_every": "3", "train.eval_every": "6"}
    straight = _cli(args + tiny_overrides(tmp_path / "a", "r", **extra))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _cli(args + tiny_overrides(tmp_path / "b", "r", **extra), {"DIE_AT_STEP": "9"}, KILLER)
    assert killed.returncode == -9
    partial = tmp_path / "b" / ".r.partial"
    assert partial.is_dir() and not (tmp_path / "b" / "r").exists()
    assert not (partial / "metrics.json").exists()  # nothing that looks complete
    refused = _cli(args + tiny_overrides(tmp_path / "b", "r", **extra))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = _cli([*args, "--resume", *tiny_overrides(tmp_path / "b", "r", **extra)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step-00000009" in resumed.stderr
    a = json.loads((tmp_path / "a/r/metrics.json").read_text())
    b = json.loads((tmp_path / "b/r/metrics.json").read_text())
    assert a["dev"] == b["dev"] and a["test"] == b["test"]
    assert a["training"]["history"] == b["training"]["history"]


def test_two_process_accelerate_launch_on_cpu(tmp_path: Path):
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "train/train.py",
        "--config",
        str(DEBUG),
        "train.device=cpu",
        *tiny_overrides(tmp_path, "ddp"),
    ]
    done = subprocess.run(
        launch,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    training = json.loads((tmp_path / "ddp/metrics.json").read_text())["training"]
    assert training["processes"] == 2
    # 24 sentences, batch 4, two processes: 3 optimiser steps per epoch, 3 epochs
    assert training["steps"] == 9


def test_hub_unreachable_message_names_the_key_and_the_fixes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(None, ["model.name_or_path=aubmindlab/bert-base-arabertv02"])
    with pytest.raises(ModelLoadError) as err:
        build_tokenizer_and_model(cfg.model, list(cfg.data.labels))
    message = str(err.value)
    assert "model.name_or_path='aubmindlab/bert-base-arabertv02'" in message
    assert "configs/offline/e5-small.yaml" in message and "local" in message


def test_gpu_asked_for_but_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="no CUDA GPU is visible"):
        pick_device("cuda")


def test_cli_reports_errors_without_traceback(tmp_path: Path):
    done = _cli(["train", "--config", str(DEBUG), "train.epoch=1"])
    assert done.returncode == 2
    assert "Did you mean 'epochs'" in done.stderr and "Traceback" not in done.stderr


def test_pos_weight_and_bf16_training_run(tmp_path: Path):
    cfg = load_config(
        DEBUG,
        tiny_overrides(
            tmp_path,
            "bf16",
            **{
                "train.precision": "bf16",
                "train.pos_weight": "auto",
                "train.max_steps": "4",
                "train.grad_accum": "2",
            },
        ),
    )
    out = run(cfg)
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert training["precision"] == "bf16" and training["steps"] == 4
    probs = json.loads((out / "metrics.json").read_text())["dev"]["tuned"]["macro_f1"]
    assert np.isfinite(probs)
