"""Reading labelled sentence data (JSONL, CSV, TSV) into `datasets.Dataset` objects.

A record is ``{"id", "text", "labels": [...], "doc_id"}``; label names follow the guideline.
Every problem is an error that names the file, the line and the fix.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from arabic_events.labels import LABELS, check_labels
from arabic_events.sentences import ARABIC_LETTER


class DataError(ValueError):
    """Labelled data that cannot be used as it is."""


@dataclass(frozen=True)
class Fields:
    """Which record fields hold the id, text, labels and document id."""

    text: str = "text"
    labels: str = "labels"
    id: str = "id"
    doc: str = "doc_id"


def has_arabic(text: str) -> bool:
    """True when `text` holds at least one Arabic letter."""
    return bool(ARABIC_LETTER.search(text))


def _parse_labels(value: Any, where: str) -> list[str]:
    """Labels arrive as a JSON list, or in CSV as `a;b`, `a,b`, `["a", "b"]` or empty."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None:
        return []
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise DataError(f"{where}: labels {text!r} are not a valid JSON list.") from None
        return [str(v) for v in parsed]
    return [part.strip() for part in re.split(r"[;,|]", text) if part.strip()]


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Rows with their line numbers (1-based; CSV/TSV count the header as line 1)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}:{number}: broken JSON line ({err.msg} at column {err.colno}); "
                        "fix or remove the line (one JSON object per line)."
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, found {row!r}.")
                rows.append((number, row))
        return rows
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), [])
        if not header:
            raise DataError(f"{path}: the file is empty; expected a header row with text,labels.")
        if sum(1 for line in path.open(encoding="utf-8-sig") if line.strip()) < 2:
            raise DataError(f"{path}: the file holds a header but no records.")
        table = datasets.load_dataset(
            "csv",
            data_files=str(path),
            split="train",
            delimiter=delimiter,
            keep_default_na=False,
            encoding="utf-8-sig",
            features=datasets.Features({name: datasets.Value("string") for name in header}),
        )
        return [(i + 2, row) for i, row in enumerate(table)]
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .tsv.")


def read_records(
    path: str | Path,
    fields: Fields = Fields(),
    labels: tuple[str, ...] | list[str] = LABELS,
    require_ids: bool = True,
    allow_non_arabic: bool = False,
) -> list[dict[str, Any]]:
    """Read and validate labelled records.

    Args:
        path: A .jsonl, .csv or .tsv file.
        fields: Names of the id, text, labels and document fields in the file.
        labels: Valid label names.
        require_ids: Demand `id` and `doc_id` (training data); evaluation data may omit them,
            and then gets `line-N` ids with one document per sentence.
        allow_non_arabic: Accept text with no Arabic letter.

    Returns:
        Records with the keys `id`, `text`, `labels`, `doc_id` and `line`.

    Raises:
        DataError: Missing file, broken line, missing field, empty or non-Arabic text, unknown
            label, or repeated id; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path in the config.")
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: the file holds no records.")
    required = [fields.text, fields.labels] + ([fields.id, fields.doc] if require_ids else [])
    records, seen = [], {}
    for number, row in rows:
        where = f"{path}:{number}"
        missing = [name for name in required if name not in row]
        if missing:
            raise DataError(
                f"{where}: missing field(s) {missing}; found {sorted(row)}. Add them, or point "
                "data.text_field / data.labels_field / data.id_field / data.doc_field at yours."
            )
        text = row[fields.text]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty text; remove the record or give it a sentence.")
        if not allow_non_arabic and not has_arabic(text):
            raise DataError(f"{where}: text {text[:60]!r} has no Arabic letter; remove the record.")
        found = _parse_labels(row[fields.labels], where)
        try:
            check_labels(found, where, labels)
        except ValueError as err:
            raise DataError(str(err)) from None
        record_id = str(row.get(fields.id) or f"line-{number}")
        if record_id in seen:
            raise DataError(f"{where}: id {record_id!r} repeats line {seen[record_id]}.")
        seen[record_id] = number
        records.append(
            {
                "id": record_id,
                "text": text.strip(),
                "labels": sorted(set(found), key=list(labels).index),
                "doc_id": str(row.get(fields.doc) or record_id),
                "line": number,
            }
        )
    return records


def label_matrix(records: list[dict[str, Any]], labels: list[str] | tuple[str, ...]) -> np.ndarray:
    """Multi-hot matrix (n_records, n_labels) of float32."""
    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(records), len(labels)), dtype=np.float32)
    for row, record in enumerate(records):
        for name in record["labels"]:
            if name in index:
                matrix[row, index[name]] = 1.0
    return matrix


def to_dataset(
    records: list[dict[str, Any]], labels: list[str] | tuple[str, ...]
) -> datasets.Dataset:
    """A `datasets.Dataset` with `id`, `text`, `doc_id` and a multi-hot `label_vector`."""
    matrix = label_matrix(records, labels)
    return datasets.Dataset.from_dict(
        {
            "id": [r["id"] for r in records],
            "text": [r["text"] for r in records],
            "doc_id": [r["doc_id"] for r in records],
            "label_vector": matrix.tolist(),
        }
    )
