"""Batch inference over article collections: the library behind `arabic-events predict`.

Input is read lazily, one document at a time: JSONL (optionally gzipped; `predict.id_field` and
`predict.text_field` name the fields), CSV, or a folder of `.txt` files (id = file stem).
Documents are split into sentences and gathered into chunks of about `chunk_sentences`
sentences; each chunk is scored in length-sorted batches, written whole-document at a time in
input order, flushed and fsynced. Memory stays bounded by the chunk size.

Output is one record per sentence (JSONL or CSV, by the output's extension)::

    {"doc_id": "AL-1", "doc_index": 0, "sentence": 2, "start": 118, "end": 190,
     "text": "...", "labels": ["airstrike"], "scores": {"airstrike": 0.97, ...},
     "acled": {"airstrike": "Air/drone strike"}, "plover": {...}, "cameo": {"airstrike": "195"}}

`start`/`end` are character offsets into the document text; `acled`/`plover`/`cameo` map each
predicted label to its code in `labels.ONTOLOGY` (labels without a code are left out).

Safety: output goes to `<output>.partial` and is renamed to `<output>` only when the job is
complete, so a crash never leaves a file at the output path. After each chunk,
`<output>.partial.progress` records how many bytes are safely on disk; `resume=True` truncates
the partial file there, reads the ids of the documents it holds and skips them, so an
interrupted job finishes with every document exactly once.

Scale: `shard=(i, n)` keeps the documents whose input position modulo n is i; run n processes,
one output each, and `merge_outputs` joins them in input order.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from arabic_events.config import PredictConfig
from arabic_events.data import has_arabic
from arabic_events.labels import ONTOLOGY
from arabic_events.sentences import Sentence, document_sentences

logger = logging.getLogger(__name__)

CHUNK_SENTENCES = 2048
"""Sentences scored (and written) together: the unit of progress, fsync and resume."""
ONTOLOGIES = ("acled", "plover", "cameo")
_BASE_COLUMNS = ("doc_id", "doc_index", "sentence", "start", "end", "text", "labels")

on_chunk_written: Callable[[int], None] | None = None
"""Called with the chunk number after each chunk is on disk (tests use it to crash a job)."""


class BadRecord(ValueError):
    """An input record that cannot be labelled; the message names the file and line."""


class PredictError(RuntimeError):
    """A job that cannot start or finish as asked (output exists, nothing to resume, ...)."""


@dataclass
class Document:
    """One input document.

    Attributes:
        id: Its id (`predict.id_field`, or the file stem in a folder of .txt files).
        text: Its text; sentence offsets point into it.
        index: Its position in the input, counting every record (bad ones too).
        where: File and line, for messages.
    """

    id: str
    text: str
    index: int
    where: str


@dataclass
class PredictSummary:
    """What a job did."""

    output: Path
    documents: int = 0
    """Documents labelled by this call."""
    sentences: int = 0
    """Sentences labelled by this call."""
    skipped: int = 0
    """Bad records skipped (logged with their line numbers)."""
    resumed: int = 0
    """Documents found complete in the partial output and skipped."""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `i/n` (0 <= i < n) into `(i, n)`.

    Raises:
        ValueError: Not of that form.
    """
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/2 and 1/2.") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n.")
    return i, n


def _document(row: Any, index: int, where: str, id_field: str, text_field: str) -> Document:
    if not isinstance(row, dict):
        raise BadRecord(f"{where}: expected a JSON object, found {type(row).__name__}.")
    missing = [name for name in (id_field, text_field) if name not in row]
    if missing:
        raise BadRecord(
            f"{where}: missing field(s) {missing}; found {sorted(row)}. Set predict.id_field / "
            "predict.text_field to the fields that hold them."
        )
    doc_id, text = row[id_field], row[text_field]
    if doc_id is None or str(doc_id).strip() == "":
        raise BadRecord(f"{where}: empty id in field {id_field!r}.")
    if not isinstance(text, str) or not text.strip():
        raise BadRecord(f"{where}: empty text in field {text_field!r}.")
    if not has_arabic(text):
        raise BadRecord(f"{where}: text {text[:60]!r} has no Arabic letter.")
    return Document(str(doc_id), text, index, where)


