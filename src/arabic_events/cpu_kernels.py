"""Fast bf16 and int8 inference on the CPU: oneDNN kernels with fused transformer blocks.

`lower_encoder(encoder, precision, kernel)` rewrites an encoder's Linear layers in place for
one of two precisions, with one of two kernels:

- `onednn` (torch built with oneDNN, on x86 CPUs with the instructions: AVX512-BF16 or AMX for
  bf16, VNNI or AMX int8 for int8): each Linear becomes one oneDNN GEMM on weights packed once
  for the CPU's matrix units: `torch.ops.mkldnn._linear_pointwise` for bf16 (the kernel
  torch's inductor uses after weight prepacking; plain `F.linear` reorders the bf16 weights on
  every call) and `torch.ops.onednn.qlinear_pointwise` for int8 (the kernel inductor lowers
  int8 linears to), both called eagerly. BERT-family encoders get three fusions on top:
  query, key and value become one GEMM on one input (`FusedQKV`), the feed-forward GELU runs
  in the first feed-forward GEMM's epilogue, and the residual is added inside the GEMM before
  each LayerNorm (`DenseAddNorm`). In three benchmark runs on 2 Xeon cores with AMX these
  kernels ran 1.09-1.30x as fast as the `portable` ones, bf16 and int8 alike, with label
  agreement with fp32 within 0.001 of theirs (benchmarks/results/inference-2026-12-06.md).
- `portable` (everywhere else): bf16 is the encoder cast to bfloat16 (`F.linear`); int8 is
  `DynamicInt8Linear`, torch's `quantized.linear_dynamic` on prepacked per-channel weights.
  Where an x86 CPU lacks VNNI, int8 activations use 7 bits: u8 x s8 products summed in int16
  can saturate on AVX2.

Int8 weights are quantised once, symmetrically per output channel; activations on every call,
per tensor, to uint8 over their actual range (dynamic quantisation). The oneDNN kernel leaves a
batch's outlier feature columns out of that range and adds what they lose back in float32
(`activation_range`, `OneDNNInt8Linear`): on the offline e5-small, whose hidden states carry
one such column per layer, that lifted label agreement with fp32 from 0.989 to 0.996. Given
the feed-forward blocks' calibrated ranges (`calibrate_feed_forward`; a run directory's
`int8_calibration.json`), the one activation that is not quantised per call is the GELU
output: the first feed-forward GEMM writes it as uint8 codes and the second reads them
(`StaticFeedForward`), the largest activation of a layer never written in float32.
"""

from __future__ import annotations

import platform
import threading
import warnings
from collections.abc import Callable

import torch

from arabic_events.modeling import cpu_supports_bf16, cpu_supports_int8

KERNELS = ("auto", "onednn", "portable")
PRECISIONS = ("bf16", "int8")
FUSABLE_ATTENTION = frozenset({
    "BertSelfAttention", "RobertaSelfAttention", "XLMRobertaSelfAttention",
    "CamembertSelfAttention", "ElectraSelfAttention",
})
"""Attention classes (transformers 5) known to call query, key and value once each on the same
tensor and only to split the last dimension of their outputs: `FusedQKV` relies on both."""
FUSABLE_FEED_FORWARD = frozenset({
    "BertIntermediate", "RobertaIntermediate", "XLMRobertaIntermediate",
    "CamembertIntermediate", "ElectraIntermediate",
})
"""Feed-forward classes computing `intermediate_act_fn(dense(x))`."""
FUSABLE_RESIDUAL = frozenset({
    "BertSelfOutput", "BertOutput", "RobertaSelfOutput", "RobertaOutput",
    "XLMRobertaSelfOutput", "XLMRobertaOutput", "CamembertSelfOutput", "CamembertOutput",
    "ElectraSelfOutput", "ElectraOutput",
})
"""Output blocks computing `LayerNorm(dropout(dense(x)) + residual)`."""


