"""`arabic-events predict`: input and output formats, bad records, atomic and resumable output,
shards, batch-size invariance. All on the tiny debug run (seconds)."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arabic_events import batch
from arabic_events.batch import BadRecord, OutputFormat, PredictError, predict_file
from arabic_events.cli import main
from arabic_events.config import PredictConfig
from arabic_events.inference import EventClassifier
from arabic_events.labels import LABELS, ONTOLOGY

FIXTURES = Path(__file__).parent / "fixtures"
SENTENCES = [
    json.loads(line)["text"]
    for name in ("train", "dev", "test")
    for line in (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
]
CHUNK = 8  # sentences per chunk: several chunks per job
FAST = ["--quiet", "--chunk-size", str(CHUNK), "precision=fp32", "batch_size=8"]


@pytest.fixture(scope="module")
def clf(tiny_run: Path) -> EventClassifier:
    return EventClassifier.from_pretrained(tiny_run, precision="fp32", batch_size=8)


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, str]]:
    """Ten articles of four fixture sentences (two lines each); one has an English line."""
    out = []
    for k in range(10):
        first, second, third, fourth = SENTENCES[4 * k : 4 * k + 4]
        text = f"{first} {second}\n{third} {fourth}"
        if k == 3:
            text = text + "\nRead more at www.example.com"
        out.append((f"d{k:02d}", text))
    return out


def _jsonl(path: Path, docs: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"id": i, "title": "عنوان", "text": t}, ensure_ascii=False)
             for i, t in docs]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _csv(path: Path, docs: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(docs)
    return path


def _txt(folder: Path, docs: list[tuple[str, str]]) -> Path:
    folder.mkdir()
    for doc_id, text in docs:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return folder


def _run(clf: EventClassifier, source: Path, output: Path, **kwargs) -> batch.PredictSummary:
    cfg = kwargs.pop("cfg", PredictConfig())
    return predict_file(clf, source, output, cfg, progress=False, chunk_sentences=CHUNK, **kwargs)


def _records(path: Path) -> list[dict]:
    return list(OutputFormat(path).read(path))


def _same(ours: list[dict], reference: list[dict]) -> None:
    """Equal records; scores equal to 1e-5 (batch composition may differ)."""
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert {k: v for k, v in a.items() if k != "scores"} == {
            k: v for k, v in b.items() if k != "scores"}
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


@pytest.fixture(scope="module")
def reference(clf: EventClassifier, docs, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("reference")
    output = folder / "out.jsonl"
    _run(clf, _jsonl(folder / "in.jsonl", docs), output)
    return _records(output)


def test_records_have_spans_labels_scores_and_codes(reference: list[dict], docs) -> None:
    texts = dict(docs)
    assert {r["doc_id"] for r in reference} == set(texts)
    assert len(reference) == 40  # the English line of d03 is not scored
    assert not any("example.com" in r["text"] for r in reference)
    for r in reference:
        assert texts[r["doc_id"]][r["start"] : r["end"]] == r["text"]
        assert list(r["scores"]) == list(LABELS)
        assert set(r["labels"]) <= set(LABELS)
        for onto in ("acled", "plover", "cameo"):
            assert r[onto] == {n: ONTOLOGY[n][onto] for n in r["labels"] if ONTOLOGY[n][onto]}
    keys = [(r["doc_index"], r["sentence"]) for r in reference]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("kind", ["jsonl.gz", "csv", "txt"])
def test_every_input_format_gives_the_same_records(
    clf: EventClassifier, docs, reference: list[dict], tmp_path: Path, kind: str
) -> None:
    makers = {"jsonl.gz": lambda: _jsonl(tmp_path / "in.jsonl.gz", docs),
              "csv": lambda: _csv(tmp_path / "in.csv", docs),
              "txt": lambda: _txt(tmp_path / "articles", docs)}
    output = tmp_path / "out.jsonl"
    summary = _run(clf, makers[kind](), output)
    assert (summary.documents, summary.sentences, summary.skipped) == (10, 40, 0)
    _same(_records(output), reference)


def test_csv_output_reads_back_as_the_jsonl_output(
    clf: EventClassifier, docs, reference: list[dict], tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    _run(clf, _jsonl(tmp_path / "in.jsonl", docs), output)
    with output.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:7] == ["doc_id", "doc_index", "sentence", "start", "end", "text", "labels"]
    assert [f"score_{n}" for n in LABELS] == header[7:12]
    assert _records(output) == reference


def _bad_input(path: Path, docs) -> Path:
    lines = [
        json.dumps({"id": docs[0][0], "text": docs[0][1]}, ensure_ascii=False),  # 1: good
        '{"id": "x1", "text": "broken',  # 2: invalid JSON
        json.dumps({"id": "x2", "body": "نص"}, ensure_ascii=False),  # 3: no text field
        json.dumps({"id": "x3", "text": "  "}),  # 4: empty text
        json.dumps({"id": "x4", "text": "An English article only."}),  # 5: not Arabic
        json.dumps({"id": docs[1][0], "text": docs[1][1]}, ensure_ascii=False),  # 6: good
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_records_are_skipped_and_logged_with_their_line(
    clf: EventClassifier, docs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _bad_input(tmp_path / "in.jsonl", docs)
    with caplog.at_level(logging.WARNING, logger="arabic_events.batch"):
        summary = _run(clf, source, tmp_path / "out.jsonl")
    assert (summary.documents, summary.skipped) == (2, 4)
    for line, words in [(2, "invalid JSON"), (3, "missing field"), (4, "empty text"),
                        (5, "no Arabic letter")]:
        message = next(m for m in caplog.messages if f"in.jsonl:{line}:" in m)
        assert words in message
    assert {r["doc_id"] for r in _records(tmp_path / "out.jsonl")} == {docs[0][0], docs[1][0]}


def test_fail_mode_stops_at_the_first_bad_record_and_writes_no_output(
    clf: EventClassifier, docs, tmp_path: Path
) -> None:
    source = _bad_input(tmp_path / "in.jsonl", docs)
    output = tmp_path / "out.jsonl"
    cfg = dataclasses.replace(PredictConfig(), on_error="fail")
    with pytest.raises(BadRecord, match=r"in\.jsonl:2: invalid JSON"):
        _run(clf, source, output, cfg=cfg)
    assert not output.exists()
    assert main(["predict", "--run", str(clf_run(clf)), "--input", str(source), "--output",
                 str(tmp_path / "cli.jsonl"), "--on-error", "fail", *FAST]) == 2
    assert not (tmp_path / "cli.jsonl").exists()


def clf_run(clf: EventClassifier) -> Path:
    """The run directory a classifier was loaded from (the tokenizer remembers it)."""
    return Path(clf.tokenizer.name_or_path)


def test_output_appears_only_when_the_job_is_complete(
    clf: EventClassifier, docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.jsonl"
    seen = []

    def check(chunk: int) -> None:
        seen.append((chunk, output.exists(), output.with_name("out.jsonl.partial").exists()))

    monkeypatch.setattr(batch, "on_chunk_written", check)
    _run(clf, _jsonl(tmp_path / "in.jsonl", docs), output)
    assert len(seen) >= 3 and all(not done and partial for _, done, partial in seen)
    assert output.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl",
                                                                                "out.jsonl"]
    with pytest.raises(PredictError, match="exists already"):
        _run(clf, tmp_path / "in.jsonl", output)
    output.with_name("again.jsonl.partial").write_text("")
    with pytest.raises(PredictError, match="--resume"):
        _run(clf, tmp_path / "in.jsonl", tmp_path / "again.jsonl")


_CRASH = """
import os, signal, sys
from arabic_events import batch
from arabic_events.cli import main

