"""Inference speed on CPU: the batch path against `transformers.pipeline`, same model and data.

A benchmark, not a test: it takes minutes. Every number comes from one run of this script on
one machine, so compare them only as ratios within a run (other jobs share the cores).

What is timed, on the same >= 2,000 sentences of ../shared/corpus/ant-news-2018.jsonl.gz (read
in place; articles drawn with a fixed seed, split with `split_sentences`, Arabic ones kept):

- `pipeline bs=1` / `pipeline bs=32`: `transformers.pipeline("text-classification")` on the
  run directory, at its default batch size and at 32, given sentences already preprocessed
  (their preprocessing time is *not* counted, which favours the pipeline);
- `ours fp32` / `ours bf16` / `ours int8`: `EventClassifier.predict_scores`, the core of
  `arabic-events predict` (preprocessing, tokenising the whole list at once, length-sorted
  batches, inference_mode), with raw sentences; bf16 and int8 with the kernel `auto` picks
  (oneDNN GEMMs on prepacked weights with query/key/value, GELU and residual adds fused, on
  CPUs with AMX / AVX512-BF16 / VNNI), and with the `portable` kernel for comparison (bf16:
  the encoder cast to bfloat16; int8: torch's `quantized.linear_dynamic`). `ours int8` uses
  the run's `int8_calibration.json` (written by `train` from dev; for a run without one, this
  script writes it from `data/splits/dev.jsonl` the same way) to hand uint8 codes between the
  feed-forward GEMMs; `ours int8 (per-batch ranges only)` is the same kernel without it.

All eight are loaded at once, warmed up on 32 sentences, then timed interleaved: the sentences
are cut into blocks (8 by default) and every method runs on each block in turn, in a rotating
order, so a busy spell of the shared cores hits all methods alike. Our path sorts and batches
within each block (250 sentences by default; `predict` does it per chunk of 2,048). Label
agreement is the fraction of sentence x label decisions (at the run's thresholds) equal to
those of `ours fp32`.

Two models: an AraBERT-sized BERT (bert-base-arabertv02's exact config: vocab 64000, hidden 768,
12 layers, 12 heads, intermediate 3072, 512 positions; random weights and a random 5-label head;
a 64k WordPiece vocabulary trained in seconds on corpus articles; AraBERT v02 preprocessing), and
the fine-tuned offline e5-small run.

Usage:
    python benchmarks/bench_inference.py                       # models/e5-small-offline
    python benchmarks/bench_inference.py --e5-run /tmp/bench/e5 --sentences 2000
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import logging
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arabic_events.config import load_config, save_config
from arabic_events.data import has_arabic
from arabic_events.inference import CALIBRATION_FILE, EventClassifier, calibrate_int8
from arabic_events.labels import LABELS
from arabic_events.preprocess import Preprocessor
from arabic_events.sentences import split_sentences

logger = logging.getLogger("bench_inference")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "ant-news-2018.jsonl.gz"
ARABERT_V02 = {
    "vocab_size": 64000, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
}
"""aubmindlab/bert-base-arabertv02's config.json (architecture fields)."""
TARGETS = {"fp32": 1.6, "bf16": 4.0, "int8": 7.0}
MIN_AGREEMENT = 0.99
WARMUP = 32


def corpus_sentences(path: Path, count: int, seed: int, share: float = 0.03) -> list[str]:
    """`count` Arabic sentences from articles drawn with probability `share` (fixed seed)."""
    rng = random.Random(seed)
    sentences: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if rng.random() < share:
                text = json.loads(line)["text"]
                sentences += [s.text for s in split_sentences(text) if has_arabic(s.text)]
    rng.shuffle(sentences)
    if len(sentences) < count:
        raise SystemExit(f"only {len(sentences)} sentences drawn; raise share or lower --sentences")
    return sentences[:count]


def build_arabert_sized(folder: Path, corpus: Path) -> Path:
    """A run directory with AraBERT v02's architecture, random weights and a 64k WordPiece."""
    if (folder / "model.safetensors").is_file():
        return folder
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    logger.info("building the AraBERT-sized model in %s", folder)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(6000), handle, strict=False)]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=64000,
                                                             special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    torch.manual_seed(0)
    config = BertConfig(**ARABERT_V02, pad_token_id=0, num_labels=len(LABELS),
                        problem_type="multi_label_classification",
                        id2label=dict(enumerate(LABELS)),
                        label2id={n: i for i, n in enumerate(LABELS)})
    tmp = folder.with_name(folder.name + ".tmp")
    BertForSequenceClassification(config).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    Preprocessor(kind="arabert", arabert_model="bert-base-arabertv02").save(tmp)
    (tmp / "thresholds.json").write_text(json.dumps({n: 0.5 for n in LABELS}, indent=2))
    cfg = load_config(None, ["model.name_or_path=aubmindlab/bert-base-arabertv02",
                             "model.preprocessing=arabert", "model.max_length=128"])
    save_config(cfg, tmp / "run_config.yaml")
    os.replace(tmp, folder)
    return folder