def onednn_available(precision: str) -> bool:
    """True where the `onednn` kernel runs `precision`: the torch op and the CPU instructions."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if precision == "int8":
            torch.ops.onednn.qlinear_pointwise  # noqa: B018 - raises when torch lacks the op
            return cpu_supports_int8()
        return (cpu_supports_bf16() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                and callable(torch.ops.mkldnn._reorder_linear_weight))
    except (AttributeError, RuntimeError):
        return False


def _weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights and their float32 scales."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-8)
    return torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


def grid_rows(rows: int) -> int:
    """`rows` rounded up to a grid of 16 sizes per octave (at most 1/16 more, at least 8).

    oneDNN compiles a kernel for every GEMM shape it meets (about 12 ms for bf16 on AMX, against
    2 ms to run a 1,000 x 768 x 3,072 GEMM); batches of sentences give a new row count almost
    every time, so over a few thousand sentences compiling took a third of the bf16 time.
    Padding the rows to this grid bounds the shapes to a few per octave.
    """
    step = max(8, 1 << max(0, rows.bit_length() - 5))
    return -(-rows // step) * step


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` (2-D) with zero rows appended up to `rows`."""
    if x.shape[0] == rows:
        return x
    return torch.nn.functional.pad(x, (0, 0, 0, rows - x.shape[0]))


OUTLIER_RATIO = 2.0
"""A column is an outlier when its largest magnitude exceeds this multiple of the largest
magnitude among the columns that are not candidates (see `activation_range`)."""


def activation_range(x: torch.Tensor, ratio: float = OUTLIER_RATIO,
                     max_outliers: int | None = None) -> tuple[float, float, torch.Tensor]:
    """The range to quantise a 2-D activation over, and the outlier columns left out of it.

    Transformer activations often carry a few feature columns far larger than the rest (in the
    offline e5-small, one column of each feed-forward output reaches 10-70 where the others stay
    under 7). One per-tensor range stretched over them leaves the other columns a few codes each.
    The outliers are the columns, among the `max_outliers` largest (default in_features // 128,
    at least 1), whose largest magnitude exceeds `ratio` x that of the next largest column
    outside them. They are looked for in every 8th row (a full pass per column costs twice the
    one-pass range); where there are some, the range is that of the other columns, exactly,
    and `OneDNNInt8Linear` adds their clipped excess back in float32, as LLM.int8() does.

    Returns:
        `(low, high, outliers)`: the range (0 included) and the outlier column indices (empty
        where there are none).
    """
    sample = x[::8]
    outliers = outlier_columns(torch.maximum(sample.amax(0), -sample.amin(0)), ratio,
                               max_outliers)
    if not outliers.numel():
        low, high = torch.aminmax(x)
    else:
        low = x.amin(0).index_fill_(0, outliers, 0.0).min()
        high = x.amax(0).index_fill_(0, outliers, 0.0).max()
    return min(float(low), 0.0), max(float(high), 0.0), outliers