def crash(chunk):
    if chunk == 2:  # a torn write after the second chunk, then sudden death
        with open(sys.argv[1] + ".partial", "ab") as handle:
            handle.write('{"doc_id": "d0'.encode())
        os.kill(os.getpid(), signal.SIGKILL)

batch.on_chunk_written = crash
main(["predict", "--output", sys.argv[1], *sys.argv[2:]])
"""


def test_resume_after_a_killed_job_equals_an_uninterrupted_run(
    clf: EventClassifier, docs, reference: list[dict], tmp_path: Path
) -> None:
    source = _jsonl(tmp_path / "in.jsonl", docs)
    output = tmp_path / "out.jsonl"
    args = ["--run", str(clf_run(clf)), "--input", str(source), *FAST]
    killed = subprocess.run([sys.executable, "-c", _CRASH, str(output), *args],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not output.exists()
    partial = _records_safe(output.with_name("out.jsonl.partial"))
    assert 0 < len({r["doc_id"] for r in partial}) < len(docs)
    summary = _run(clf, source, output, resume=True)
    assert summary.resumed == len({r["doc_id"] for r in partial})
    assert summary.documents + summary.resumed == len(docs)
    records = _records(output)
    keys = [(r["doc_id"], r["sentence"]) for r in records]
    assert len(keys) == len(set(keys))
    _same(records, reference)
    assert not output.with_name("out.jsonl.partial").exists()


def _records_safe(path: Path) -> list[dict]:
    """Complete lines of a partial JSONL file (the torn last line is left out)."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [json.loads(line) for line in lines]


