"""The project's dataset: near-duplicates, honest splits, checks, diversity and agreement.

Sources: `data/authored/part_*.jsonl` (sentences written for the project, grouped into
pseudo-documents) and `seeds/sentences.jsonl` (the five seed articles, sentence by sentence).
`make_splits` writes `data/splits/{train,dev,test,seed_test}.jsonl`: whole documents stay on one
side, and near-duplicate sentences (token Jaccard above 0.7) pull their documents together.
`check` also reads the evaluation-only sets `data/challenge/*.jsonl` and keeps them apart from
every split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from arabic_events.data import DataError, has_arabic, read_records
from arabic_events.labels import LABELS

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
NEAR_DUPLICATE = 0.7
_DIACRITICS = re.compile(r"[\u0610-\u061A\u064B-\u065F\u0670\u0640]")
_TOKEN = re.compile(r"\w+")


def dedup_tokens(text: str) -> list[str]:
    """Tokens for duplicate detection: diacritics/tatweel dropped, alef/ya/ta marbuta unified."""
    text = _DIACRITICS.sub("", text)
    text = re.sub("[إأآٱ]", "ا", text).replace("ى", "ي").replace("ة", "ه")
    return _TOKEN.findall(text)


def _pairwise_jaccard(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-set Jaccard of every pair (i < j) that shares a token, as sparse arrays."""
    vectorizer = CountVectorizer(analyzer=dedup_tokens, binary=True)
    x = vectorizer.fit_transform(texts).astype(np.float32).tocsr()
    sizes = np.asarray(x.sum(1)).ravel()
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    jaccard = np.divide(inter.data, union, out=np.zeros_like(inter.data), where=union > 0)
    return inter.row, inter.col, jaccard


