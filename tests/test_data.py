"""Reading labelled data: every bad-data error names the file, the line and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arabic_events.data import DataError, Fields, read_records, to_dataset

GOOD = {"id": "a", "text": "اعتقلت الشرطة مشتبهاً به.", "labels": ["arrest"], "doc_id": "d1"}


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_jsonl_and_builds_dataset(tmp_path: Path):
    rows = [GOOD, {**GOOD, "id": "b", "labels": ["statement", "arrest"]}]
    records = read_records(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[1]["labels"] == ["arrest", "statement"]  # canonical label order
    ds = to_dataset(
        records, ["airstrike", "arrest", "base_handover", "statement", "political_pressure"]
    )
    assert ds["label_vector"][1] == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_reads_csv_and_tsv_with_label_lists(tmp_path: Path):
    csv = tmp_path / "d.csv"
    csv.write_text(
        'id,text,labels,doc_id\n1,"قال الوزير، إن الغارات توقفت.",statement;airstrike,x\n'
        "2,ارتفعت الأسعار.,,y\n",
        encoding="utf-8",
    )
    records = read_records(csv)
    assert records[0]["labels"] == ["airstrike", "statement"] and records[1]["labels"] == []
    tsv = tmp_path / "d.tsv"
    tsv.write_text(
        'id\ttext\tlabels\tdoc_id\n1\tاعتقلت الشرطة رجلاً.\t["arrest"]\tx\n', encoding="utf-8"
    )
    assert read_records(tsv)[0]["labels"] == ["arrest"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([GOOD, "{not json"], r"d.jsonl:2: broken JSON line"),
        (
            [GOOD, {**GOOD, "id": "b", "labels": ["arrests"]}],
            r"d.jsonl:2: unknown label 'arrests'. Did you mean 'arrest'",
        ),
        ([{**GOOD, "text": "   "}], r"d.jsonl:1: empty text"),
        ([{**GOOD, "text": "Breaking news only in English."}], r"d.jsonl:1: .* no Arabic letter"),
        (
            [{k: v for k, v in GOOD.items() if k != "labels"}],
            r"d.jsonl:1: missing field\(s\) \['labels'\].*data.labels_field",
        ),
        ([GOOD, GOOD], r"d.jsonl:2: id 'a' repeats line 1"),
        (["[1, 2]"], r"d.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_records_name_file_line_and_fix(tmp_path: Path, rows, expected):
    with pytest.raises(DataError, match=expected):
        read_records(write_jsonl(tmp_path / "d.jsonl", rows))


def test_unknown_label_lists_valid_labels(tmp_path: Path):
    with pytest.raises(ValueError, match="Valid labels: airstrike, arrest, base_handover"):
        read_records(write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "labels": ["bombing"]}]))


def test_missing_and_empty_and_unsupported_files(tmp_path: Path):
    with pytest.raises(DataError, match="not found; check the path"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no records"):
        read_records(tmp_path / "empty.jsonl")
    (tmp_path / "d.parquet").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        read_records(tmp_path / "d.parquet")


def test_custom_field_names_and_optional_ids(tmp_path: Path):
    rows = [{"sentence": "قصفت طائرات حربية مواقع المسلحين.", "tags": ["airstrike"]}]
    records = read_records(
        write_jsonl(tmp_path / "d.jsonl", rows),
        Fields(text="sentence", labels="tags"),
        require_ids=False,
    )
    assert records[0]["id"] == "line-1" and records[0]["labels"] == ["airstrike"]