def outlier_columns(magnitude: torch.Tensor, ratio: float = OUTLIER_RATIO,
                    max_outliers: int | None = None) -> torch.Tensor:
    """Indices of the columns, among the `max_outliers` largest `magnitude`s (default
    len // 128, at least 1), whose magnitude exceeds `ratio` x the next largest outside them."""
    limit = max(1, magnitude.numel() // 128) if max_outliers is None else max_outliers
    if magnitude.numel() <= limit:
        return magnitude[:0].long()
    top = torch.topk(magnitude, limit + 1)
    return top.indices[:limit][top.values[:limit] > ratio * top.values[limit]]


def quantize_activation(x: torch.Tensor, low: float | None = None,
                        high: float | None = None) -> tuple[torch.Tensor, float, int]:
    """uint8 codes of a float32 tensor over `[low, high]` (default: its range; 0 included), with
    scale and zero point. Values outside the range saturate at code 0 or 255."""
    if low is None or high is None:
        low, high = (float(v) for v in torch.aminmax(x))
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    zero_point = min(255, max(0, round(-low / scale)))
    with warnings.catch_warnings():  # quantised tensors are deprecated in favour of torchao
        warnings.simplefilter("ignore")
        quantised = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    # the same bytes as a plain uint8 tensor, without the copy `int_repr()` makes
    codes = torch.empty(0, dtype=torch.uint8).set_(
        quantised.untyped_storage(), 0, quantised.shape, quantised.stride())
    return codes, scale, zero_point


class OneDNNInt8Linear(torch.nn.Module):
    """A float Linear layer (optionally followed by exact GELU) run as one oneDNN int8 GEMM.

    Float32 in, float32 out: the weights are quantised once per output channel, the input on
    every call per tensor; bias, scales, GELU and a residual add run in the GEMM's epilogue.
    Without GELU, the input's range is that of its ordinary columns (`activation_range`):
    outlier columns, where a batch has them, saturate, and their excess is added back through
    the residual slot as a small float32 product (`excess @ W[:, outliers].T`), for which the
    int8 weights are also kept unpacked. On the offline e5-small (1,000 corpus sentences) this
    moved label agreement with fp32 from 0.9886 to 0.9958 and made its int8 about a quarter
    slower (batches with outliers take two more passes over the input and a float32 product);
    on the AraBERT-sized benchmark model, which has no outlier columns, it costs about 3%.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False,
                 split_outliers: bool = True):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        codes, self.weight_scales = _weight_int8(weight)
        self.weight_zero_points = torch.zeros(self.out_features, dtype=torch.long)
        self._packed = torch.ops.onednn.qlinear_prepack(codes, None)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.gelu = gelu
        # GELU must follow the excess, and oneDNN has no add-then-GELU epilogue: the input of a
        # GELU layer is quantised over its whole range instead
        self.split_outliers = split_outliers and not gelu
        self._columns = codes.t().contiguous() if self.split_outliers else None

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, gelu: bool = False) -> OneDNNInt8Linear:
        return cls(linear.weight, linear.bias, gelu)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`gelu?(x @ W.T + b)`, plus `residual` (same shape as the output) when given."""
        if residual is not None and self.gelu:
            raise ValueError("a residual add after GELU is not a fused pattern")
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float().contiguous()
        if flat.shape[0] == 0:
            return flat.new_zeros(*leading, self.out_features)
        n, rows = flat.shape[0], grid_rows(flat.shape[0])
        low, high, outliers = (activation_range(flat) if self.split_outliers
                               else (None, None, ()))
        codes, scale, zero_point = quantize_activation(flat, low, high)
        codes = _pad_rows(codes, rows)
        other = None
        if len(outliers):  # other = residual + excess @ W[:, outliers].T, padded to `rows`
            clipped = flat[:, outliers]
            excess = clipped - clipped.clamp(-zero_point * scale, (255 - zero_point) * scale)
            columns = self._columns[outliers].float() * self.weight_scales
            other = flat.new_empty(rows, self.out_features)
            other[n:] = 0
            if residual is None:
                torch.mm(excess, columns, out=other[:n])
            else:
                torch.addmm(residual.reshape(n, self.out_features).float(), excess, columns,
                            out=other[:n])
        elif residual is not None:
            other = _pad_rows(residual.reshape(n, self.out_features).float().contiguous(), rows)
        if other is None:
            post_op, algorithm = ("gelu", "none") if self.gelu else ("none", "")
            out = torch.ops.onednn.qlinear_pointwise(
                codes, scale, zero_point, self._packed, self.weight_scales,
                self.weight_zero_points, self.bias, 1.0, 0, torch.float32, post_op, [],
                algorithm)[:n]
        else:  # "add" writes a new tensor ("sum" would overwrite `other` in place)
            out = torch.ops.onednn.qlinear_pointwise.binary(
                codes, scale, zero_point, self._packed, self.weight_scales,
                self.weight_zero_points, other, self.bias, 1.0, 0, torch.float32, 1.0, 0,
                "add", 1.0, "none", [], "")[:n]
        return out.reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        gelu = ", gelu" if self.gelu else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{gelu}"


class OneDNNBf16Linear(torch.nn.Module):
    """A Linear layer (optionally followed by exact GELU) run as one oneDNN bf16 GEMM.

    bfloat16 in, bfloat16 out, float32 accumulation; the weights are reordered once into the
    blocked layout of the CPU's matrix units; bias, GELU and a residual add run in the GEMM's
    epilogue, before the single rounding to bfloat16.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self._packed = torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().to(torch.bfloat16).contiguous(), None)
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16).contiguous()
        self.gelu = gelu

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, gelu: bool = False) -> OneDNNBf16Linear:
        return cls(linear.weight, linear.bias, gelu)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`gelu?(x @ W.T + b)`, plus `residual` (same shape as the output) when given."""
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if flat.shape[0] == 0:
            return flat.new_zeros(*leading, self.out_features)
        rows = grid_rows(flat.shape[0])
        padded = _pad_rows(flat, rows)
        if residual is None:
            post_op, algorithm = ("gelu", "none") if self.gelu else ("none", "")
            out = torch.ops.mkldnn._linear_pointwise(padded, self._packed, self.bias, post_op,
                                                     [], algorithm)
        else:  # "add" writes a new tensor and leaves the residual as it was
            if self.gelu:
                raise ValueError("a residual add after GELU is not a fused pattern")
            other = residual.reshape(-1, self.out_features).to(torch.bfloat16).contiguous()
            out = torch.ops.mkldnn._linear_pointwise.binary(padded, _pad_rows(other, rows),
                                                            self._packed, self.bias, "add")
        return out[: flat.shape[0]].reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        gelu = ", gelu" if self.gelu else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{gelu}, bf16"


class DenseAddNorm(torch.nn.Module):
    """`LayerNorm(dense(x) + residual)` with the residual added inside the GEMM.

    Replaces a BERT-family output block (`BertSelfOutput`, `BertOutput`) at inference, where
    its dropout is the identity. `linear` is `OneDNNInt8Linear` or `OneDNNBf16Linear`.
    """

    def __init__(self, block: torch.nn.Module, linear: type[torch.nn.Module]) -> None:
        super().__init__()
        self.dense = linear.from_linear(block.dense)
        self.LayerNorm = block.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states, residual=input_tensor))


