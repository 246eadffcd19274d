"""Train one config stack: ``python experiments/train.py --config A.yaml [--config delta.yaml ...] [key=value ...]``.

The same file runs under ``accelerate launch experiments/train.py ...`` (processes, nodes and DeepSpeed come from
accelerate's config; precision, batch and lr from ours). Equivalent to ``genrec train``; the logic lives in
``genrec.training.train`` so that tests and notebooks call the same function.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from genrec.config import ConfigError, load_config
from genrec.training import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", "-c", action="append", default=[], help="YAML file; repeat to stack (later wins)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 seed=1")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
