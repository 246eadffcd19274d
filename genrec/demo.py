"""``genrec demo``: the whole pipeline on the embedded tiny shop, offline, in a few minutes on 2 CPU cores.

items -> text embeddings (MiniLM) -> semantic IDs (RQ-VAE; PQ of text + collaborative embeddings for the parallel
model) -> generative models (TIGER and decoder-only with trie-constrained top-K, the parallel model with exact
scoring), beside the ID-based SASRec, all through the same loop and evaluator. Prints a table.
"""
from __future__ import annotations

import os
import time

from .config import load_config
from .training import train
from .training.loop import format_metrics

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEMO_MODELS = ["sasrec", "tiger", "decoder", "parallel"]


def run_demo(extra_configs: list[str], overrides: list[str], models: list[str]) -> dict[str, dict]:
    """Train and test each model on the tiny dataset; return {model: test metrics} and print a table."""
    results = {}
    for model in models or DEMO_MODELS:
        t0 = time.time()
        paths = [os.path.join(CONFIGS, "tiny.yaml"), os.path.join(CONFIGS, "tiny", f"{model}.yaml"), *extra_configs]
        cfg = load_config(paths, ["train.progress=false", *overrides])
        print(f"== {model}: training on {cfg.data.name} ==", flush=True)
        record = train(cfg)
        results[model] = {**record["metrics"], "seconds": time.time() - t0}
    keys = ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
    print("\nmodel      " + "  ".join(f"{k:>10}" for k in keys) + "  invalid ids  seconds")
    for model, m in results.items():
        invalid = m.get("invalid_ids", "-")  # score models rank every item: no IDs to be invalid
        print(f"{model:<10} " + "  ".join(f"{m[k]:>10.4f}" for k in keys) + f"  {invalid:>11}  {m['seconds']:>7.0f}")
    return results


__all__ = ["run_demo", "format_metrics"]