class FusedQKV:
    """One GEMM for an attention block's query, key and value projections.

    `slices()` returns three modules that replace `query`, `key` and `value`. The first one
    called with a tensor computes all three projections; the other two return their part of
    that output when called with the same tensor object (else they recompute). The shared
    result is kept per thread, so concurrent forwards on one model stay correct.
    """

    def __init__(self, query: torch.nn.Linear, key: torch.nn.Linear, value: torch.nn.Linear,
                 linear: type[torch.nn.Module]) -> None:
        linears = (query, key, value)
        biases = [layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
                  for layer in linears]
        self.linear = linear(torch.cat([layer.weight for layer in linears]), torch.cat(biases))
        self.bounds = [0, query.out_features, query.out_features + key.out_features,
                       self.linear.out_features]
        self._local = threading.local()

    def project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        state = self._local
        if getattr(state, "input", None) is not x:
            state.input, state.output, state.served = x, self.linear(x), 0
        output = state.output[..., self.bounds[part]:self.bounds[part + 1]]
        state.served += 1
        if state.served == 3:  # all three parts handed out: drop the references
            state.input = state.output = None
        return output

    def slices(self) -> list[torch.nn.Module]:
        return [_QKVSlice(self, part) for part in range(3)]


class _QKVSlice(torch.nn.Module):
    def __init__(self, fused: FusedQKV, part: int) -> None:
        super().__init__()
        self.fused, self.part = fused, part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.project(x, self.part)

    def extra_repr(self) -> str:
        return f"part={'qkv'[self.part]} of a fused GEMM"