def _jsonl(path: Path, keep: Callable[[int], bool], cfg: PredictConfig) -> Iterator[Any]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        index = -1
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            index += 1
            if not keep(index):
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield BadRecord(f"{where}: not UTF-8 text.")
                continue
            except json.JSONDecodeError as err:
                yield BadRecord(f"{where}: invalid JSON ({err.msg} at column {err.colno}).")
                continue
            try:
                yield _document(row, index, where, cfg.id_field, cfg.text_field)
            except BadRecord as err:
                yield err


def _csv(path: Path, keep: Callable[[int], bool], cfg: PredictConfig) -> Iterator[Any]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # article bodies exceed the 128 KiB default
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        last = reader.line_num  # where the header ends; a record may span several lines
        for index, row in enumerate(reader):
            where, last = f"{path}:{last + 1}", reader.line_num
            if keep(index):
                try:
                    yield _document(row, index, where, cfg.id_field, cfg.text_field)
                except BadRecord as err:
                    yield err


def _txt_folder(path: Path, keep: Callable[[int], bool]) -> Iterator[Any]:
    for index, file in enumerate(sorted(path.glob("*.txt"))):
        if not keep(index):
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            yield BadRecord(f"{file}: not UTF-8 text.")
            continue
        try:
            yield _document({"id": file.stem, "text": text}, index, str(file), "id", "text")
        except BadRecord as err:
            yield err


def read_documents(
    path: str | Path, cfg: PredictConfig, shard: tuple[int, int] = (0, 1)
) -> Iterator[Document | BadRecord]:
    """Read documents lazily, yielding a `BadRecord` (not raising) for each unusable record.

    Args:
        path: A .jsonl / .jsonl.gz / .csv file, or a folder of .txt files.
        cfg: The predict section (id and text field names).
        shard: `(i, n)`: only the records whose position modulo n is i.

    Raises:
        FileNotFoundError: No such input.
        ValueError: An input type that is not supported.
    """
    path = Path(path)
    i, n = shard

    def keep(index: int) -> bool:
        return index % n == i

    if path.is_dir():
        return _txt_folder(path, keep)
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} not found.")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return _jsonl(path, keep, cfg)
    if name.endswith(".csv"):
        return _csv(path, keep, cfg)
    raise ValueError(
        f"input {str(path)!r}: unsupported type; use .jsonl, .jsonl.gz, .csv or a folder of .txt."
    )


# --------------------------------------------------------------------------- output formats


