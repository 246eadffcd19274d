"""Approximate top-K of the parallel model (trie beam search over its per-level log-probs) against its exact
full-catalog top-K, on a trained run: recall of the exact top-K and time per user, for several beam widths.

    python benchmarks/bench_parallel_topk.py runs/<parallel run> --users 2000 --k 10 --beams 10,20,50,100,200

Writes ``results/bench/parallel_topk_<dataset>.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.data import EvalDataset, Split, collate  # noqa: E402
from genrec.predict import load_run  # noqa: E402
from genrec.training.records import device_description, write_record  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--beams", default="10,20,50,100,200")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)
    model = run.model
    if run.cfg.model.kind != "parallel":
        raise SystemExit(f"{args.run_dir} is a {run.cfg.model.kind} run; this benchmark needs model.kind=parallel")
    split = Split(run.data, run.cfg.data.max_history)
    ds = EvalDataset(split, "test", torch.arange(min(args.users, run.data.num_users)).numpy())
    batches = [collate([ds[i] for i in range(lo, min(lo + 256, len(ds)))]) for lo in range(0, len(ds), 256)]
    with torch.no_grad():
        t0 = time.perf_counter()
        exact = torch.cat([model.score(b).topk(args.k, dim=1).indices for b in batches])
        exact_s = time.perf_counter() - t0
        rows = [{"method": "exact", "beam": None, "recall_of_exact": 1.0,
                 "ms_per_user": round(1000 * exact_s / len(ds), 3)}]
        for w in (int(x) for x in args.beams.split(",")):
            t0 = time.perf_counter()
            approx = torch.cat([model.recommend(b, args.k, beam_size=w)[0] for b in batches])
            sec = time.perf_counter() - t0
            overlap = (approx[:, :, None] == exact[:, None, :]).any(-1).float().mean().item()
            rows.append({"method": "beam", "beam": w, "recall_of_exact": round(overlap, 4),
                         "ms_per_user": round(1000 * sec / len(ds), 3)})
            print(f"beam {w:4d}: recall of the exact top-{args.k} {overlap:.4f}, {rows[-1]['ms_per_user']} ms/user")
    out = os.path.join(ROOT, "results", "bench", f"parallel_topk_{run.cfg.data.name}.json")
    write_record(out, {"benchmark": "parallel model: beam top-K vs exact top-K", "run": args.run_dir,
                       "dataset": run.cfg.data.name, "users": len(ds), "k": args.k, "num_items": run.data.num_items,
                       "device": device_description("cpu"), "results": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