def calibrate_feed_forward(module: torch.nn.Module, run: Callable[[], object],
                           ratio: float = OUTLIER_RATIO) -> list[dict]:
    """The range of every feed-forward GELU output under `module` while `run()` runs.

    For `lower_encoder(..., feed_forward=...)`: hooks on the BERT-family feed-forward blocks
    (in module order) record each output column's extremes, and `outlier_columns` picks the
    outliers among them (as `activation_range` does per batch). Call it on the float model
    (bf16 autocast is fine), with sentences like those it will label.

    Returns:
        One `{"low", "high", "outliers"}` per block: the range of its ordinary columns and the
        indices of the outlier columns.
    """
    blocks = [child for child in module.modules()
              if type(child).__name__ in FUSABLE_FEED_FORWARD]
    extremes: list[list[torch.Tensor | None]] = [[None, None] for _ in blocks]

    def record(index: int):
        def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
            flat = output.detach().float().reshape(-1, output.shape[-1])
            if not flat.shape[0]:
                return
            low, high = flat.amin(0), flat.amax(0)
            seen = extremes[index]
            seen[0] = low if seen[0] is None else torch.minimum(seen[0], low)
            seen[1] = high if seen[1] is None else torch.maximum(seen[1], high)
        return hook

    handles = [block.register_forward_hook(record(i)) for i, block in enumerate(blocks)]
    try:
        with torch.inference_mode():
            run()
    finally:
        for handle in handles:
            handle.remove()
    ranges = []
    for low, high in extremes:
        if low is None:
            raise ValueError("calibration saw no tokens: give it at least one sentence")
        outliers = outlier_columns(torch.maximum(high, -low), ratio)
        ordinary = torch.ones_like(low, dtype=torch.bool)
        ordinary[outliers] = False
        ranges.append({"low": min(float(low[ordinary].min()), 0.0),
                       "high": max(float(high[ordinary].max()), 0.0),
                       "outliers": sorted(int(j) for j in outliers)})
    return ranges


class StaticFeedForward:
    """A feed-forward block (`x -> GELU(x W1 + b1) W2 + b2`) whose two int8 GEMMs hand over uint8.

    With a calibrated range for the GELU output, the first GEMM writes uint8 codes in its
    epilogue and the second reads them: no float32 intermediate (the widest activation of a
    BERT layer, 4x the hidden size) is written, scanned for its range or quantised. Calibrated
    outlier columns are split off at load time: their rows of W1 run in float32 beside the
    int8 GEMM, and their contribution through W2 joins the residual, so the codes cover the
    ordinary columns only. GELU outputs beyond the calibrated range saturate.

    `modules()` returns the two replacements for the block's intermediate and output modules.
    """

    def __init__(self, intermediate: torch.nn.Module, output: torch.nn.Module,
                 calibration: dict) -> None:
        up, down = intermediate.dense, output.dense
        outliers = sorted(int(j) for j in calibration["outliers"])
        excluded = set(outliers)
        ordinary = [j for j in range(up.out_features) if j not in excluded]
        bias = up.bias if up.bias is not None else torch.zeros(up.out_features)
        low, high = min(float(calibration["low"]), 0.0), max(float(calibration["high"]), 0.0)
        if not high > low:
            raise ValueError(f"feed-forward calibration {calibration!r}: an empty range")
        self.scale = (high - low) / 255
        self.zero_point = min(255, max(0, round(-low / self.scale)))
        self.up = OneDNNInt8Linear(up.weight[ordinary], bias[ordinary], gelu=True)
        self.down = OneDNNInt8Linear(down.weight[:, ordinary], down.bias, split_outliers=False)
        self.up_outliers = (up.weight[outliers].detach().float().t().contiguous(),
                            bias[outliers].detach().float())
        self.down_outliers = down.weight[:, outliers].detach().float().t().contiguous()
        self.LayerNorm = output.LayerNorm

    def modules(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return _StaticIntermediate(self), _StaticOutput(self)

    def intermediate(self, x: torch.Tensor) -> tuple:
        flat = x.reshape(-1, self.up.in_features).float().contiguous()
        n = flat.shape[0]
        if n == 0:
            return flat.new_zeros(0, self.up.out_features, dtype=torch.uint8), None, 0
        codes, scale, zero_point = quantize_activation(flat)
        codes = _pad_rows(codes, grid_rows(n))
        up = self.up
        hidden = torch.ops.onednn.qlinear_pointwise(
            codes, scale, zero_point, up._packed, up.weight_scales, up.weight_zero_points,
            up.bias, self.scale, self.zero_point, torch.uint8, "gelu", [], "none")
        weight, bias = self.up_outliers
        spill = (torch.nn.functional.gelu(torch.addmm(bias, flat, weight))
                 if weight.shape[1] else None)
        return hidden, spill, n

    def output(self, staged: tuple, residual: torch.Tensor) -> torch.Tensor:
        hidden, spill, n = staged
        if n == 0:
            return self.LayerNorm(residual.float())
        flat = residual.reshape(n, -1).float()
        if spill is not None:
            flat = torch.addmm(flat, spill, self.down_outliers)
        other = _pad_rows(flat.contiguous(), hidden.shape[0])
        down = self.down
        out = torch.ops.onednn.qlinear_pointwise.binary(
            hidden, self.scale, self.zero_point, down._packed, down.weight_scales,
            down.weight_zero_points, other, down.bias, 1.0, 0, torch.float32, 1.0, 0, "add",
            1.0, "none", [], "")[:n]
        return self.LayerNorm(out.reshape(residual.shape))


class _StaticIntermediate(torch.nn.Module):
    def __init__(self, block: StaticFeedForward) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden_states: torch.Tensor) -> tuple:
        return self.block.intermediate(hidden_states)

    def extra_repr(self) -> str:
        return (f"int8 GEMM + GELU -> uint8 codes, {self.block.up.out_features} columns, "
                f"{self.block.up_outliers[1].numel()} outlier columns in float32")


