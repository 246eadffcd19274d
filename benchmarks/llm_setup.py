"""What every LLM benchmark starts from: the shared command-line options and the configured model's inputs."""
from __future__ import annotations

import argparse
import os

import torch
from accelerate import Accelerator

from genrec.config import load_config
from genrec.data import Split, load_dataset
from genrec.training.loop import build_context

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def llm_parser(doc: str, out_name: str) -> argparse.ArgumentParser:
    """--config (default configs/llm/beauty.yaml), --device, --threads, --out (default
    results/bench/<out_name>_<device type>.json) and dotted config overrides; a benchmark adds its own options."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=None, help="default configs/llm/beauty.yaml")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--out", default=None, help=f"default results/bench/{out_name}_<device type>.json")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.max_history=10")
    p.set_defaults(out_name=out_name)
    return p


def llm_setup(args, tasks: dict | None = None):
    """(device, cfg, split, ctx, out path) for parsed ``llm_parser`` options; ``tasks`` replaces
    ``model.llm.tasks``. Sets the CPU thread count."""
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config or [os.path.join(ROOT, "configs/llm/beauty.yaml")], args.overrides)
    if tasks is not None:
        cfg.model.llm.tasks = tasks
    data = load_dataset(cfg.data)
    split = Split(data, cfg.data.max_history)
    ctx = build_context(cfg, data, Accelerator(cpu=device.type == "cpu"))
    out = args.out or os.path.join(ROOT, "results", "bench", f"{args.out_name}_{device.type}.json")
    return device, cfg, split, ctx, out
