"""Training throughput and peak memory of each attention kernel inside the decoder's attention layer.

One ``genrec.models.decoder.Attention`` layer (QKV projection, RoPE, kernel, output projection) runs forward +
backward on B x T random tokens with a causal mask; only the kernel changes between rows, so the differences
are the kernels'. Batch size is ``--tokens // T`` (constant tokens per step across lengths).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over warm-up and timed steps minus the memory held
before them; on CPU each (kernel, T) runs in a fresh subprocess and we report the growth of its peak resident set size
(``ru_maxrss``) over the resident size before the first step, which counts allocator caching too (an upper
bound).

    python benchmarks/bench_attention.py                       # CPU: T in 128..1024
    python benchmarks/bench_attention.py --lengths 200 512 1024 2048 4096 8192 --tokens 8192 --windows 0 128 \
        --kernels sdpa eager linear hstu flex --out results/bench/attention_cpu_long.json   # CPU length sweep
    python benchmarks/bench_attention.py --lengths 256 512 1024 2048 4096 8192 --tokens 65536 --windows 0 256   # GPU

Writes ``results/bench/attention_<device>.json`` (device: cpu, or the GPU's short name).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from genrec.attention import ATTENTION  # noqa: E402
from genrec.models.decoder import Attention, rope_cos_sin  # noqa: E402
from genrec.training.records import device_description, write_record  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(kernel: str, t: int, tokens: int, dim: int, heads: int, steps: int, warmup: int, device: str,
            window: int = 0) -> dict:
    """One (kernel, window, T) cell: tokens/s of forward + backward and peak memory in MiB, or the error it raised."""
    torch.manual_seed(0)
    b = max(1, tokens // t)
    dev = torch.device(device)
    layer = Attention(dim, heads, kernel, rope=True, window=window, dropout=0.0).to(dev)
    x = torch.randn(b, t, dim, device=dev, requires_grad=True)
    rope = rope_cos_sin(torch.arange(t, device=dev).expand(b, t), dim // heads)
    dtype = torch.bfloat16 if dev.type == "cuda" else None  # flash-attn needs half precision

    def step():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = layer(x, rope, None)
        out.float().square().mean().backward()

    cell = {"kernel": kernel, "window": window, "seq_len": t, "batch": b}
    try:
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = rss_mb()
        for _ in range(warmup):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / steps
        if dev.type == "cuda":
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
        cell.update(ms_per_step=round(sec * 1000, 2), tokens_per_s=round(b * t / sec, 1), peak_mem_mb=round(peak, 1))
    except (ValueError, ImportError, RuntimeError, NotImplementedError) as e:
        cell["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return cell


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", nargs="+", default=list(ATTENTION))
    p.add_argument("--lengths", nargs="+", type=int, default=None, help="default: 128..1024 on CPU, 256..8192 on GPU")
    p.add_argument("--tokens", type=int, default=None, help="tokens per step (B = tokens // T); default 4096 CPU, 65536 GPU")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="timed steps; default 3 CPU, 20 GPU")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument("--out", default=None, help="default results/bench/attention_<device>.json")
    p.add_argument("--windows", nargs="+", type=int, default=[0], help="sliding windows (0 = full causal)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "kernel,T,W": one CPU cell in this process
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    lengths = a.lengths or ([256, 512, 1024, 2048, 4096, 8192] if cuda else [128, 256, 512, 1024])
    tokens = a.tokens or (65536 if cuda else 4096)
    steps = a.steps or (20 if cuda else 3)
    if not cuda:
        torch.set_num_threads(a.threads)
    if a.worker:
        kernel, t, w = a.worker.split(",")
        print(json.dumps(measure(kernel, int(t), tokens, a.dim, a.heads, steps, a.warmup, a.device, int(w))))
        return 0

    t0 = time.time()
    load_before = os.getloadavg()  # timings on a shared machine depend on what else runs
    cells = []
    for kernel, w, t in ((k, w, t) for k in a.kernels for w in a.windows for t in lengths):
        if w and kernel == "linear":
            continue  # linear attention has no window
        if cuda:
            cell = measure(kernel, t, tokens, a.dim, a.heads, steps, a.warmup, a.device, w)
            torch.cuda.empty_cache()
        else:  # a fresh process per cell, so each peak RSS is its own
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{kernel},{t},{w}", "--tokens", str(tokens),
                   "--dim", str(a.dim), "--heads", str(a.heads), "--steps", str(steps), "--warmup", str(a.warmup),
                   "--device", a.device, "--threads", str(a.threads)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
            cell = json.loads(lines[-1]) if lines else {"kernel": kernel, "window": w, "seq_len": t,
                                                        "error": run.stderr.strip().splitlines()[-1][:200]}
        cells.append(cell)
        print(json.dumps(cell), flush=True)
    if cuda:
        name = torch.cuda.get_device_name(a.device).lower()
        slug = next((s for s in ("h200", "h100", "a100", "l4", "a10", "t4") if s in name), "cuda")
    else:
        slug = "cpu"
    out = a.out or os.path.join("results", "bench", f"attention_{slug}.json")
    record = {
        "device": device_description(a.device) if cuda else device_description("cpu").replace(
            f"{torch.get_num_threads()} threads", f"{a.threads} threads"),
        "wall_seconds": round(time.time() - t0, 1),
        "unit": "one decoder attention layer (qkv + RoPE + kernel + out proj), causal, forward + backward",
        "precision": "bf16 autocast" if cuda else "fp32",
        "dim": a.dim, "heads": a.heads, "tokens_per_step": tokens, "timed_steps": steps,
        "memory": "CUDA max_memory_allocated growth" if cuda else "peak RSS over warm-up + timed steps minus RSS before them (upper bound)",
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "results": cells,
    }
    write_record(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