def test_resume_refuses_a_different_job(clf: EventClassifier, docs, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = _jsonl(tmp_path / "in.jsonl", docs)
    output = tmp_path / "out.jsonl"

    def stop(chunk: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "on_chunk_written", stop)
    with pytest.raises(KeyboardInterrupt):
        _run(clf, source, output)
    monkeypatch.setattr(batch, "on_chunk_written", None)
    with pytest.raises(PredictError, match="another job"):
        _run(clf, source, output, resume=True, shard=(1, 2))
    assert _run(clf, source, output, resume=True).resumed > 0


def test_two_shard_processes_then_merge_in_input_order(
    clf: EventClassifier, docs, reference: list[dict], tmp_path: Path
) -> None:
    source = _jsonl(tmp_path / "in.jsonl", docs)
    outputs = [tmp_path / "shard0.jsonl", tmp_path / "shard1.csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "arabic_events.cli", "predict", "--run", str(clf_run(clf)),
             "--input", str(source), "--output", str(out), "--shard", f"{i}/2", "--threads", "1",
             *FAST], env=env, stderr=subprocess.PIPE, text=True)
        for i, out in enumerate(outputs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    for i, out in enumerate(outputs):
        assert {r["doc_index"] % 2 for r in _records(out)} == {i}
    merged = tmp_path / "merged.jsonl"
    assert main(["predict-merge", "--output", str(merged), *map(str, reversed(outputs))]) == 0
    _same(_records(merged), reference)
    with pytest.raises(PredictError, match="in both"):
        batch.merge_outputs([outputs[0], outputs[0]], tmp_path / "twice.jsonl")


def test_batch_size_changes_no_label(clf: EventClassifier, docs, reference: list[dict],
                                     tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "in.jsonl", docs)
    for size in (1, 5, 64):
        output = tmp_path / f"out{size}.jsonl"
        _run(clf, source, output, cfg=dataclasses.replace(PredictConfig(), batch_size=size))
        _same(_records(output), reference)


def test_cli_accepts_only_predict_overrides(clf: EventClassifier, docs, tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "in.jsonl", docs)
    args = ["predict", "--run", str(clf_run(clf)), "--input", str(source), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "a.jsonl"), "train.epochs=2"]) == 2
    assert main([*args, "--output", str(tmp_path / "b.jsonl"), "predict.batch_sise=2"]) == 2
    assert main([*args, "--output", str(tmp_path / "c.csv"), "precision=fp32"]) == 0
    assert len(_records(tmp_path / "c.csv")) == 40
    assert main([*args, "--output", str(tmp_path / "d.jsonl"), "kernel=fbgemm"]) == 2
    assert main([*args, "--output", str(tmp_path / "e.jsonl"), "precision=int8",
                 "kernel=portable"]) == 0
    assert len(_records(tmp_path / "e.jsonl")) == 40


def test_cli_calibrate_writes_the_int8_ranges_from_documents(clf: EventClassifier, docs,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(clf_run(clf), run)
    (run / "int8_calibration.json").unlink()
    source = _jsonl(tmp_path / "in.jsonl", docs)
    assert main(["calibrate", "--run", str(run), "--input", str(source),
                 "--sentences", "7"]) == 0
    written = json.loads((run / "int8_calibration.json").read_text(encoding="utf-8"))
    assert written["sentences"] == 7 and str(source) in written["source"]
    assert len(written["feed_forward"]) == 2
    empty = _jsonl(tmp_path / "empty.jsonl", [("e", "Read more at www.example.com")])
    assert main(["calibrate", "--run", str(run), "--input", str(empty)]) != 0
    assert main(["calibrate", "--run", str(run), "--input", str(tmp_path / "none.jsonl")]) != 0