def pipeline_method(run: Path, batch_size: int | None, max_length: int) -> Callable:
    """`pipeline("text-classification")` on preprocessed sentences -> scores in label order."""
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(run), device="cpu", top_k=None)
    kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size

    def score(prepped: list[str]) -> np.ndarray:
        outputs = pipe(prepped, **kwargs)
        return np.array([[{o["label"]: o["score"] for o in out}[n] for n in LABELS]
                         for out in outputs], dtype=np.float32)

    return score


def _agreement(probs: np.ndarray, reference: np.ndarray, thresholds: np.ndarray) -> float:
    return float(((probs >= thresholds) == (reference >= thresholds)).mean())


def time_interleaved(methods: dict[str, tuple[Callable, list[str]]], blocks: int,
                     ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Run every method on the same sentences, block by block, in a rotating order.

    Other jobs share the cores and their load changes over minutes; interleaving short blocks
    spreads it over all methods instead of penalising whichever ran during a busy spell.

    Returns:
        Seconds per method (sum over blocks) and its scores for all sentences.
    """
    names = list(methods)
    total = len(next(iter(methods.values()))[1])
    edges = np.linspace(0, total, blocks + 1).astype(int)
    seconds = dict.fromkeys(names, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for name in names:  # warm-up, not timed
        fn, inputs = methods[name]
        fn(inputs[:WARMUP])
    for b in range(blocks):
        lo, hi = edges[b], edges[b + 1]
        for name in names[b % len(names):] + names[: b % len(names)]:
            fn, inputs = methods[name]
            start = time.perf_counter()
            parts[name].append(fn(inputs[lo:hi]))
            seconds[name] += time.perf_counter() - start
        logger.info("block %d/%d done; load average %.1f", b + 1, blocks, os.getloadavg()[0])
    return seconds, {name: np.concatenate(parts[name]) for name in names}


def bench_model(name: str, run: Path, sentences: list[str], batch_size: int,
                blocks: int) -> dict[str, Any]:
    """Time the pipeline (bs=1 and 32) and our fp32/bf16/int8 on one model, interleaved."""
    logger.info("%s: %s", name, run)
    if not (run / CALIBRATION_FILE).is_file():  # what `train` writes at its end
        dev = ROOT / "data" / "splits" / "dev.jsonl"
        texts = [json.loads(line)["text"] for line in dev.read_text("utf-8").splitlines()]
        calibrate_int8(run, texts, source=f"dev: {dev.relative_to(ROOT)}")
    ours, load_seconds = {}, {}
    for precision in ("fp32", "bf16", "int8"):
        start = time.perf_counter()
        ours[precision] = EventClassifier.from_pretrained(
            run, device="cpu", precision=precision, batch_size=batch_size)
        load_seconds[precision] = time.perf_counter() - start
    for precision in ("bf16", "int8"):
        ours[f"{precision} (portable kernel)"] = EventClassifier.from_pretrained(
            run, device="cpu", precision=precision, batch_size=batch_size, kernel="portable")
    ours["int8 (per-batch ranges only)"] = EventClassifier.from_pretrained(
        run, device="cpu", precision="int8", batch_size=batch_size, int8_calibration=False)
    fp32 = ours["fp32"]
    prepped = fp32.preprocessor.batch(sentences)
    tokens = [len(ids) for ids in fp32.tokenizer(prepped, truncation=True,
                                                 max_length=fp32.max_length)["input_ids"]]
    methods: dict[str, tuple[Callable, list[str]]] = {
        f"ours {p}": (clf.predict_scores, sentences) for p, clf in ours.items()}
    methods["pipeline bs=32"] = (pipeline_method(run, 32, fp32.max_length), prepped)
    methods["pipeline bs=1 (default)"] = (pipeline_method(run, None, fp32.max_length), prepped)
    seconds, probs = time_interleaved(methods, blocks)
    reference, thresholds = probs["ours fp32"], np.asarray(fp32.thresholds)
    best_pipe = max(len(sentences) / seconds[k] for k in seconds if k.startswith("pipeline"))
    rows: dict[str, dict[str, Any]] = {}
    for key in seconds:
        speed = len(sentences) / seconds[key]
        row = {"sent_per_s": speed, "vs_best_pipeline": speed / best_pipe,
               "label_agreement": _agreement(probs[key], reference, thresholds),
               "max_abs_score_diff": float(np.abs(probs[key] - reference).max())}
        precision = key.removeprefix("ours ")
        if precision in TARGETS:
            row["load_s"] = load_seconds[precision]
            row["target"] = TARGETS[precision]
            row["met"] = bool(row["vs_best_pipeline"] >= TARGETS[precision]
                              and row["label_agreement"] >= MIN_AGREEMENT)
        rows[key] = row
        logger.info("%s %-24s %8.1f sent/s  x%.2f  agreement %.4f", name, key, speed,
                    row["vs_best_pipeline"], row["label_agreement"])
    return {"run": str(run), "max_length": fp32.max_length, "mean_tokens": float(np.mean(tokens)),
            "rows": rows}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from arabic_events.modeling import cpu_supports_bf16

    cpu = "unknown"
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                    if ln.startswith("model name")), cpu)
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
                         if f" {f}" in info)
    import transformers
    return {"cpu": cpu, "flags": flags, "cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "bf16_native": cpu_supports_bf16(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average": os.getloadavg()}


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write `inference-<date>.json` and `.md`; return the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / results.get("stem", f"inference-{results['date']}")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    m = results["machine"]
    lines = [
        f"# Inference speed, {results['date']}", "",
        f"{results['sentences']} sentences from `{results['corpus']}` (seed {results['seed']}), "
        f"one run of `benchmarks/bench_inference.py` ({results['blocks']} interleaved blocks) "
        f"on {m['cpu']} ({m['cores']} cores, "
        f"{m['flags']}; torch {m['torch']}, transformers {m['transformers']}), "
        f"batch size {results['batch_size']}. Load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'])} (the benchmark's own threads "
        "give 2; more means other jobs shared the cores: compare ratios only). Ratios are "
        "against the faster pipeline setting; agreement is the share of sentence x label "
        "decisions equal to ours fp32.", "",
    ]
    for name, model in results["models"].items():
        lines += [f"## {name}", "", f"Run: `{model['run']}`; mean {model['mean_tokens']:.1f} "
                  f"tokens per sentence (max_length {model['max_length']}).", "",
                  "| method | sentences/s | x best pipeline | target | label agreement "
                  "| max abs score diff | met |", "|---|---:|---:|---:|---:|---:|---|"]
        for key, row in model["rows"].items():
            target = f"{row['target']:.1f}x" if "target" in row else ""
            met = ("yes" if row["met"] else "**no**") if "met" in row else ""
            lines.append(f"| {key} | {row['sent_per_s']:.1f} | {row['vs_best_pipeline']:.2f} "
                         f"| {target} | {row['label_agreement']:.4f} "
                         f"| {row['max_abs_score_diff']:.2e} | {met} |")
        lines.append("")
    path = stem.with_suffix(".md")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e5-run", type=Path, default=ROOT / "models" / "e5-small-offline")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=8,
                        help="interleaved blocks (every method runs on each block in turn)")
    parser.add_argument("--models", default="arabert-sized,e5-small",
                        help="comma-separated: arabert-sized, e5-small")
    parser.add_argument("--work-dir", type=Path,
                        default=Path.home() / ".cache" / "arabic-events" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--stem", default=None,
                        help="file name of the report without suffix (default inference-DATE)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sentences = corpus_sentences(args.corpus, args.sentences, args.seed)
    runs = {"arabert-sized": lambda: build_arabert_sized(args.work_dir / "arabert-sized",
                                                         args.corpus),
            "e5-small": lambda: args.e5_run}
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "corpus": str(args.corpus),
        "seed": args.seed, "sentences": len(sentences), "batch_size": args.batch_size,
        "blocks": args.blocks,
        "models": {}}
    if args.stem:
        results["stem"] = args.stem
    for name in args.models.split(","):
        run = runs[name]()
        if not (Path(run) / "model.safetensors").is_file():
            raise SystemExit(f"{run}: no trained run; pass --e5-run (e.g. a run trained with "
                             "configs/offline/e5-small.yaml)")
        results["models"][name] = bench_model(name, Path(run), sentences, args.batch_size,
                                                   args.blocks)
    results["machine"] = machine()
    print(write_report(results, args.out))


if __name__ == "__main__":
    main()
