"""EventClassifier: loading a run directory, sentences, documents, thresholds, precisions."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from arabic_events.cpu_kernels import onednn_available
from arabic_events.inference import (
    CALIBRATION_FILE,
    CPU_BATCH_TOKENS,
    EventClassifier,
    calibrate_int8,
    resolve_precision,
)
from arabic_events.labels import LABELS
from arabic_events.preprocess import Preprocessor
from arabic_events.sentences import arabic_ratio

FIXTURES = Path(__file__).parent / "fixtures"
SENTENCES = [
    json.loads(line)["text"]
    for name in ("train", "dev", "test")
    for line in (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
]
ARTICLE = (
    "التحالف الدولي يسلم قاعدة K1 للقوات العراقية\n"
    "وأعلنت قيادة العمليات المشتركة أنه جرى تسليم الموقع. وقال المتحدث إن القوات اعتقلت 3 مسلحين."
)


@pytest.fixture(scope="module")
def clf(tiny_run: Path) -> EventClassifier:
    return EventClassifier.from_pretrained(tiny_run, precision="fp32", batch_size=8)


def _copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_predict_single_and_list(clf: EventClassifier) -> None:
    one = clf.predict(SENTENCES[0])
    many = clf.predict(SENTENCES[:5])
    assert isinstance(many, list) and len(many) == 5
    assert [p.text for p in many] == SENTENCES[:5]
    assert one.labels == many[0].labels
    assert one.scores == pytest.approx(many[0].scores, abs=1e-6)
    assert list(one.scores) == list(LABELS)
    assert all(0.0 <= v <= 1.0 for v in one.scores.values())
    assert set(one.labels) <= set(LABELS)
    assert clf.predict([]) == []


def test_thresholds_from_the_run_are_applied(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy_run(tiny_run, tmp_path)
    base = EventClassifier.from_pretrained(run, precision="fp32")
    probs = base.predict_scores(SENTENCES)
    cut = {name: float(np.median(probs[:, j])) for j, name in enumerate(LABELS)}
    cut["arrest"] = 0.0  # always on
    cut["statement"] = 1.0  # never on
    (run / "thresholds.json").write_text(json.dumps(cut))
    clf = EventClassifier.from_pretrained(run, precision="fp32")
    for pred in clf.predict(SENTENCES):
        expected = [name for name in LABELS if pred.scores[name] >= cut[name]]
        assert pred.labels == expected
        assert "arrest" in pred.labels and "statement" not in pred.labels
    assert 0 < sum("airstrike" in p.labels for p in clf.predict(SENTENCES)) < len(SENTENCES)


def test_missing_thresholds_warn_and_use_half(
    tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _copy_run(tiny_run, tmp_path)
    (run / "thresholds.json").unlink()
    with caplog.at_level(logging.WARNING, logger="arabic_events.inference"):
        clf = EventClassifier.from_pretrained(run, precision="fp32")
    assert "thresholds.json is missing" in caplog.text
    assert clf.thresholds.tolist() == [0.5] * len(LABELS)


def test_predict_documents_roll_up(clf: EventClassifier) -> None:
    docs = clf.predict_documents([("a1", ARTICLE), "قال الوزير إن الحكومة ترفض العقوبات.", "***"])
    first, second, empty = docs
    assert [d.id for d in docs] == ["a1", "1", "2"]
    assert len(first.sentences) == 3
    for index, s in enumerate(first.sentences):
        assert ARTICLE[s.start : s.end] == s.text
        assert s.index == index
        assert s.scores == pytest.approx(clf.predict(s.text).scores, abs=1e-5)
    for name in LABELS:
        assert first.scores[name] == pytest.approx(max(s.scores[name] for s in first.sentences))
        assert first.counts[name] == sum(name in s.labels for s in first.sentences)
    assert first.labels == [n for n in LABELS if any(n in s.labels for s in first.sentences)]
    assert len(second.sentences) == 1
    assert empty.sentences == [] and empty.labels == [] and set(empty.counts.values()) == {0}


def test_docstring_example_shape(clf: EventClassifier) -> None:
    result = clf.predict("شنت مقاتلات التحالف غارات جوية على مواقع لتنظيم داعش.")
    assert isinstance(result.labels, list) and set(result.scores) == set(LABELS)
    text = "قال المتحدث إن القوات اعتقلت ثلاثة مسلحين.\nوأكدت الوزارة تسليم القاعدة للجيش."
    doc = clf.predict_documents([("d1", text)])[0]
    assert [(s.start, s.end) for s in doc.sentences] == [(0, 42), (43, 77)]
    assert isinstance(doc.counts["statement"], int)


def test_batch_size_does_not_change_results(clf: EventClassifier) -> None:
    reference = clf.predict_scores(SENTENCES, batch_size=64)
    for size in (1, 3, 7):
        probs = clf.predict_scores(SENTENCES, batch_size=size)
        np.testing.assert_allclose(probs, reference, atol=1e-5)
        assert clf.decide(probs) == clf.decide(reference)


def test_token_budget_caps_batches_without_changing_scores(tiny_run: Path,
                                                           clf: EventClassifier) -> None:
    small = EventClassifier.from_pretrained(tiny_run, precision="fp32", max_batch_tokens=40)
    lengths = np.array([30, 5, 12, 64, 7, 7, 20])
    batches = small._batches(lengths, 64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * lengths[b].max() <= 40 for b in batches)
    assert clf.max_batch_tokens == CPU_BATCH_TOKENS  # the CPU default
    np.testing.assert_allclose(small.predict_scores(SENTENCES), clf.predict_scores(SENTENCES),
                               atol=1e-5)


def test_same_scores_as_transformers_pipeline(tiny_run: Path, clf: EventClassifier) -> None:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(tiny_run), device="cpu", top_k=None)
    prep = Preprocessor.load(tiny_run)
    sentences = SENTENCES[:8]
    outputs = pipe([prep(s) for s in sentences], truncation=True, max_length=clf.max_length)
    ours = clf.predict_scores(sentences)
    for row, out in zip(ours, outputs, strict=True):
        theirs = {item["label"]: item["score"] for item in out}
        np.testing.assert_allclose([theirs[name] for name in LABELS], row, atol=1e-5)


@pytest.mark.parametrize(("precision", "kernel"), [("bf16", "auto"), ("bf16", "portable"),
                                                   ("int8", "auto"), ("int8", "portable")])
def test_low_precision_agrees_with_fp32(
    tiny_run: Path, clf: EventClassifier, precision: str, kernel: str
) -> None:
    low = EventClassifier.from_pretrained(tiny_run, precision=precision, kernel=kernel)
    assert low.precision == precision
    probs, reference = low.predict_scores(SENTENCES), clf.predict_scores(SENTENCES)
    assert np.abs(probs - reference).max() < 0.01
    agree = (np.array(low.decide(probs), dtype=object) == np.array(clf.decide(reference),
                                                                      dtype=object))
    assert agree.mean() >= 0.95
    if precision == "int8":
        assert not any(type(m) is torch.nn.Linear for m in low.model.bert.modules())
        assert isinstance(low.model.classifier, torch.nn.Linear)  # the head stays fp32
    else:
        assert next(low.model.bert.parameters()).dtype == torch.bfloat16
        assert low.model.classifier.weight.dtype == torch.float32


@pytest.mark.skipif(not onednn_available("int8"), reason="needs oneDNN int8 (VNNI or AMX)")
def test_int8_uses_the_run_calibration_when_present(tiny_run: Path, clf: EventClassifier,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    run = _copy_run(tiny_run, tmp_path)
    (run / CALIBRATION_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="arabic_events.inference"):
        plain = EventClassifier.from_pretrained(run, precision="int8")
    assert "int8_calibration.json is missing" in caplog.text
    kinds = {type(m).__name__ for m in plain.model.modules()}
    assert "_StaticIntermediate" not in kinds
    written = calibrate_int8(run, SENTENCES[:20], source="fixture")
    assert written == run / CALIBRATION_FILE and not list(run.glob("*.partial"))
    assert json.loads(written.read_text())["sentences"] == 20
    static = EventClassifier.from_pretrained(run, precision="int8")
    assert "_StaticIntermediate" in {type(m).__name__ for m in static.model.modules()}
    probs, reference = static.predict_scores(SENTENCES), clf.predict_scores(SENTENCES)
    assert np.abs(probs - reference).max() < 0.01
    assert EventClassifier.from_pretrained(run, precision="bf16").precision == "bf16"
    (run / CALIBRATION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not an int8 calibration"):
        EventClassifier.from_pretrained(run, precision="int8")
    EventClassifier.from_pretrained(run, precision="fp32")  # only int8 reads it
    with pytest.raises(ValueError, match="at least one sentence"):
        calibrate_int8(run, [])


def test_resolve_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="int8"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="choose one of"):
        resolve_precision("fp16", cpu)


def test_arabic_ratio() -> None:
    assert arabic_ratio("غارات جوية") == 1.0
    assert arabic_ratio("Read more at example.com") == 0.0
    assert arabic_ratio("2018") == 0.0


def test_package_import_stays_light() -> None:
    code = (
        "import sys, arabic_events\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from arabic_events import EventClassifier\n"
        "assert EventClassifier.__module__ == 'arabic_events.inference'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
