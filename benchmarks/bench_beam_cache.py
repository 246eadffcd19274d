"""Beam-search memory and time of the decoder over long histories: a shared history cache vs a copy per beam.

The decoder-only model of configs/gr/ml-1m.yaml (dim 128, 2 layers, 4 heads, SwiGLU, RoPE; random init) reads
200 history items x 4 semantic-ID tokens (802 tokens with bos) and decodes the next item's 4 codes with 50 beams
over a catalog of 3,706 random code paths (3 x 256 codes + a collision digit, as ML-1M's RQ-VAE IDs).

Variants (each (variant, B) timed in its own subprocess, so peak memory is its own):
  shared    DecoderRecommender.make_step_fn(share_history=True): the history's K/V once per user, the generated
            tokens per beam (``genrec.models.decoder.HistoryBeamCache``), the default for every built-in kernel
  gathered  share_history=False: every beam row holds a copy of its user's history K/V, reordered by parent at
            every level (the path of a kernel of unknown family, and of every kernel before the shared cache)

``--kernel`` picks the attention kernel (sdpa, eager, hstu, linear, ...; ``--window`` a sliding window) and
``--beams`` the beam width (HSTU's protocol searches 50 + 200 = 250 on ML-1M: the seen movies are dropped after).

Reported per (variant, B): wall seconds of ``recommend`` (median of --repeats; the history forward included),
users/s, peak memory over the post-setup baseline (CPU: ru_maxrss delta, a high-water mark: 0 means decoding
stayed below what building the model and batch reached; CUDA: max_memory_allocated), the history K/V the
variant holds (computed: fp32, all layers), and whether the shared variant returned the gathered variant's items.

    python benchmarks/bench_beam_cache.py --threads 1        # -> results/bench/beam_cache_cpu.json
    python benchmarks/bench_beam_cache.py --device cuda      # -> results/bench/beam_cache_cuda.json
    python benchmarks/bench_beam_cache.py --threads 1 --kernel hstu --batches 4   # -> beam_cache_hstu_cpu.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from timing import memory_mark, memory_peak  # noqa: E402
SIZES = [256, 256, 256, 3]
HISTORY, BEAMS, NUM_ITEMS = 200, 50, 3706


def build(device: str, seed: int = 0, kernel: str = "sdpa", window: int = 0):
    from genrec.config import DecoderConfig
    from genrec.models.decoder import DecoderRecommender

    g = torch.Generator().manual_seed(seed)
    paths = torch.randperm(SIZES[0] * SIZES[1] * SIZES[2], generator=g)[:NUM_ITEMS]
    codes = torch.stack([paths // (SIZES[1] * SIZES[2]), (paths // SIZES[2]) % SIZES[1], paths % SIZES[2],
                         torch.zeros_like(paths)], dim=1)
    codes = torch.cat([torch.zeros(1, 4, dtype=torch.long), codes])  # row 0 = padding
    torch.manual_seed(seed)
    cfg = DecoderConfig(dim=128, layers=2, heads=4, mlp="swiglu", mlp_ratio=4.0, positions="rope", dropout=0.0,
                        num_user_tokens=0, window=window, pack=kernel != "linear")
    model = DecoderRecommender(cfg, kernel, codes, SIZES, max_history=HISTORY, beam_size=BEAMS)
    return model.to(device).eval()


def child(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.device, kernel=args.kernel, window=args.window)
    g = torch.Generator().manual_seed(1)
    batch = {"history": torch.randint(1, NUM_ITEMS + 1, (args.batch, HISTORY), generator=g).to(device),
             "user": torch.arange(args.batch, device=device)}
    share = args.variant == "shared"
    model.make_step_fn = lambda b, _f=model.make_step_fn: _f(b, share_history=share)
    base = memory_mark(device)
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        items, _scores = model.recommend(batch, k=args.beams)
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    peak = memory_peak(device) - base
    torch.save(items.cpu(), args.items_out)
    wall = sorted(walls)[len(walls) // 2]
    copies = 1 if share else args.beams
    history_kv = args.batch * copies * (HISTORY * 4 + 1) * model.dcfg.dim * 2 * model.dcfg.layers * 4
    return {"variant": args.variant, "batch": args.batch, "beams": args.beams, "wall_s": round(wall, 3),
            "users_per_s": round(args.batch / wall, 2), "peak_mem_gb": round(peak / 2**30, 3),
            "history_kv_gb": round(history_kv / 2**30, 3),
            "walls_s": [round(w, 3) for w in walls]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="4,16", help="comma-separated users per search")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kernel", default="sdpa", help="model.attention of the decoder")
    p.add_argument("--window", type=int, default=0, help="model.decoder.window (0 = none)")
    p.add_argument("--beams", type=int, default=BEAMS)
    p.add_argument("--out", default=None,
                   help="default results/bench/beam_cache[_<kernel>][_w<window>][_b<beams>]_<device>.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--items-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    from genrec.training.records import device_description, git_commit

    torch.set_num_threads(args.threads)  # the children's count, so the device line states it
    dev_type = torch.device(args.device).type
    tag = "".join([f"_{args.kernel}" if args.kernel != "sdpa" else "", f"_w{args.window}" if args.window else "",
                   f"_b{args.beams}" if args.beams != BEAMS else ""])
    out = Path(args.out or ROOT / "results" / "bench" / f"beam_cache{tag}_{dev_type}.json")
    record = {
        "benchmark": "beam_cache",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)]),
        "git_commit": git_commit(),
        "device": device_description(args.device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads, "repeats": args.repeats,
        "setup": {"model": "decoder (configs/gr/ml-1m.yaml shape): dim 128, 2 layers, 4 heads, swiglu, rope, "
                           f"random init, {args.kernel}", "window": args.window, "history_items": HISTORY,
                  "history_tokens": HISTORY * 4 + 1, "beams": args.beams, "num_items": NUM_ITEMS, "codebook_sizes": SIZES},
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for b in (int(x) for x in args.batches.split(",")):
            items = {}
            for variant in ("shared", "gathered"):
                path = os.path.join(tmp, f"{variant}_{b}.pt")
                cmd = [sys.executable, __file__, "--child", "--variant", variant, "--batch", str(b), "--device",
                       args.device, "--repeats", str(args.repeats), "--threads", str(args.threads),
                       "--kernel", args.kernel, "--window", str(args.window), "--beams", str(args.beams),
                       "--items-out", path]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    record["runs"].append({"variant": variant, "batch": b,
                                           "status": f"failed: rc={proc.returncode} {proc.stderr[-500:]}"})
                    continue
                record["runs"].append(json.loads(line[0][len("RESULT "):]))
                items[variant] = torch.load(path)
                print(record["runs"][-1], flush=True)
            if len(items) == 2:
                record["runs"][-2]["same_items_as_gathered"] = bool(torch.equal(items["shared"], items["gathered"]))
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
