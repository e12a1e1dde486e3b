"""Launch fine-tuning from a YAML config; works under `accelerate launch` unchanged.

    python train/train.py --config configs/offline/e5-small.yaml train.epochs=2
    accelerate launch --num_processes 2 --cpu train/train.py --config configs/debug/tiny-bert.yaml
"""

import sys

from arabic_events.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
