"""Baselines: the guideline lexicon and TF-IDF + logistic regression, fitted, saved, scored."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT, tiny_overrides

from arabic_events import evaluation, metrics
from arabic_events.baselines import (
    LexiconClassifier,
    TfidfClassifier,
    fit_baselines,
    load_baseline,
    run_baselines,
)
from arabic_events.config import load_config
from arabic_events.data import label_matrix, read_records
from arabic_events.labels import LABELS

DEBUG = ROOT / "configs/debug/tiny-bert.yaml"
LABEL_LIST = list(LABELS)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory):
    return load_config(DEBUG, tiny_overrides(tmp_path_factory.mktemp("bl")))


@pytest.fixture(scope="module")
def fitted(cfg):
    return fit_baselines(cfg)


def predicted(model, texts: list[str]) -> list[set[str]]:
    chosen = model.predict_proba(texts) >= model.thresholds
    return [{name for name, yes in zip(model.labels, row, strict=True) if yes} for row in chosen]


# --- lexicon: the guideline's hard cases --------------------------------------------------------

HARD_CASES = [
    # anonymous or media sources are not a statement; nor is artillery an air strike
    ("قال ناشطون إن القصف استمر طوال الليل في ريف إدلب.", set()),
    ("وذكرت مصادر مطلعة أن المفاوضات بين الطرفين متعثرة.", set()),
    ("ذكرت مصادر محلية أن قصفاً مدفعياً استهدف قرية في ريف حماة.", set()),
    ("استهدفت ضربات مدفعية مواقع المسلحين قرب الحدود.", set()),
    # kidnapping is not arrest; ISIS never arrests; release is not arrest
    ("اختطف مسلحون مجهولون ثلاثة مزارعين شرق العراق.", set()),
    ("اعتقل تنظيم داعش عشرات المدنيين في القرية.", set()),
    ("أطلقت السلطات سراح المعتقلين بعد انتهاء التحقيق.", set()),
    # realis: threats, plans and denials carry no event label; a denial is still a statement
    ("هددت أنقرة بشن غارات جوية على مواقع المسلحين.", set()),
    ("تعتزم القوات الأمريكية تسليم قاعدة عين الأسد الشهر المقبل.", set()),
    ("نفى التحالف تنفيذ أي غارات جوية على المدينة.", {"statement"}),
    # reopening an airport is not a handover; a demand is pressure, not also a statement
    ("استأنف مطار الموصل رحلاته بعد إعادة تأهيله.", set()),
    ("ونددت الخارجية بالقرار وطالبت بإلغائه فوراً.", {"political_pressure"}),
    # and the positives next to them
    ("شنت مقاتلات التحالف غارات جوية على مواقع التنظيم.", {"airstrike"}),
    ("وأعلنت وزارة الداخلية اعتقال خمسة مطلوبين في البصرة.", {"statement", "arrest"}),
    ("سلّم التحالف الدولي قاعدة القيارة الجوية إلى القوات العراقية.", {"base_handover"}),
    ("طالب تحالف الفتح الحكومة بإنهاء وجود القوات الأجنبية.", {"political_pressure"}),
]


@pytest.mark.parametrize(("text", "expected"), HARD_CASES)
def test_lexicon_gets_the_guidelines_hard_cases_right(text: str, expected: set[str]):
    assert predicted(LexiconClassifier(LABEL_LIST), [text]) == [expected]


def test_lexicon_normalises_spelling_variants():
    clf = LexiconClassifier(LABEL_LIST)
    plain, decorated = clf.predict_proba(["شنت الطائرات غارة على المواقع.",
                                          "شَنّت الطـائرات غارةً على المواقع."])
    assert plain.tolist() == decorated.tolist() and plain[0] == 1.0


# --- both baselines learn the fixture -------------------------------------------------------------


@pytest.mark.parametrize("name", ["lexicon", "tfidf"])
def test_baselines_get_the_fixtures_obvious_cases(fitted, name: str):
    model = fitted[name]
    dev = read_records(FIXTURES / "dev.jsonl")
    guesses = predicted(model, [r["text"] for r in dev])
    scores = evaluation.scores_at(model.predict_proba([r["text"] for r in dev]),
                                  label_matrix(dev, LABEL_LIST), model.thresholds, LABEL_LIST)
    assert scores["tuned"]["macro_f1"] >= 0.9, scores
    obvious = {"v01": "airstrike", "v02": "arrest", "v05": "political_pressure"}
    for record, guess in zip(dev, guesses, strict=True):
        if record["id"] in obvious:
            assert obvious[record["id"]] in guess, (record["text"], guess)


def test_tfidf_is_char_wb_2_to_5_one_model_per_label(fitted):
    model = fitted["tfidf"]
    assert model.vectorizer.analyzer == "char_wb" and model.vectorizer.ngram_range == (2, 5)
    assert model.coef.shape == (len(LABEL_LIST), len(model.vectorizer.vocabulary_))


@pytest.mark.parametrize("name", ["lexicon", "tfidf"])
def test_save_and_load_without_pickle_give_the_same_scores(fitted, tmp_path: Path, name: str):
    model = fitted[name]
    model.save(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert files in ({"lexicon.json"}, {"tfidf.json", "tfidf.safetensors"})
    for path in tmp_path.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))  # plain JSON, nothing pickled
    loaded = load_baseline(tmp_path)
    texts = [r["text"] for r in read_records(FIXTURES / "test.jsonl")]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    np.testing.assert_allclose(loaded.thresholds, model.thresholds)
    assert type(loaded) is type(model) and loaded.labels == model.labels


def test_unfitted_tfidf_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"call fit\(\) or load\(\)"):
        TfidfClassifier(LABEL_LIST).predict_proba(["نص"])


# --- run_baselines: same metric code, dev-only tuning ---------------------------------------------


def test_run_baselines_writes_models_metrics_and_report(cfg, tmp_path: Path):
    out = run_baselines(cfg, tmp_path / "bl")
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "lexicon/lexicon.json", "tfidf/tfidf.json", "tfidf/tfidf.safetensors",
        "metrics.json", "report.md"}
    results = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(results["tfidf"]) == {"dev", "test"}
    # the numbers are the project's metric module applied to the saved model's scores
    model = load_baseline(out / "tfidf")
    test = read_records(FIXTURES / "test.jsonl")
    probs = model.predict_proba([r["text"] for r in test])
    y = label_matrix(test, LABEL_LIST)
    assert results["tfidf"]["test"]["tuned"] == metrics.compute(probs, y, model.thresholds,
                                                                LABEL_LIST)
    assert results["tfidf"]["test"]["at_0.5"] == metrics.compute(probs, y, 0.5, LABEL_LIST)
    assert "| lexicon | test |" in (out / "report.md").read_text(encoding="utf-8")


def test_baseline_fitting_never_reads_the_test_file(cfg, monkeypatch):
    read: list[str] = []
    original = evaluation.read_eval_records

    def spy(path, *args, **kwargs):
        read.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(evaluation, "read_eval_records", spy)
    fit_baselines(cfg)
    assert read == ["train.jsonl", "dev.jsonl"]


def test_baseline_thresholds_do_not_move_when_test_labels_are_permuted(cfg, tmp_path: Path):
    rows = [json.loads(line) for line in (FIXTURES / "test.jsonl").read_text("utf-8").splitlines()]
    labels = [row["labels"] for row in rows]
    random.Random(0).shuffle(labels)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps({**row, "labels": lab}, ensure_ascii=False) + "\n"
                                for row, lab in zip(rows, labels, strict=True)), "utf-8")
    assert labels != [row["labels"] for row in rows]
    permuted = load_config(DEBUG, tiny_overrides(tmp_path, **{
        "data.eval_files": "{test: " + str(shuffled) + "}"}))
    first = run_baselines(cfg, tmp_path / "a")
    second = run_baselines(permuted, tmp_path / "b")
    for name, file in (("lexicon", "lexicon.json"), ("tfidf", "tfidf.json")):
        a = json.loads((first / name / file).read_text("utf-8"))["thresholds"]
        b = json.loads((second / name / file).read_text("utf-8"))["thresholds"]
        assert a == b
    a = json.loads((first / "metrics.json").read_text("utf-8"))
    b = json.loads((second / "metrics.json").read_text("utf-8"))
    assert a["tfidf"]["dev"] == b["tfidf"]["dev"]  # only the test scores may differ


def test_tuning_on_a_held_out_file_is_refused(cfg, tmp_path: Path):
    bad = load_config(DEBUG, tiny_overrides(tmp_path, **{
        "data.dev_file": str(FIXTURES / "test.jsonl"),
        "data.eval_files": "{}"}))
    with pytest.raises(evaluation.EvaluationError, match="refusing to tune thresholds"):
        fit_baselines(bad)
