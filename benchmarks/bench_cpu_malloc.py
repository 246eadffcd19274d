"""CPU training steps under glibc's default malloc vs freed blocks kept in the heap (``genrec.cli``'s restart with
``GLIBC_TUNABLES``), per model: real tokens/s in training steps, the process's user and kernel CPU seconds, and its
peak resident memory.

Each case is ``python -m genrec train <config> train.max_steps=N`` in a fresh process, run alternately with
``GENREC_MALLOC=system`` (glibc's defaults: blocks above the mmap threshold, at most 32 MB, are unmapped on free)
and without it (the default since this benchmark: freed memory stays in the heap), ``--repeats`` times each.

    python benchmarks/bench_cpu_malloc.py                     # all cases, 2 repeats
    python benchmarks/bench_cpu_malloc.py --cases hstu-ml-1m --repeats 3

Writes ``results/bench/cpu_malloc.json``. Needs the data root (``$GENREC_DATA_ROOT``) for the real-data cases.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.cli import HEAP_MALLOC  # noqa: E402
from genrec.training.records import write_record  # noqa: E402

CASES = {  # name -> genrec train arguments (a few steps; the evaluation at the end on a small user subset)
    "parallel-ml-1m": ["--config", "configs/parallel/ml-1m.yaml", "train.max_steps=20"],
    "hstu-ml-1m": ["--config", "configs/hstu/ml-1m.yaml", "model.hstu.negatives=position", "train.max_steps=20"],
    "decoder-beauty-prefix-buckets": ["--config", "configs/gr/beauty.yaml", "--config",
                                      "configs/ablations/prefix_buckets.yaml", "train.max_steps=40"],
    "sasrec-tiny": ["--config", "configs/tiny.yaml", "train.epochs=3"],
}
TOKENS = re.compile(r"([\d.]+) real tokens/s in training steps")


def run_case(args: list[str], malloc: str, out_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["GENREC_MALLOC"] = malloc
    cmd = [sys.executable, "-m", "genrec", "train", *args, "train.log_every=1000", "eval.max_users=200",
           "train.trackers=[]", f"output_dir={out_dir}/runs", f"results_dir={out_dir}/results"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU times and peak memory
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-2000:]}")
    rates = [float(m) for m in TOKENS.findall(output)]
    return {"real_tokens_per_s": rates[-1], "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "cpu_malloc.json"))
    args = p.parse_args(argv)
    results = {}
    for name in args.cases:
        runs = {"system": [], "heap": []}
        for _ in range(args.repeats):
            for malloc in ("system", "heap"):  # alternated: the machine's load drifts
                with tempfile.TemporaryDirectory() as tmp:
                    runs[malloc].append(run_case(CASES[name], malloc, tmp))
                print(name, malloc, runs[malloc][-1], flush=True)
        mean = {m: sum(r["real_tokens_per_s"] for r in rs) / len(rs) for m, rs in runs.items()}
        results[name] = {"args": CASES[name], "runs": runs, "speedup_heap_over_system": round(mean["heap"] /
                                                                                             mean["system"], 2)}
        print(f"{name}: heap malloc {results[name]['speedup_heap_over_system']}x the tokens/s of glibc's default",
              flush=True)
    print(write_record(args.out, {
        "benchmark": "CPU training steps: glibc malloc defaults (GENREC_MALLOC=system) vs freed blocks kept in the "
                     f"heap (genrec's default on Linux/glibc: GLIBC_TUNABLES={HEAP_MALLOC})",
        "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