class _StaticOutput(torch.nn.Module):
    def __init__(self, block: StaticFeedForward) -> None:
        super().__init__()
        self.block = block
        self.LayerNorm = block.LayerNorm

    def forward(self, staged: tuple, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.block.output(staged, input_tensor)

    def extra_repr(self) -> str:
        return "int8 GEMM on uint8 codes, residual added, LayerNorm"


class DynamicInt8Linear(torch.nn.Module):
    """A float Linear layer run by `torch.ops.quantized.linear_dynamic` (the portable kernel).

    Weights are quantised symmetrically per output channel. Torch's `quantize_dynamic` quantises
    weights per tensor: on the offline e5-small run over 800 corpus sentences that changed 1.3%
    of the label decisions against 0.1% per channel, at the same speed.
    """

    def __init__(self, linear: torch.nn.Linear, reduce_range: bool | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.reduce_range = (_x86_without_vnni() if reduce_range is None else reduce_range)
        codes, scales = _weight_int8(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().float()
        previous = torch.backends.quantized.engine
        with warnings.catch_warnings():  # quantised tensors are deprecated in favour of torchao
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                codes, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0)
            try:  # packed weights keep the kernels of the engine they were packed for
                if "onednn" in torch.backends.quantized.supported_engines:
                    torch.backends.quantized.engine = "onednn"
                self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
            finally:
                torch.backends.quantized.engine = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _x86_without_vnni() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and not cpu_supports_int8()


def lower_encoder(module: torch.nn.Module, precision: str, kernel: str = "auto",
                  feed_forward: list[dict] | None = None) -> str:
    """Run every Linear layer under `module` in bf16 or int8 on the CPU, in place.

    Args:
        module: The encoder (not the classification head, which should stay float32).
        precision: `bf16` (the whole module is cast to bfloat16) or `int8` (its Linear layers
            are quantised; the rest stays float32).
        kernel: `onednn`, `portable` or `auto` (oneDNN where `onednn_available(precision)`).
        feed_forward: For int8 on the oneDNN kernel: `calibrate_feed_forward`'s ranges, one
            per feed-forward block; the blocks then hand uint8 codes from one GEMM to the next
            (`StaticFeedForward`). Ignored by the other precisions and kernels.

    Returns:
        The kernel used.

    Raises:
        ValueError: An unknown precision or kernel, `onednn` where it cannot run, or
            `feed_forward` ranges that do not match the encoder's blocks.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}: choose one of {', '.join(KERNELS)}.")
    if kernel == "auto":
        kernel = "onednn" if onednn_available(precision) else "portable"
    elif kernel == "onednn" and not onednn_available(precision):
        needs = "AVX512-BF16 or AMX" if precision == "bf16" else "VNNI or AMX int8"
        raise ValueError(f"kernel='onednn' for {precision} needs torch with oneDNN on an x86 "
                         f"CPU with {needs}; use kernel='portable' here.")
    if precision == "bf16":
        module.to(torch.bfloat16)
    if kernel == "portable" and precision == "bf16":
        return kernel
    if kernel == "onednn":
        linear = OneDNNBf16Linear if precision == "bf16" else OneDNNInt8Linear
        if precision == "int8" and feed_forward is not None:
            _static_feed_forward(module, feed_forward)
        _fuse_blocks(module, linear)
        replace = linear.from_linear
    else:
        replace = DynamicInt8Linear
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, replace(child))
    return kernel


def quantize_encoder(module: torch.nn.Module, kernel: str = "auto") -> str:
    """`lower_encoder(module, "int8", kernel)`: int8 Linear layers; returns the kernel used."""
    return lower_encoder(module, "int8", kernel)


def _fuse_blocks(module: torch.nn.Module, linear: type[torch.nn.Module]) -> None:
    """The three oneDNN fusions, on the BERT-family blocks known to allow them."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            kind = type(child).__name__
            if (kind in FUSABLE_RESIDUAL and _all_linear(child, "dense")
                    and isinstance(getattr(child, "LayerNorm", None), torch.nn.LayerNorm)):
                setattr(parent, name, DenseAddNorm(child, linear))
            elif kind in FUSABLE_ATTENTION and _all_linear(child, "query", "key", "value"):
                child.query, child.key, child.value = FusedQKV(child.query, child.key,
                                                               child.value, linear).slices()
            elif (kind in FUSABLE_FEED_FORWARD and _all_linear(child, "dense")
                  and _is_exact_gelu(getattr(child, "intermediate_act_fn", None))):
                child.dense = linear.from_linear(child.dense, gelu=True)
                child.intermediate_act_fn = torch.nn.Identity()


def _static_feed_forward(module: torch.nn.Module, ranges: list[dict]) -> None:
    """Replace each (intermediate, output) pair of a BERT-family layer by `StaticFeedForward`."""
    layers = [child for child in module.modules()
              if type(getattr(child, "intermediate", None)).__name__ in FUSABLE_FEED_FORWARD
              and type(getattr(child, "output", None)).__name__ in FUSABLE_RESIDUAL]
    blocks = [child for child in module.modules()
              if type(child).__name__ in FUSABLE_FEED_FORWARD]
    if len(ranges) != len(blocks) or len(layers) != len(blocks):
        raise ValueError(f"the int8 calibration has {len(ranges)} feed-forward ranges for "
                         f"{len(blocks)} blocks ({len(layers)} of them fusable): it belongs to "
                         "another model; calibrate this one again")
    for layer, calibration in zip(layers, ranges, strict=True):
        intermediate, output = layer.intermediate, layer.output
        if not (_all_linear(intermediate, "dense") and _all_linear(output, "dense")
                and _is_exact_gelu(getattr(intermediate, "intermediate_act_fn", None))):
            continue
        if len(calibration["outliers"]) and max(calibration["outliers"]) >= \
                intermediate.dense.out_features:
            raise ValueError("the int8 calibration names columns this model lacks: it belongs "
                             "to another model; calibrate this one again")
        layer.intermediate, layer.output = StaticFeedForward(intermediate, output,
                                                             calibration).modules()


def _all_linear(module: torch.nn.Module, *names: str) -> bool:
    return all(type(getattr(module, name, None)) is torch.nn.Linear for name in names)


def _is_exact_gelu(activation: object) -> bool:
    """transformers' `GELUActivation` on torch's erf GELU (config `hidden_act: gelu`)."""
    if type(activation) is torch.nn.GELU:
        return activation.approximate == "none"
    return (type(activation).__name__ == "GELUActivation"
            and getattr(activation, "act", None) is torch.nn.functional.gelu)