class OutputFormat:
    """Sentence records as JSONL lines or CSV rows (chosen by the file's extension).

    In CSV, `labels` is `a|b`, scores are `score_<label>` columns, and each ontology column is
    `label=code|label=code` (codes may hold `;`).
    """

    def __init__(self, path: str | Path, labels: list[str] | None = None) -> None:
        name = Path(path).name.lower()
        if not name.endswith((".jsonl", ".csv")):
            raise ValueError(f"output {str(path)!r}: use a .jsonl or .csv file name.")
        self.is_csv = name.endswith(".csv")
        self.labels = list(labels or [])

    def columns(self) -> list[str]:
        """CSV header."""
        return [*_BASE_COLUMNS, *(f"score_{name}" for name in self.labels), *ONTOLOGIES]

    def header(self) -> bytes:
        """Bytes that open a file (the CSV header; nothing for JSONL)."""
        return self.encode_rows([self.columns()]) if self.is_csv else b""

    def encode_rows(self, rows: list[list[Any]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")

    def encode(self, records: list[dict[str, Any]]) -> bytes:
        """Encode records (complete lines)."""
        if not self.is_csv:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        rows = []
        for r in records:
            maps = ["|".join(f"{k}={v}" for k, v in r[name].items()) for name in ONTOLOGIES]
            scores = [r["scores"][name] for name in self.labels]
            rows.append([*(r[c] for c in _BASE_COLUMNS[:-1]), "|".join(r["labels"]), *scores,
                         *maps])
        return self.encode_rows(rows)

    def read(self, path: str | Path) -> Iterator[dict[str, Any]]:
        """Read records back (a finished output, or the safe part of a partial one)."""
        with open(path, encoding="utf-8", newline="") as handle:
            if not self.is_csv:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)
                return
            reader = csv.DictReader(handle)
            labels = [c.removeprefix("score_") for c in reader.fieldnames or []
                      if c.startswith("score_")]
            for row in reader:
                yield _csv_record(row, labels)


def _csv_record(row: dict[str, str], labels: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"doc_id": row["doc_id"], "text": row["text"]}
    for key in ("doc_index", "sentence", "start", "end"):
        record[key] = int(row[key])
    record["labels"] = [name for name in row["labels"].split("|") if name]
    record["scores"] = {name: float(row[f"score_{name}"]) for name in labels}
    for name in ONTOLOGIES:
        pairs = [item.split("=", 1) for item in row[name].split("|") if item]
        record[name] = dict(pairs)
    return record


def sentence_records(
    doc: Document, sentences: list[tuple[int, Sentence]], probs: np.ndarray, names: list[list[str]],
    labels: list[str],
) -> list[dict[str, Any]]:
    """Output records of one document's sentences (scores rounded to 6 decimals)."""
    records = []
    for (index, s), row, found in zip(sentences, probs, names, strict=True):
        record = {
            "doc_id": doc.id, "doc_index": doc.index, "sentence": index, "start": s.start,
            "end": s.end, "text": s.text, "labels": found,
            "scores": {name: round(float(v), 6) for name, v in zip(labels, row, strict=True)},
        }
        for onto in ONTOLOGIES:
            record[onto] = {
                name: ONTOLOGY[name][onto] for name in found if ONTOLOGY.get(name, {}).get(onto)
            }
        records.append(record)
    return records


# ------------------------------------------------------------------ atomic, resumable output


class PartialOutput:
    """`<output>.partial`, written whole chunks at a time, renamed to `<output>` when complete.

    `<output>.partial.progress` holds the byte offset up to which the partial file is fsynced
    and the job it belongs to, so a resumed job continues exactly where the last chunk ended.
    """

    def __init__(self, output: str | Path, fmt: OutputFormat, job: dict[str, Any]) -> None:
        self.final = Path(output)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.progress = self.final.with_name(self.final.name + ".partial.progress")
        self.fmt, self.job = fmt, job
        self.handle: Any = None

    def open(self, resume: bool, overwrite: bool) -> set[str]:
        """Open for writing; with `resume`, return the ids of the documents already written.

        Raises:
            PredictError: The output exists (without `overwrite`), or an interrupted job is in
                the way (without `resume` or `overwrite`), or it was another job.
        """
        if self.final.exists() and not overwrite:
            raise PredictError(
                f"{self.final} exists already (a finished job); pass --overwrite to replace it "
                "or choose another --output."
            )
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists() and not (resume or overwrite):
            raise PredictError(
                f"{self.partial} holds an interrupted job: continue it with --resume, or pass "
                "--overwrite to start again."
            )
        if resume and self.partial.exists():
            return self._reopen()
        if resume:
            logger.warning("--resume: no interrupted job at %s; starting from the beginning",
                           self.partial)
        self.handle = open(self.partial, "wb")  # noqa: SIM115 (closed by commit/close)
        self.write(self.fmt.header())
        return set()

    def _reopen(self) -> set[str]:
        saved = json.loads(self.progress.read_text()) if self.progress.is_file() else {}
        if saved.get("job", self.job) != self.job:
            raise PredictError(
                f"{self.partial} belongs to another job ({saved['job']}, not {self.job}); "
                "resume with the same input, output and --shard, or pass --overwrite."
            )
        offset = int(saved.get("offset", 0))
        with open(self.partial, "r+b") as handle:
            dropped = handle.seek(0, os.SEEK_END) - offset
            handle.truncate(offset)
        if dropped:
            logger.info("dropped %d bytes written after the last completed chunk", dropped)
        done = {str(r["doc_id"]) for r in self.fmt.read(self.partial)} if offset else set()
        self.handle = open(self.partial, "ab")  # noqa: SIM115
        if offset == 0:
            self.write(self.fmt.header())
        return done

    def write(self, data: bytes) -> None:
        """Append whole records, make them durable, then record the new safe offset."""
        self.handle.write(data)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        tmp = self.progress.with_name(self.progress.name + ".tmp")
        tmp.write_text(json.dumps({"offset": self.handle.tell(), "job": self.job}))
        os.replace(tmp, self.progress)

    def commit(self) -> None:
        """Close and rename the complete file into place."""
        self.handle.close()
        os.replace(self.partial, self.final)
        self.progress.unlink(missing_ok=True)

    def close(self) -> None:
        """Close without committing (the partial file stays for --resume)."""
        if self.handle is not None and not self.handle.closed:
            self.handle.close()


# --------------------------------------------------------------------------- the job


def predict_file(
    classifier: Any,
    input_path: str | Path,
    output_path: str | Path,
    cfg: PredictConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] = (0, 1),
    chunk_sentences: int = CHUNK_SENTENCES,
    progress: bool = True,
) -> PredictSummary:
    """Label every sentence of every document of an input, streaming, into one output file.

    Args:
        classifier: An `EventClassifier`.
        input_path: JSONL (optionally .gz), CSV, or a folder of .txt files.
        output_path: A .jsonl or .csv file; written as `<output>.partial` until complete.
        cfg: The predict section: field names, `on_error`, `min_arabic_ratio`, `batch_size`.
        resume: Continue an interrupted job after its last completed chunk.
        overwrite: Replace an existing output (or an interrupted job's partial file).
        shard: `(i, n)`: label only documents whose input position modulo n is i.
        chunk_sentences: Sentences scored and written together (memory, fsync, resume unit).
        progress: Show a tqdm bar (sentences per second).

    Returns:
        A `PredictSummary`.

    Raises:
        BadRecord: A bad record when `cfg.on_error` is `fail` (the partial output stays, so
            the job can be resumed after the record is fixed).
        PredictError: See `PartialOutput.open`.
    """
    started = time.perf_counter()
    fmt = OutputFormat(output_path, classifier.labels)
    job = {"input": str(Path(input_path).resolve()), "shard": f"{shard[0]}/{shard[1]}"}
    out = PartialOutput(output_path, fmt, job)
    documents = read_documents(input_path, cfg, shard)
    done = out.open(resume, overwrite)
    summary = PredictSummary(output=Path(output_path))
    label = "predict" if shard[1] == 1 else f"predict shard {job['shard']}"
    bar = tqdm(unit="sent", desc=label, disable=not progress,
               dynamic_ncols=True)
    try:
        for chunk_number, chunk in enumerate(_chunks(documents, done, cfg, summary,
                                                     chunk_sentences), 1):
            out.write(_score_chunk(classifier, chunk, cfg.batch_size, fmt))
            sentences = sum(len(sents) for _, sents in chunk)
            summary.documents += len(chunk)
            summary.sentences += sentences
            bar.update(sentences)
            bar.set_postfix(docs=str(summary.documents), refresh=False)  # not "3e+4"
            if on_chunk_written is not None:
                on_chunk_written(chunk_number)
        out.commit()
    finally:
        out.close()
        bar.close()
    summary.seconds = time.perf_counter() - started
    logger.info(
        "%s: %d documents, %d sentences in %.1f s (%.1f sentences/s), %d bad records skipped, "
        "%d documents already done", output_path, summary.documents, summary.sentences,
        summary.seconds, summary.sentences / max(summary.seconds, 1e-9), summary.skipped,
        summary.resumed,
    )
    return summary


