"""Dataset tooling on small hand-made records, and the shipped splits' invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arabic_events import dataset
from arabic_events.labels import LABELS

ROOT = Path(__file__).resolve().parents[1]


def rec(i: str, text: str, labels: list[str], doc: str) -> dict:
    return {"id": i, "text": text, "labels": labels, "doc_id": doc}


def test_near_duplicates_ignore_diacritics_tatweel_and_alef_forms():
    texts = [
        "أعلنت القيادة تسليم القاعدة إلى الجيش العراقي اليوم",
        "اعلنت القيادة تسليـــم القاعدة إلى الجيش العراقيّ اليوم",
        "ارتفعت أسعار الذهب في الأسواق العالمية",
    ]
    pairs = dataset.near_duplicate_pairs(texts)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(1.0)


def test_near_duplicate_threshold_is_strict():
    a = "قال الوزير إن الحكومة ستعيد فتح المطار الأسبوع المقبل"
    b = "قال الوزير إن الحكومة ستعيد فتح المعبر الشهر المقبل"  # 8 of 12 tokens shared
    assert dataset.near_duplicate_pairs([a, b]) == []
    assert 0.5 < dataset.max_jaccard([a, b]) <= 0.7


def test_splits_keep_documents_and_near_duplicates_together():
    records = []
    for d in range(40):
        labels = [LABELS[d % 5]] if d % 3 else []
        for s in range(3):
            words = " ".join(f"ك{d}س{s}ر{k}" for k in range(6))  # no token shared across docs
            records.append(rec(f"d{d}-{s}", words, labels, f"doc{d}"))
    # doc0 and doc39 share a near-duplicate sentence: they must land in one split
    records.append(rec("dup", records[0]["text"] + " اليوم", [], "doc39"))
    splits = dataset.assign_splits(records, seed=1)
    where = {r["doc_id"]: name for name, rows in splits.items() for r in rows}
    for name, rows in splits.items():
        assert {where[r["doc_id"]] for r in rows} == {name}
    assert where["doc0"] == where["doc39"]
    assert sum(len(v) for v in splits.values()) == len(records)
    assert all(len(v) > 0 for v in splits.values())


def test_agreement_kappa_per_label():
    first = [
        rec("1", "x", ["arrest"], "d"),
        rec("2", "y", [], "d"),
        rec("3", "z", ["arrest"], "d"),
        rec("4", "w", [], "d"),
    ]
    second = [
        rec("1", "x", ["arrest"], "d"),
        rec("2", "y", [], "d"),
        rec("3", "z", [], "d"),
        rec("4", "w", [], "d"),
    ]
    result = dataset.agreement(first, second)
    assert result["arrest"]["kappa"] == pytest.approx(0.5)  # po=.75, pe=.5
    assert result["arrest"]["disagreements"] == 1
    assert result["airstrike"]["kappa"] == 1.0
    assert result["exact_set_agreement"] == pytest.approx(0.75)


def test_check_finds_leakage_across_splits(tmp_path: Path):
    splits = tmp_path / "data" / "splits"
    a = rec("a1", "اعتقلت الشرطة خمسة أشخاص في البصرة بتهمة التهريب", ["arrest"], "d1")
    b = rec("b1", "شنت طائرات حربية غارات على مواقع المسلحين", ["airstrike"], "d2")
    leaked = {**a, "id": "t1"}
    for name, rows in {"train": [a], "dev": [b], "test": [leaked], "seed_test": []}.items():
        dataset.write_jsonl(splits / f"{name}.jsonl", rows)
    (splits / "seed_test.jsonl").write_text(
        json.dumps(rec("s", "قال المتحدث إن الوضع هادئ", ["statement"], "s")) + "\n"
    )
    counts, problems = dataset.check(tmp_path)
    assert counts["train"]["arrest"] == 1
    assert any("duplicate across splits: train:a1 ~ test:t1" in p for p in problems)
    assert any("documents in both test and train" in p for p in problems)


def test_shipped_splits_pass_the_check_and_hold_the_counts():
    counts, problems = dataset.check(ROOT)
    assert problems == []
    authored = {
        k: sum(counts[s][k] for s in dataset.SPLITS) for k in [*LABELS, "none", "sentences"]
    }
    assert authored["sentences"] >= 2400
    assert authored["none"] >= 800
    for label in LABELS:
        assert authored[label] >= 350, label
    assert counts["seed_test"]["sentences"] > 50


def test_diversity_report_fields():
    records = dataset.load_authored(ROOT)
    stats = dataset.diversity(records)
    assert stats["max_token_jaccard"] <= 0.7
    assert stats["distinct_2"] > 0.5
    assert stats["share_hindi_digits"] > 0 and stats["share_tatweel"] > 0
    assert stats["multi_label_sentences"] > 100


def test_corpus_overlap_finds_a_copied_sentence(tmp_path: Path):
    import gzip

    corpus = tmp_path / "news.jsonl.gz"
    articles = [
        {
            "id": "1",
            "text": "شنت مقاتلات التحالف غارات على مواقع التنظيم غرب الموصل. وارتفعت الأسعار.",
        },
        {"id": "2", "text": "افتتح معرض الكتاب في القاهرة بمشاركة واسعة."},
    ]
    with gzip.open(corpus, "wt", encoding="utf-8") as handle:
        for article in articles:
            handle.write(json.dumps(article, ensure_ascii=False) + "\n")
    records = [
        rec("a", "شنت مقاتلات التحالف غارات على مواقع التنظيم غرب الموصل.", ["airstrike"], "d"),
        rec("b", "اعتقلت الشرطة خمسة أشخاص في البصرة.", ["arrest"], "d"),
    ]
    result = dataset.corpus_overlap(records, corpus, chunk=1)
    assert result["corpus_sentences"] == 3
    assert result["max_jaccard"] == pytest.approx(1.0)
    assert result["over_0.7"] == 1
    assert result["ids_over_0.5"] == {"a": pytest.approx(1.0)}


def test_repository_holds_no_real_news_sentence():
    """The real-news dev set is read in place: none of its sentences may be committed (notebook
    outputs and evaluation reports included). Skipped where the set is absent."""
    import subprocess

    realnews = ROOT.parent / "shared" / "realnews-dev" / "ant-dev.jsonl"
    if not realnews.is_file() or not (ROOT / ".git").exists():
        pytest.skip("no real-news dev set or no git checkout here")
    sentences = [json.loads(line)["text"] for line in realnews.read_text("utf-8").splitlines()
                 if line.strip()]
    fragments = {s[:70] for s in sentences if len(s) >= 90}  # longer than stock formulas
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    leaks = []
    for name in filter(None, tracked):
        path = ROOT / name
        if path.suffix in {".png", ".safetensors"} or not path.is_file():
            continue
        text = path.read_text("utf-8", errors="ignore").replace('\\"', '"')  # JSON quotes
        leaks += [name for fragment in fragments if fragment in text]
    assert not leaks, f"real-news sentences committed in {sorted(set(leaks))}"



def test_check_finds_a_challenge_sentence_in_the_splits(tmp_path: Path):
    """Sets under data/challenge/ are evaluation only: `check` reads them like the splits and
    reports any sentence or document they share with one."""
    a = rec("a1", "اعتقلت الشرطة خمسة أشخاص في البصرة بتهمة التهريب", ["arrest"], "d1")
    b = rec("b1", "شنت طائرات حربية غارات على مواقع المسلحين", ["airstrike"], "d2")
    for name, rows in {"train": [a], "dev": [b], "test": [],
                       "seed_test": [rec("s", "قال المتحدث إن الوضع هادئ", ["statement"], "s")]
                       }.items():
        dataset.write_jsonl(tmp_path / "data" / "splits" / f"{name}.jsonl", rows)
    challenge = tmp_path / "data" / "challenge" / "lookalikes.jsonl"
    dataset.write_jsonl(challenge, [{**b, "id": "c1", "doc_id": "c-d1"}])
    counts, problems = dataset.check(tmp_path)
    assert counts["challenge/lookalikes"]["airstrike"] == 1
    assert any("duplicate across splits: dev:b1 ~ challenge/lookalikes:c1" in p
               for p in problems), problems


def test_shipped_contrast_set_is_mostly_look_alikes():
    counts, _ = dataset.check(ROOT)
    contrast = counts["challenge/base_handover_contrast"]
    assert contrast["sentences"] >= 150
    assert 30 <= contrast["base_handover"] <= contrast["sentences"] // 2
