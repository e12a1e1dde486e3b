"""Int8 kernels: per-channel weights, the oneDNN path with its fusions, and the portable one."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import BertConfig, BertModel

from arabic_events import quantization
from arabic_events.quantization import (
    DenseAddNorm,
    DynamicInt8Linear,
    FusedQKV,
    OneDNNInt8Linear,
    quantize_activation,
    quantize_encoder,
)

needs_onednn = pytest.mark.skipif(not quantization.onednn_int8_available(),
                                  reason="needs oneDNN int8 (x86 CPU with VNNI or AMX)")
KINDS = [pytest.param(OneDNNInt8Linear.from_linear, marks=needs_onednn, id="onednn"),
         pytest.param(DynamicInt8Linear, id="dynamic")]


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


def _tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, hidden_act="gelu")
    return BertModel(config).eval()


@pytest.mark.parametrize("make", KINDS)
def test_int8_linear_keeps_small_channels(make) -> None:
    """Per-channel weight scales: a row 1000x larger than the rest leaves them their precision."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 8)
    with torch.no_grad():
        linear.weight[0] *= 1000  # one huge row: a per-tensor scale would round the rest to 0
    x = torch.randn(3, 5, 64)
    expected = linear(x).detach()
    got = make(linear)(x)
    assert got.shape == expected.shape == (3, 5, 8)
    relative = (got - expected).norm(dim=(0, 1)) / expected.norm(dim=(0, 1))
    assert relative.max() < 0.03, relative


def test_quantize_activation_covers_the_range_and_zero() -> None:
    x = torch.tensor([[-1.0, 0.0, 0.5, 3.0]])
    codes, scale, zero_point = quantize_activation(x)
    assert codes.dtype == torch.uint8
    assert scale == pytest.approx(4.0 / 255)
    assert codes[0, 1] == zero_point  # 0.0 is exact
    assert codes.min() == 0 and codes.max() == 255
    restored = (codes.float() - zero_point) * scale
    assert (restored - x).abs().max() <= scale / 2 + 1e-6
    zeros, scale, zero_point = quantize_activation(torch.zeros(2, 3))
    assert scale == 1.0 and (zeros == zero_point).all()


@needs_onednn
def test_onednn_linear_fuses_gelu_and_handles_empty_input() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, 48)
    x = torch.randn(10, 32)
    plain, fused = OneDNNInt8Linear.from_linear(linear), OneDNNInt8Linear.from_linear(linear, True)
    torch.testing.assert_close(fused(x), torch.nn.functional.gelu(plain(x)), atol=1e-5, rtol=0)
    assert _relative_error(fused(x), torch.nn.functional.gelu(linear(x)).detach()) < 0.02
    assert fused(torch.empty(0, 7, 32)).shape == (0, 7, 48)


@needs_onednn
def test_onednn_linear_adds_the_residual_without_touching_it() -> None:
    torch.manual_seed(4)
    linear = torch.nn.Linear(32, 24)
    x, residual = torch.randn(2, 5, 32), torch.randn(2, 5, 24)
    kept = residual.clone()
    layer = OneDNNInt8Linear.from_linear(linear)
    torch.testing.assert_close(layer(x, residual=residual), layer(x) + residual,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(residual, kept, atol=0, rtol=0)


@needs_onednn
def test_fused_qkv_matches_separate_projections() -> None:
    torch.manual_seed(2)
    query, key, value = (torch.nn.Linear(32, 32) for _ in range(3))
    q, k, v = FusedQKV(query, key, value).slices()
    x, y = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    # one quantised input for all three: each part equals its own int8 layer on that input
    for part, linear in ((q, query), (k, key), (v, value)):
        torch.testing.assert_close(part(x), OneDNNInt8Linear.from_linear(linear)(x),
                                   atol=1e-5, rtol=0)
    # a different tensor is projected afresh, whatever was computed before
    q(x)
    torch.testing.assert_close(k(y), OneDNNInt8Linear.from_linear(key)(y), atol=1e-5, rtol=0)
    torch.testing.assert_close(v(x), OneDNNInt8Linear.from_linear(value)(x), atol=1e-5, rtol=0)


@needs_onednn
def test_fused_qkv_is_safe_across_threads() -> None:
    torch.manual_seed(3)
    layers = [torch.nn.Linear(16, 16) for _ in range(3)]
    fused = FusedQKV(*layers)
    inputs = [torch.randn(5, 16) for _ in range(4)]
    expected = [[OneDNNInt8Linear.from_linear(layer)(x) for layer in layers] for x in inputs]
    errors: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(50):
            for part in range(3):
                got = fused.project(inputs[index], part)
                if not torch.allclose(got, expected[index][part], atol=1e-5):
                    errors.append(f"thread {index} part {part}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


@pytest.mark.parametrize("kernel", [pytest.param("onednn", marks=needs_onednn), "dynamic"])
def test_quantize_encoder_keeps_outputs(kernel: str) -> None:
    model = _tiny_bert()
    ids = torch.randint(5, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        embeddings = model.embeddings(input_ids=ids)
    assert quantize_encoder(model, kernel) == kernel
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    if kernel == "onednn":
        layer = model.encoder.layer[0]
        assert isinstance(layer.attention.self.query.fused, FusedQKV)
        assert layer.intermediate.dense.gelu
        assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
        assert isinstance(layer.output, DenseAddNorm)
        assert isinstance(layer.attention.output, DenseAddNorm)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert _relative_error(out.last_hidden_state, expected) < 0.03
    # the residual is added into a new tensor: the hidden states handed out stay intact
    torch.testing.assert_close(out.hidden_states[0], embeddings)


def test_quantize_encoder_rejects_bad_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="choose one of"):
        quantize_encoder(_tiny_bert(), "fbgemm")
    monkeypatch.setattr(quantization, "cpu_supports_int8", lambda: False)
    assert not quantization.onednn_int8_available()
    assert quantize_encoder(_tiny_bert(), "auto") == "dynamic"
    with pytest.raises(ValueError, match="kernel='dynamic'"):
        quantize_encoder(_tiny_bert(), "onednn")