def _chunks(
    documents: Iterator[Document | BadRecord], done: set[str], cfg: PredictConfig,
    summary: PredictSummary, chunk_sentences: int,
) -> Iterator[list[tuple[Document, list[tuple[int, Sentence]]]]]:
    """Group documents (split into sentences) into chunks of about `chunk_sentences`."""
    seen: set[str] = set()
    chunk: list[tuple[Document, list[tuple[int, Sentence]]]] = []
    size = 0
    for doc in documents:
        if isinstance(doc, Document) and doc.id in seen:
            doc = BadRecord(f"{doc.where}: id {doc.id!r} repeats an earlier document.")
        if isinstance(doc, BadRecord):
            if cfg.on_error == "fail":
                raise doc
            logger.warning("skipped: %s", doc)
            summary.skipped += 1
            summary.problems.append(str(doc))
            continue
        seen.add(doc.id)
        if doc.id in done:
            summary.resumed += 1
            continue
        sentences, _ = document_sentences(doc.text, cfg.min_arabic_ratio)
        chunk.append((doc, sentences))
        size += len(sentences)
        if size >= chunk_sentences:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _score_chunk(
    classifier: Any, chunk: list[tuple[Document, list[tuple[int, Sentence]]]], batch_size: int,
    fmt: OutputFormat,
) -> bytes:
    """Score a chunk's sentences together (length-sorted) and encode its records in order."""
    texts = [s.text for _, sentences in chunk for _, s in sentences]
    probs = classifier.predict_scores(texts, batch_size)
    names = classifier.decide(probs)
    records, k = [], 0
    for doc, sentences in chunk:
        n = len(sentences)
        records += sentence_records(doc, sentences, probs[k : k + n], names[k : k + n],
                                    classifier.labels)
        k += n
    return fmt.encode(records)