def near_duplicate_pairs(
    texts: list[str], threshold: float = NEAR_DUPLICATE
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j whose token-set Jaccard exceeds `threshold`."""
    if len(texts) < 2:
        return []
    rows, cols, jaccard = _pairwise_jaccard(texts)
    keep = jaccard > threshold
    return [
        (int(i), int(j), float(s))
        for i, j, s in zip(rows[keep], cols[keep], jaccard[keep], strict=True)
    ]


def max_jaccard(texts: list[str]) -> float:
    """The largest token Jaccard between any two of `texts`."""
    if len(texts) < 2:
        return 0.0
    jaccard = _pairwise_jaccard(texts)[2]
    return float(jaccard.max()) if jaccard.size else 0.0


class _UnionFind:
    def __init__(self, items: list[str]) -> None:
        self.parent = {item: item for item in items}

    def find(self, item: str) -> str:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def document_groups(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by document, documents joined when they share a near-duplicate."""
    uf = _UnionFind(sorted({r["doc_id"] for r in records}))
    for i, j, _ in near_duplicate_pairs([r["text"] for r in records]):
        uf.union(records[i]["doc_id"], records[j]["doc_id"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(uf.find(record["doc_id"]), []).append(record)
    return groups


def assign_splits(
    records: list[dict[str, Any]],
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 13,
) -> dict[str, list[dict[str, Any]]]:
    """Grouped train/dev/test split that is stable under edits.

    Each group (documents joined by near-duplicates) goes to a split chosen by a seeded hash of
    its first document id, so relabelling a sentence or adding new documents never moves the
    documents already placed (a greedy, label-stratified assignment would reshuffle them).
    """
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    bounds = np.cumsum(ratios) / sum(ratios)
    for group in document_groups(records).values():
        key = min(r["doc_id"] for r in group)
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        split = SPLITS[int(np.searchsorted(bounds, position, side="right"))]
        out[split].extend(group)
    return out


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "text": record["text"],
        "labels": record["labels"],
        "doc_id": record["doc_id"],
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_authored(root: Path) -> list[dict[str, Any]]:
    """Every authored part, validated."""
    parts = sorted((root / "data" / "authored").glob("part_*.jsonl"))
    if not parts:
        raise DataError(f"no data/authored/part_*.jsonl under {root}")
    return [r for part in parts for r in read_records(part)]


def load_seeds(root: Path) -> list[dict[str, Any]]:
    """Seed sentences without near-duplicate repeats (the articles share paragraphs) and
    without lines that hold no Arabic (bylines such as "Sputnik")."""
    path = root / "seeds" / "sentences.jsonl"
    keep = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    keep = {row["id"] for row in keep if not row.get("near_duplicate_of")}
    return [
        r
        for r in read_records(path, allow_non_arabic=True)
        if r["id"] in keep and has_arabic(r["text"])
    ]


def make_splits(root: Path, seed: int = 13) -> dict[str, int]:
    """Write data/splits/*.jsonl from the authored parts and the seeds; return sizes."""
    splits = assign_splits(load_authored(root), seed=seed)
    splits["seed_test"] = load_seeds(root)
    for name, rows in splits.items():
        write_jsonl(root / "data" / "splits" / f"{name}.jsonl", [_clean(r) for r in rows])
    return {name: len(rows) for name, rows in splits.items()}


def check(root: Path, against: list[Path] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Validate the splits and the evaluation-only sets under `data/challenge/`: schema, labels,
    duplicates and leakage between any two of them. Returns (counts, problems)."""
    problems: list[str] = []
    splits: dict[str, list[dict[str, Any]]] = {}
    paths = {name: root / "data" / "splits" / f"{name}.jsonl" for name in (*SPLITS, "seed_test")}
    for path in sorted((root / "data" / "challenge").glob("*.jsonl")):
        paths[f"challenge/{path.stem}"] = path
    for name, path in paths.items():
        try:
            splits[name] = read_records(path)
        except DataError as err:
            problems.append(str(err))
    everything = [(name, r) for name, rows in splits.items() for r in rows]
    texts = [r["text"] for _, r in everything]
    for i, j, score in near_duplicate_pairs(texts):
        (a, ra), (b, rb) = everything[i], everything[j]
        kind = "duplicate" if score >= 0.999 else f"near-duplicate (Jaccard {score:.2f})"
        where = f"{a}:{ra['id']} ~ {b}:{rb['id']}"
        problems.append(f"{kind} {'across splits' if a != b else 'within ' + a}: {where}")
    docs = {name: {r["doc_id"] for r in rows} for name, rows in splits.items()}
    for a in docs:
        for b in docs:
            if a < b and docs[a] & docs[b]:
                problems.append(f"documents in both {a} and {b}: {sorted(docs[a] & docs[b])[:5]}")
    for path in against or []:
        outside = read_records(path, require_ids=False, allow_non_arabic=True)
        merged = texts + [r["text"] for r in outside]
        for i, j, score in near_duplicate_pairs(merged):
            if i < len(texts) <= j:
                name, record = everything[i]
                problems.append(
                    f"{name}:{record['id']} near-duplicates {path.name} line "
                    f"{outside[j - len(texts)]['line']} (Jaccard {score:.2f})"
                )
    return {name: label_counts(rows) for name, rows in splits.items()}, problems


def label_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Sentences per label, plus `none` and `sentences`."""
    counts = Counter(k for r in records for k in r["labels"])
    return {
        **{k: counts[k] for k in LABELS},
        "none": sum(1 for r in records if not r["labels"]),
        "sentences": len(records),
        "documents": len({r["doc_id"] for r in records}),
    }


def diversity(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Distinct n-gram ratios, the largest pairwise Jaccard, and surface-variety shares."""
    tokens = [dedup_tokens(r["text"]) for r in records]
    stats: dict[str, Any] = {}
    for n in (1, 2, 3):
        grams = [tuple(t[i : i + n]) for t in tokens for i in range(len(t) - n + 1)]
        stats[f"distinct_{n}"] = round(len(set(grams)) / max(len(grams), 1), 4)
    texts = [r["text"] for r in records]
    stats["max_token_jaccard"] = round(max_jaccard(texts), 4)
    stats["mean_tokens"] = round(float(np.mean([len(t) for t in tokens])), 1)
    stats["share_hindi_digits"] = round(np.mean([bool(re.search("[٠-٩]", t)) for t in texts]), 4)
    stats["share_diacritics"] = round(
        np.mean([bool(re.search("[\u064b-\u0652]", t)) for t in texts]), 4
    )
    stats["share_tatweel"] = round(np.mean(["\u0640" in t for t in texts]), 4)
    combos = Counter("+".join(r["labels"]) or "none" for r in records)
    stats["multi_label_sentences"] = sum(v for k, v in combos.items() if "+" in k)
    stats["label_combinations"] = dict(combos.most_common())
    return stats


def agreement(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> dict[str, Any]:
    """Cohen's kappa per label between two annotations of the same sentences (matched by id)."""
    from sklearn.metrics import cohen_kappa_score

    by_id = {r["id"]: r for r in second}
    shared = [r for r in first if r["id"] in by_id]
    if not shared:
        raise DataError("the two annotations share no sentence id")
    result: dict[str, Any] = {"sentences": len(shared)}
    for label in LABELS:
        a = [label in r["labels"] for r in shared]
        b = [label in by_id[r["id"]]["labels"] for r in shared]
        kappa = cohen_kappa_score(a, b) if len(set(a) | set(b)) > 1 else 1.0
        result[label] = {
            "kappa": round(float(kappa), 4),
            "first_positive": sum(a),
            "second_positive": sum(b),
            "disagreements": sum(x != y for x, y in zip(a, b, strict=True)),
        }
    result["exact_set_agreement"] = round(
        float(np.mean([set(r["labels"]) == set(by_id[r["id"]]["labels"]) for r in shared])), 4
    )
    return result


def corpus_overlap(
    records: list[dict[str, Any]], corpus: Path, chunk: int = 40_000
) -> dict[str, Any]:
    """How close the authored sentences come to any sentence of a JSONL(.gz) news corpus.

    Evidence that nothing was copied: the largest token Jaccard between an authored sentence
    and a corpus sentence, how many authored sentences exceed 0.5 and 0.7, and the ids of those
    over 0.5 (to read them against the corpus).
    """
    import gzip

    from arabic_events.sentences import split_sentences

    texts = [r["text"] for r in records]
    vectorizer = CountVectorizer(analyzer=dedup_tokens, binary=True).fit(texts)
    ours = vectorizer.transform(texts).astype(np.float32).tocsr()
    our_sizes = np.asarray(ours.sum(1)).ravel()
    best = np.zeros(len(texts), dtype=np.float32)
    opener = gzip.open if corpus.suffix == ".gz" else open
    seen, batch = 0, []

    def flush() -> None:
        theirs = vectorizer.transform(batch).astype(np.float32).tocsr()
        # their sizes count every token, also those outside our vocabulary
        sizes = np.array([len(set(dedup_tokens(t))) for t in batch], dtype=np.float32)
        inter = (ours @ theirs.T).tocoo()
        union = our_sizes[inter.row] + sizes[inter.col] - inter.data
        jaccard = inter.data / np.maximum(union, 1)
        np.maximum.at(best, inter.row, jaccard)

    with opener(corpus, "rt", encoding="utf-8") as handle:
        for line in handle:
            article = json.loads(line)
            for sentence in split_sentences(article.get("text", "")):
                batch.append(sentence.text)
            if len(batch) >= chunk:
                seen += len(batch)
                flush()
                batch = []
    if batch:
        seen += len(batch)
        flush()
    return {
        "corpus_sentences": seen,
        "max_jaccard": round(float(best.max()), 4),
        "over_0.5": int((best > 0.5).sum()),
        "over_0.7": int((best > 0.7).sum()),
        "mean_best_jaccard": round(float(best.mean()), 4),
        "ids_over_0.5": {records[i].get("id", str(i)): round(float(best[i]), 4)
                         for i in np.flatnonzero(best > 0.5)},
    }
