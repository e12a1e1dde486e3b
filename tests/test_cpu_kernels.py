"""CPU kernels: int8 per-channel weights, the oneDNN bf16 and int8 paths with their fusions,
the row grid, and the portable fallbacks."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import BertConfig, BertModel

from arabic_events import cpu_kernels
from arabic_events.cpu_kernels import (
    DenseAddNorm,
    DynamicInt8Linear,
    FusedQKV,
    OneDNNBf16Linear,
    OneDNNInt8Linear,
    activation_range,
    calibrate_feed_forward,
    grid_rows,
    lower_encoder,
    quantize_activation,
    quantize_encoder,
)

needs_onednn = pytest.mark.skipif(not cpu_kernels.onednn_available("int8"),
                                  reason="needs oneDNN int8 (x86 CPU with VNNI or AMX)")
needs_onednn_bf16 = pytest.mark.skipif(not cpu_kernels.onednn_available("bf16"),
                                       reason="needs oneDNN bf16 (x86 CPU with AVX512-BF16/AMX)")
KINDS = [pytest.param(OneDNNInt8Linear.from_linear, marks=needs_onednn, id="onednn"),
         pytest.param(DynamicInt8Linear, id="portable")]
ONEDNN = [pytest.param(OneDNNInt8Linear, marks=needs_onednn, id="int8"),
          pytest.param(OneDNNBf16Linear, marks=needs_onednn_bf16, id="bf16")]
TOLERANCE = {OneDNNInt8Linear: 1e-5, OneDNNBf16Linear: 2e-2}
"""Same kernel, same input, fused vs unfused: int8 differs by float rounding; bf16 rounds the
unfused intermediate to bfloat16 once more (values about 1)."""


def _input(kind: type, *shape: int) -> torch.Tensor:
    x = torch.randn(*shape)
    return x.to(torch.bfloat16) if kind is OneDNNBf16Linear else x


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


def test_quantize_activation_saturates_outside_a_given_range() -> None:
    x = torch.tensor([[-1.0, 0.0, 0.5, 30.0]])
    codes, scale, zero_point = quantize_activation(x, -1.0, 1.0)
    assert scale == pytest.approx(2.0 / 255)
    assert codes[0, 3] == 255  # 30 saturates at the top of [-1, 1]
    restored = (codes.float() - zero_point) * scale
    assert (restored[0, :3] - x[0, :3]).abs().max() <= scale / 2 + 1e-6


def test_activation_range_leaves_out_outlier_columns() -> None:
    torch.manual_seed(8)
    x = torch.randn(64, 256)
    low, high, outliers = activation_range(x)
    assert outliers.numel() == 0
    assert (low, high) == (float(x.min()), float(x.max()))
    x[:, 17] *= 40  # one column far above the rest, in every row
    x[5, 200] = -90.0  # and one in a row the 1-in-8 sample does not look at
    low, high, outliers = activation_range(x)
    assert outliers.tolist() == [17]
    others = torch.cat([x[:, :17], x[:, 18:]], dim=1)
    assert (low, high) == (float(others.min()), float(others.max()))  # exact, -90 included
    x[:, 99] *= 60
    assert sorted(activation_range(x)[2].tolist()) == [17, 99]  # up to 256 // 128 columns
    assert activation_range(x, max_outliers=1)[2].numel() == 0  # 99 and 17: no clear gap
    assert activation_range(x, ratio=1000.0)[2].numel() == 0


@needs_onednn
def test_int8_linear_adds_back_what_outlier_columns_lose() -> None:
    """A column 50x the others: the layer stays close to float32; one range for all would not."""
    torch.manual_seed(9)
    linear = torch.nn.Linear(256, 32)
    x = torch.randn(40, 256)
    x[:, 3] *= 50
    residual = torch.randn(40, 32)
    layer = OneDNNInt8Linear.from_linear(linear)
    whole_range = OneDNNInt8Linear.from_linear(linear)
    whole_range.split_outliers = False
    expected = linear(x).detach()
    split, unsplit = layer(x), whole_range(x)
    assert _relative_error(split, expected) < 0.01 < _relative_error(unsplit, expected)
    assert _relative_error(split, expected) * 3 < _relative_error(unsplit, expected)
    kept = residual.clone()
    torch.testing.assert_close(layer(x, residual=residual), split + residual, atol=1e-4, rtol=0)
    torch.testing.assert_close(residual, kept, atol=0, rtol=0)
    gelu = OneDNNInt8Linear.from_linear(linear, gelu=True)
    assert not gelu.split_outliers  # GELU must follow the added excess: no fused form for that
    torch.testing.assert_close(gelu(x), torch.nn.functional.gelu(unsplit), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="residual add after GELU"):
        gelu(x, residual=residual)


@pytest.mark.parametrize("kind", ONEDNN)
def test_onednn_linear_fuses_gelu_and_handles_empty_input(kind: type) -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, 48)
    x = _input(kind, 10, 32)
    plain, fused = kind.from_linear(linear), kind.from_linear(linear, gelu=True)
    expected = torch.nn.functional.gelu(plain(x).float())
    torch.testing.assert_close(fused(x).float(), expected, atol=TOLERANCE[kind], rtol=0)
    exact = torch.nn.functional.gelu(linear(x.float())).detach()
    assert _relative_error(fused(x).float(), exact) < 0.02
    assert fused(_input(kind, 0, 7, 32)).shape == (0, 7, 48)


@pytest.mark.parametrize("kind", ONEDNN)
def test_onednn_linear_adds_the_residual_without_touching_it(kind: type) -> None:
    torch.manual_seed(4)
    linear = torch.nn.Linear(32, 24)
    x, residual = _input(kind, 2, 5, 32), _input(kind, 2, 5, 24)
    kept = residual.clone()
    layer = kind.from_linear(linear)
    torch.testing.assert_close(layer(x, residual=residual).float(),
                               (layer(x).float() + residual.float()),
                               atol=TOLERANCE[kind], rtol=0)
    torch.testing.assert_close(residual, kept, atol=0, rtol=0)


def test_grid_rows_bounds_the_shapes_and_the_padding() -> None:
    sizes = [grid_rows(rows) for rows in range(1, 4097)]
    assert all(size >= rows and (size - rows) <= max(7, rows / 16)
               for rows, size in enumerate(sizes, start=1))
    assert grid_rows(1024) == 1024 and grid_rows(1000) == 1024 and grid_rows(961) == 992
    assert len(set(sizes[512:1023])) == 16  # rows 513-1023: 16 shapes (544, 576, ..., 1024)


@pytest.mark.parametrize("kind", ONEDNN)
def test_onednn_linear_pads_rows_to_the_grid_without_changing_results(kind: type) -> None:
    """Row i of the output depends on row i of the input only, whatever the padding."""
    torch.manual_seed(6)
    layer = kind.from_linear(torch.nn.Linear(16, 8))
    x = _input(kind, 300, 16).clamp(-1, 1)
    x[0, :2] = torch.tensor([4.0, -4.0])  # int8: every prefix has the same per-tensor range
    whole = layer(x)
    for rows in (1, 9, 257, 299):
        part = x[:rows]
        assert grid_rows(rows) != rows or rows == 1
        got = layer(part)
        assert got.shape == (rows, 8)
        torch.testing.assert_close(got.float(), whole[:rows].float(), atol=TOLERANCE[kind],
                                   rtol=0)


@pytest.mark.parametrize("kind", ONEDNN)
def test_fused_qkv_matches_separate_projections(kind: type) -> None:
    torch.manual_seed(2)
    query, key, value = (torch.nn.Linear(32, 32) for _ in range(3))
    q, k, v = FusedQKV(query, key, value, kind).slices()
    x, y = _input(kind, 4, 6, 32), _input(kind, 4, 6, 32)
    # one (quantised) input for all three: each part equals its own layer on that input
    for part, linear in ((q, query), (k, key), (v, value)):
        torch.testing.assert_close(part(x), kind.from_linear(linear)(x), atol=1e-5, rtol=0)
    # a different tensor is projected afresh, whatever was computed before
    q(x)
    torch.testing.assert_close(k(y), kind.from_linear(key)(y), atol=1e-5, rtol=0)
    torch.testing.assert_close(v(x), kind.from_linear(value)(x), atol=1e-5, rtol=0)


@needs_onednn
def test_fused_qkv_is_safe_across_threads() -> None:
    torch.manual_seed(3)
    layers = [torch.nn.Linear(16, 16) for _ in range(3)]
    fused = FusedQKV(*layers, OneDNNInt8Linear)
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


def _tiny_bert_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny BERT and a batch of three sequences, the second one padded."""
    model = _tiny_bert()
    ids = torch.randint(5, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return model, ids, mask


@pytest.mark.parametrize("kernel", [pytest.param("onednn", marks=needs_onednn), "portable"])
def test_quantize_encoder_keeps_outputs(kernel: str) -> None:
    model, ids, mask = _tiny_bert_batch()
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


def _bert_with_an_outlier_column(column: int = 5) -> BertModel:
    """A tiny BERT whose first feed-forward GELU output has one column 30x the others."""
    model = _tiny_bert(seed=11)
    dense = model.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        dense.weight[column] *= 30
        dense.bias[column] = 40.0
    return model


def test_calibrate_feed_forward_records_ranges_and_outlier_columns() -> None:
    model = _bert_with_an_outlier_column()
    ids = torch.randint(5, 300, (6, 12))
    outputs = []
    hooks = [layer.intermediate.register_forward_hook(lambda m, a, out: outputs.append(out))
             for layer in model.encoder.layer]
    ranges = calibrate_feed_forward(model, lambda: model(input_ids=ids))
    for hook in hooks:
        hook.remove()
    assert [r["outliers"] for r in ranges] == [[5], []]
    first = torch.cat([outputs[0][..., :5], outputs[0][..., 6:]], dim=-1)
    assert ranges[0]["high"] == pytest.approx(float(first.max()))
    assert ranges[1]["high"] == pytest.approx(float(outputs[1].max()))
    assert -0.2 < ranges[1]["low"] <= 0  # GELU's minimum is -0.17
    with pytest.raises(ValueError, match="no tokens"):
        calibrate_feed_forward(model, lambda: None)


@needs_onednn
def test_static_feed_forward_keeps_outputs_and_the_outlier_column() -> None:
    """uint8 hand-over between the feed-forward GEMMs, calibrated on the same kind of input."""
    torch.manual_seed(12)
    reference = _bert_with_an_outlier_column()
    ids, mask = torch.randint(5, 300, (8, 16)), torch.ones(8, 16, dtype=torch.long)
    mask[3:, 10:] = 0
    ranges = calibrate_feed_forward(reference, lambda: reference(input_ids=ids[:4]))
    expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state.detach()
    static, dynamic = _bert_with_an_outlier_column(), _bert_with_an_outlier_column()
    assert lower_encoder(static, "int8", "onednn", feed_forward=ranges) == "onednn"
    lower_encoder(dynamic, "int8", "onednn")
    names = {type(m).__name__ for m in static.modules()}
    assert {"_StaticIntermediate", "_StaticOutput"} <= names
    assert "_StaticIntermediate" not in {type(m).__name__ for m in dynamic.modules()}
    block = static.encoder.layer[0].output.block
    assert block.up_outliers[1].numel() == 1 and block.down._columns is None  # no unused copy
    with torch.inference_mode():
        got = static(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = dynamic(input_ids=ids, attention_mask=mask).last_hidden_state
    assert _relative_error(got, expected) < 0.05
    assert _relative_error(got, expected) < 2 * _relative_error(plain, expected)
    empty = static.encoder.layer[0].output(static.encoder.layer[0].intermediate(
        torch.zeros(0, 3, 64)), torch.zeros(0, 3, 64))
    assert empty.shape == (0, 3, 64)


@needs_onednn
def test_lower_encoder_rejects_a_calibration_of_another_model() -> None:
    model = _tiny_bert()
    ranges = calibrate_feed_forward(model, lambda: model(input_ids=torch.randint(5, 300, (2, 8))))
    with pytest.raises(ValueError, match="another model"):
        lower_encoder(_tiny_bert(), "int8", "onednn", feed_forward=ranges[:1])
    wrong = [dict(r, outliers=[4096]) for r in ranges]
    with pytest.raises(ValueError, match="another model"):
        lower_encoder(_tiny_bert(), "int8", "onednn", feed_forward=wrong)
    lower_encoder(_tiny_bert(), "bf16", "portable", feed_forward=ranges[:1])  # not int8: unused


@pytest.mark.parametrize("kernel", [pytest.param("onednn", marks=needs_onednn_bf16),
                                    "portable"])
def test_lower_encoder_bf16_keeps_outputs(kernel: str) -> None:
    model, ids, mask = _tiny_bert_batch()
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert lower_encoder(model, "bf16", kernel) == kernel
    assert next(model.parameters()).dtype == torch.bfloat16
    if kernel == "onednn":
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        layer = model.encoder.layer[1]
        assert isinstance(layer.attention.self.query.fused.linear, OneDNNBf16Linear)
        assert isinstance(layer.output, DenseAddNorm) and layer.intermediate.dense.gelu
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.dtype == torch.bfloat16
    assert _relative_error(out.float(), expected) < 0.03


def test_lower_encoder_rejects_bad_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="choose one of"):
        quantize_encoder(_tiny_bert(), "fbgemm")
    with pytest.raises(ValueError, match="precision='fp16'"):
        lower_encoder(_tiny_bert(), "fp16")
    monkeypatch.setattr(cpu_kernels, "cpu_supports_int8", lambda: False)
    monkeypatch.setattr(cpu_kernels, "cpu_supports_bf16", lambda: False)
    for precision in ("int8", "bf16"):
        assert not cpu_kernels.onednn_available(precision)
        assert lower_encoder(_tiny_bert(), precision, "auto") == "portable"
        with pytest.raises(ValueError, match="kernel='portable'"):
            lower_encoder(_tiny_bert(), precision, "onednn")


def test_config_offers_the_same_kernels() -> None:
    from arabic_events.config import _CHOICES

    assert _CHOICES["predict.kernel"] == cpu_kernels.KERNELS