# --------------------------------------------------------------------------- merging shards


def merge_outputs(
    shards: list[str | Path], output: str | Path, overwrite: bool = False
) -> int:
    """Merge shard outputs into one file in input order (by document position, then sentence).

    Args:
        shards: Finished outputs of `predict --shard i/n` (JSONL or CSV, mixed is fine).
        output: The merged .jsonl or .csv file, written atomically.
        overwrite: Replace an existing output.

    Returns:
        The number of sentence records written.

    Raises:
        PredictError: A shard that is missing or unfinished, or two shards holding the same
            document (shards of different jobs).
    """
    paths = [Path(p) for p in shards]
    for path in paths:
        if not path.is_file():
            hint = " (its job is unfinished: rerun it with --resume)" if path.with_name(
                path.name + ".partial").exists() else ""
            raise PredictError(f"shard output {path} not found{hint}.")
    streams = [_keyed(path, shard) for shard, path in enumerate(paths)]
    labels: list[str] = []
    for path in paths:
        sample = next(OutputFormat(path).read(path), None)
        if sample is not None:
            labels = list(sample["scores"])
            break
    out = PartialOutput(output, OutputFormat(output, labels), {"merge": [str(p) for p in paths]})
    out.open(resume=False, overwrite=overwrite)
    count, owner = 0, {}
    try:
        for (doc_index, _), shard, _, record in heapq.merge(*streams):
            if owner.setdefault(doc_index, shard) != shard:
                raise PredictError(
                    f"document {record['doc_id']!r} (input position {doc_index}) is in both "
                    f"{paths[owner[doc_index]]} and {paths[shard]}: shards of different jobs?"
                )
            out.handle.write(out.fmt.encode([record]))
            count += 1
        out.handle.flush()
        os.fsync(out.handle.fileno())
        out.commit()
    finally:
        out.close()
    logger.info("merged %d shard(s), %d sentences, into %s", len(paths), count, output)
    return count


def _keyed(path: Path, shard: int) -> Iterator[tuple[tuple[int, int], int, int, dict[str, Any]]]:
    """Records of one shard with their sort key (the counter keeps records out of ties)."""
    for seq, record in enumerate(OutputFormat(path).read(path)):
        yield (record["doc_index"], record["sentence"]), shard, seq, record
