"""Train one config stack: ``python experiments/train.py --config A.yaml [--config delta.yaml ...] [key=value ...]``.

The same file runs under ``accelerate launch experiments/train.py ...``; it is ``genrec train`` (``genrec.cli``)
for a checkout that is not installed.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from genrec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
