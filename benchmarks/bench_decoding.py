"""Decoding benchmark: trie-constrained beam search vs transformers' generate with a prefix_allowed_tokens_fn.

Same model, same encoder inputs, same beams. The model is TIGER-sized (Rajput et al. 2023): a random-init
T5ForConditionalGeneration (d_model 128, 4 + 4 layers, 6 heads, d_kv 64, d_ff 1024) over a catalog of random 4-level
semantic IDs (3 x 256 codes + a collision digit, seeded); the encoder reads 20 history items x 4 tokens.

Variants (each timed in its own subprocess, so peak memory is per variant and config):
  ours        constrained_beam_search + encoder_decoder_step_fn (encoder once, KV cache reordered by parent): the
              decoding path TigerModel.recommend runs (its make_step_fn returns this step function; the LLM
              recommender's is hf_steps.causal_lm_step_fn), so the benchmark times the model's own decoding
  prefix_fn   model.generate(num_beams=W, num_return_sequences=W, do_sample=False, max_new_tokens=L,
              prefix_allowed_tokens_fn=f), f a Python dict lookup prefix -> allowed tokens, as users write it
  processor   model.generate with the same settings and genrec's SidLogitsProcessor (the tensor trie)

Reported per (variant, B, W): wall seconds (median of --repeats), users/s = B / wall, items/s = B * W / wall
(returned items), peak memory over the post-setup baseline (CPU: ru_maxrss delta; CUDA: max_memory_allocated
delta), process CPU time, and the split of wall time into model forward passes (timed with forward hooks on the model and its
encoder) and everything else (search). ``speedup`` = wall(prefix_fn) / wall(ours) at --speedup-config.

    python benchmarks/bench_decoding.py --device cpu --threads 1   # -> results/bench/decoding_cpu.{json,md}
    python benchmarks/bench_decoding.py --device cuda               # -> results/bench/decoding_cuda.{json,md}

On a shared CPU use one thread: with other processes on the cores, 2 intra-op threads wait on each other
(a 64 x 20 search took 4x longer with 2 threads than with 1 at load average 5 on 2 cores).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.generation import SidTrie, constrained_beam_search  # noqa: E402
from genrec.generation.hf_logits import (  # noqa: E402
    SidLogitsProcessor,
    beam_generation_config,
    contiguous_level_token_ids,
    generate_constrained,
)
from genrec.generation.hf_steps import encoder_decoder_step_fn  # noqa: E402
from timing import memory_mark, memory_peak  # noqa: E402

VARIANTS = ("ours", "prefix_fn", "processor")
DEFAULT_CONFIGS = "1x10,16x10,64x10,64x20,128x20,64x50,256x20,256x50"
PAD, EOS, OFFSET = 0, 1, 2  # decoder start = pad = 0; codes start at token 2
HISTORY, D_MODEL, LAYERS, HEADS, D_KV, D_FF = 20, 128, 4, 6, 64, 1024


# ---------------------------------------------------------------------------------------------- setup
def make_catalog(num_items: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """(N, 4) random codes: 3 levels of 256 plus a collision digit that makes every code unique."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(0, 256, (num_items, 3), generator=g)
    key = (head[:, 0] * 256 + head[:, 1]) * 256 + head[:, 2]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    group_start = torch.cummax(torch.where(first, torch.arange(num_items), torch.zeros_like(sorted_key)), 0).values
    digit = torch.empty(num_items, dtype=torch.long)
    digit[order] = torch.arange(num_items) - group_start  # rank within the group of equal heads
    codes = torch.cat([head, digit[:, None]], dim=1)
    return codes, [256, 256, 256, int(digit.max()) + 1]


def build(args):
    from transformers import T5Config, T5ForConditionalGeneration

    codes, sizes = make_catalog(args.num_items, args.seed)
    token_ids = contiguous_level_token_ids(sizes, OFFSET)
    vocab = OFFSET + sum(sizes)
    torch.manual_seed(args.seed)
    cfg = T5Config(vocab_size=vocab, d_model=D_MODEL, d_kv=D_KV, d_ff=D_FF, num_layers=LAYERS,
                   num_decoder_layers=LAYERS, num_heads=HEADS, dropout_rate=0.0, pad_token_id=PAD,
                   eos_token_id=EOS, decoder_start_token_id=PAD)
    model = T5ForConditionalGeneration(cfg).eval().to(args.device)
    return model, codes, sizes, token_ids, vocab


def make_inputs(codes: torch.Tensor, token_ids, batch: int, seed: int, device) -> torch.Tensor:
    """(B, 20 * 4) encoder tokens: the codes of 20 random catalog items per user."""
    g = torch.Generator().manual_seed(seed + 1)
    items = torch.randint(0, codes.shape[0], (batch, HISTORY), generator=g)
    offsets = torch.stack([t[0] for t in token_ids])  # (L,)
    return (codes[items] + offsets).view(batch, -1).to(device)


class ForwardTimer:
    """Wall time spent inside the model's forward passes (the top-level model and its encoder)."""

    def __init__(self, model, device):
        self.total, self.encoder, self._t0 = 0.0, 0.0, None
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        for m, is_encoder in ((model, False), (model.get_encoder(), True)):
            m.register_forward_pre_hook(self._pre)
            m.register_forward_hook(self._post_encoder if is_encoder else self._post)

    def _pre(self, *_):
        self.sync()
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self.sync()
        self.total += time.perf_counter() - self._t0

    def _post_encoder(self, *_):
        self._post()
        self.encoder += time.perf_counter() - self._t0


class CallTimer:
    """Wraps a callable and sums its wall time."""

    def __init__(self, fn, device):
        self.fn, self.total = fn, 0.0
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def __call__(self, *a, **kw):
        self.sync()
        t0 = time.perf_counter()
        out = self.fn(*a, **kw)
        self.sync()
        self.total += time.perf_counter() - t0
        return out


def prefix_dict(codes: torch.Tensor, token_ids) -> dict[tuple, list[int]]:
    """prefix tokens -> allowed next tokens, the way a prefix_allowed_tokens_fn is usually backed."""
    offsets = torch.stack([t[0] for t in token_ids])
    allowed: dict[tuple, set] = {}
    for row in (codes + offsets).tolist():
        for level in range(len(row)):
            allowed.setdefault(tuple(row[:level]), set()).add(row[level])
    return {k: sorted(v) for k, v in allowed.items()}


def decode_once(variant, model, enc_ids, ctx, beam, timers):
    """One batch, returns (B, W) item ids; fills timers['constraint'] with constraint-op time."""
    trie, token_ids, sizes, vocab, device = ctx["trie"], ctx["token_ids"], ctx["sizes"], ctx["vocab"], ctx["device"]
    b = enc_ids.shape[0]
    mask = torch.ones_like(enc_ids)
    if variant == "ours":
        with torch.no_grad():
            hidden = model.get_encoder()(input_ids=enc_ids, attention_mask=mask).last_hidden_state
        step = CallTimer(encoder_decoder_step_fn(model, hidden, mask, token_ids, PAD), device)
        out = constrained_beam_search(step, trie, batch_size=b, beam_size=beam, device=device)
        timers["step_fn"] += step.total
        return out.items
    cfg = beam_generation_config(beam, len(sizes), eos_token_id=EOS, pad_token_id=PAD, decoder_start_token_id=PAD)
    if variant == "prefix_fn":
        allowed = ctx["allowed"]

        def prefix_allowed_tokens_fn(batch_id, input_ids):
            return allowed.get(tuple(input_ids[1:].tolist()), [EOS])

        gen = generate_constrained(model, cfg, None, input_ids=enc_ids, attention_mask=mask,
                                   prefix_allowed_tokens_fn=prefix_allowed_tokens_fn)
    else:
        proc = CallTimer(SidLogitsProcessor(trie, token_ids, prompt_length=1, vocab_size=vocab), device)
        gen = generate_constrained(model, cfg, proc, input_ids=enc_ids, attention_mask=mask)
        timers["constraint"] += proc.total
    offsets = torch.stack([t[0] for t in token_ids]).to(device)
    return trie.lookup(gen.sequences[:, 1 : 1 + len(sizes)] - offsets).view(b, beam)


def child(args) -> list[dict]:
    """Time the variants in ``args.variant`` (comma-separated) at one (B, W) in this process; called via --child.

    Repeats are interleaved across variants (ours, prefix_fn, processor, ours, ...) so that load from other
    processes on a shared machine hits every variant alike. Peak memory is meaningful only when one variant runs
    in the process (the driver runs a separate one-variant child for it).
    """
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = args.variant.split(",")
    model, codes, sizes, token_ids, vocab = build(args)
    trie = SidTrie.from_codes(codes, sizes).to(device)
    ctx = {"trie": trie, "token_ids": [t.to(device) for t in token_ids], "sizes": sizes, "vocab": vocab,
           "device": device, "allowed": prefix_dict(codes, token_ids) if "prefix_fn" in variants else None,
           "prefix_fn_time": 0.0}
    b, w = args.batch, args.beam
    enc_ids = make_inputs(codes, token_ids, b, args.seed, device)
    if "prefix_fn" in variants:  # time the processor that generate builds from prefix_allowed_tokens_fn
        from transformers.generation import logits_process

        cls = logits_process.PrefixConstrainedLogitsProcessor
        raw_call = cls.__call__

        def timed_call(self, input_ids, scores):
            t0 = time.perf_counter()
            out = raw_call(self, input_ids, scores)
            ctx["prefix_fn_time"] += time.perf_counter() - t0
            return out

        cls.__call__ = timed_call
    # time the KV-cache copies (beam reorder; ours also the level-0 repeat of each user's cache to its W beams)
    from transformers.cache_utils import Cache

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ctx["cache_time"] = 0.0
    for name in ("reorder_cache", "batch_repeat_interleave"):

        def timed_cache_op(self, *a, _raw=getattr(Cache, name), **kw):
            sync()
            t0 = time.perf_counter()
            out = _raw(self, *a, **kw)
            sync()
            ctx["cache_time"] += time.perf_counter() - t0
            return out

        setattr(Cache, name, timed_cache_op)
    # warm-up on one user (first-call allocations, lazy inits), then the memory baseline
    for v in variants:
        decode_once(v, model, enc_ids[:1], ctx, w, {"step_fn": 0.0, "constraint": 0.0})
    base_mem = memory_mark(device)
    fwd = ForwardTimer(model, device)
    runs = {v: [] for v in variants}
    items = {}
    for _ in range(args.repeats):
        for v in variants:
            fwd.total, fwd.encoder, ctx["prefix_fn_time"], ctx["cache_time"] = 0.0, 0.0, 0.0, 0.0
            timers = {"step_fn": 0.0, "constraint": 0.0}
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            items[v] = decode_once(v, model, enc_ids, ctx, w, timers)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            run = {"wall_s": wall, "cpu_s": cpu, "model_s": fwd.total, "encoder_s": fwd.encoder,
                   "search_s": wall - fwd.total, "cache_copy_s": ctx["cache_time"]}
            if v == "ours":  # step_fn time outside the decoder forward: cache reorder, token map, log-softmax
                run["step_fn_overhead_s"] = timers["step_fn"] - (fwd.total - fwd.encoder)
            else:
                run["constraint_s"] = timers["constraint"] + ctx["prefix_fn_time"]
            runs[v].append(run)
    peak = memory_peak(device) - base_mem
    if args.items_out:
        torch.save({v: t.cpu() for v, t in items.items()}, args.items_out)
    out = []
    for v in variants:
        med = sorted(runs[v], key=lambda r: r["wall_s"])[len(runs[v]) // 2]
        out.append({
            "variant": v, "batch": b, "beam": w, "rows": b * w, "status": "ok",
            **{k: round(x, 5) for k, x in med.items()},
            "wall_s_min": round(min(r["wall_s"] for r in runs[v]), 5),
            "cpu_s_min": round(min(r["cpu_s"] for r in runs[v]), 5),
            "wall_s_all": [round(r["wall_s"], 5) for r in runs[v]],
            "users_per_s": round(b / med["wall_s"], 2), "items_per_s": round(b * w / med["wall_s"], 1),
            "peak_mem_mb": round(peak / 2**20, 1) if len(variants) == 1 else None,
            "invalid_items": int((items[v] == 0).sum()),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        })
    return out


# ---------------------------------------------------------------------------------------------- driver
def cross_cache_gb(batch: int, beam: int) -> float:
    """Cross-attention K/V cache for B*W rows: both decoders hold one copy per row."""
    return batch * beam * LAYERS * 2 * HEADS * HISTORY * 4 * D_KV * 4 / 2**30


def device_string(device: str) -> str:
    if device.startswith("cuda"):
        return f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    model_name = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {os.cpu_count()} cores, {model_name}, torch {torch.__version__}"


def markdown(record: dict) -> str:
    lines = [
        f"# Decoding benchmark ({record['device']})",
        "",
        f"`{record['command']}` at {record['git_commit'][:10]}, {record['date']}; load average before "
        f"{record['loadavg_before']}. Catalog {record['num_items']} items, codebook sizes {record['codebook_sizes']}; "
        f"TIGER-sized T5 (random init); encoder input 20 items x 4 tokens; torch threads {record['threads']}.",
        "",
        f"**speedup at {record['speedup_config']}: {record['speedup']}x** (median wall of generate + "
        f"prefix_allowed_tokens_fn / median wall of the trie beam search; {record['speedup_min_wall']}x on the "
        f"fastest repeats; {record['speedup_cpu_time']}x in process CPU time; {record['speedup_vs_processor']}x against "
        "generate + SidLogitsProcessor).",
        "",
        "Timing: per config, all variants run in one process with their repeats interleaved (so load from other "
        "processes hits each alike); peak memory comes from a separate one-variant process per config.",
        "",
        "| B x W | variant | status | wall s (median) | cpu s (min) | users/s | items/s | model s | search s |"
        " cache copy s | constraint s | peak MB | same items as ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        if r["status"] != "ok":
            lines.append(f"| {r['batch']}x{r['beam']} | {r['variant']} | {r['status']} | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['batch']}x{r['beam']} | {r['variant']} | ok | {r['wall_s']:.3f} | {r['cpu_s_min']:.3f} | "
            f"{r['users_per_s']} | "
            f"{r['items_per_s']} | {r['model_s']:.3f} | {r['search_s']:.3f} | {r['cache_copy_s']:.3f} | "
            f"{r.get('constraint_s', '')} | "
            f"{r['peak_mem_mb']} | {r.get('agreement_with_ours', '')} |"
        )
    lines += ["", "model s: forward passes (encoder + decoder steps); search s = wall - model s (for ours: trie ops, "
              "topk, cache reorder, log-softmax; for generate: its beam bookkeeping, cache reorder and the "
              "constraint). cache copy s (part of search s): KV-cache reorders, and for ours the one copy of each "
              "user's level-0 cache to its W beams. constraint s: time in the logits processor. Ours runs the "
              "first decoder step on B rows "
              "(the W beams of a user share it), generate on B*W rows.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated BxW")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-items", type=int, default=12000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="skip a config whose predicted (or actual) wall per repeat exceeds this")
    p.add_argument("--max-cache-gb", type=float, default=None,
                   help="skip configs whose cross-attention cache exceeds this (default: 3.0 on CPU, none on CUDA)")
    p.add_argument("--speedup-config", default="64x20")
    p.add_argument("--out", default=None, help="default results/bench/decoding_<device>.json")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--beam", type=int, help=argparse.SUPPRESS)
    p.add_argument("--items-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    dev_type = torch.device(args.device).type
    max_cache = args.max_cache_gb if args.max_cache_gb is not None else (3.0 if dev_type == "cpu" else float("inf"))
    configs = [tuple(int(x) for x in c.lower().split("x")) for c in args.configs.split(",")]
    variants = args.variants.split(",")
    out = Path(args.out or ROOT / "results" / "bench" / f"decoding_{dev_type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    _, sizes = make_catalog(args.num_items, args.seed)
    record = {
        "benchmark": "decoding",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:])),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "device": device_string(args.device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads, "repeats": args.repeats, "num_items": args.num_items, "codebook_sizes": sizes,
        "model": {"kind": "T5ForConditionalGeneration", "d_model": D_MODEL, "layers": [LAYERS, LAYERS],
                  "heads": HEADS, "d_kv": D_KV, "d_ff": D_FF, "init": "random", "encoder_tokens": HISTORY * 4},
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "max_seconds": args.max_seconds, "max_cache_gb": max_cache,
        "runs": [],
    }
    t_start = time.time()
    last_wall: dict[str, tuple[int, float]] = {}  # variant -> (rows, wall) of its last finished config
    with tempfile.TemporaryDirectory() as tmp:

        def run_child(names, b, w, repeats, tag):
            path = os.path.join(tmp, f"{tag}_{b}x{w}.pt")
            cmd = [sys.executable, __file__, "--child", "--variant", ",".join(names), "--batch", str(b),
                   "--beam", str(w), "--device", args.device, "--repeats", str(repeats), "--threads",
                   str(args.threads), "--num-items", str(args.num_items), "--seed", str(args.seed),
                   "--items-out", path]
            limit = 120 + args.max_seconds * (repeats + 1) * len(names)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            except subprocess.TimeoutExpired:
                return f"skipped: too slow (timed out after {limit:.0f} s)", None
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                return f"failed: rc={proc.returncode} {proc.stderr[-500:]}", None
            return json.loads(line[0][len("RESULT "):]), torch.load(path)

        for b, w in configs:
            base = {"batch": b, "beam": w, "rows": b * w}
            todo = []
            for variant in variants:
                if cross_cache_gb(b, w) > max_cache:
                    record["runs"].append({"variant": variant, **base, "status": f"skipped: cross-attention "
                                           f"cache {cross_cache_gb(b, w):.1f} GB > --max-cache-gb {max_cache}"})
                elif variant in last_wall and last_wall[variant][0] >= 256:  # small configs: mostly fixed cost
                    rows, wall = last_wall[variant]
                    predicted = wall * b * w / rows
                    if predicted > args.max_seconds:
                        record["runs"].append({"variant": variant, **base, "status": f"skipped: too slow "
                                               f"(predicted {predicted:.0f} s > --max-seconds {args.max_seconds})"})
                    else:
                        todo.append(variant)
                else:
                    todo.append(variant)
            if not todo:
                continue
            # timing: all variants in one process, repeats interleaved
            timed, items = run_child(todo, b, w, args.repeats, "time")
            if isinstance(timed, str):
                record["runs"] += [{"variant": v, **base, "status": timed} for v in todo]
                continue
            # peak memory: one process per variant, one repeat
            for res in timed:
                mem, _ = run_child([res["variant"]], b, w, 1, "mem_" + res["variant"])
                res["peak_mem_mb"] = mem[0]["peak_mem_mb"] if isinstance(mem, list) else None
                if isinstance(mem, str):
                    res["peak_mem_status"] = mem
                last_wall[res["variant"]] = (b * w, res["wall_s"])
                if res["variant"] != "ours" and "ours" in items:
                    # share of returned items that ours also returns (set overlap per user)
                    same = [len(set(a.tolist()) & set(c.tolist())) / w
                            for a, c in zip(items["ours"], items[res["variant"]])]
                    res["agreement_with_ours"] = round(sum(same) / len(same), 4)
                record["runs"].append(res)
                print(json.dumps(res), flush=True)
            ok = {r["variant"]: r for r in timed}
            if "ours" in ok:
                for v in ("prefix_fn", "processor"):
                    if v in ok:
                        ok[v]["speedup_ours_vs_this"] = round(ok[v]["wall_s"] / ok["ours"]["wall_s"], 2)
                        ok[v]["speedup_ours_vs_this_min"] = round(ok[v]["wall_s_min"] / ok["ours"]["wall_s_min"], 2)
                        ok[v]["speedup_ours_vs_this_cpu"] = round(ok[v]["cpu_s_min"] / ok["ours"]["cpu_s_min"], 2)
    record["wall_seconds"] = round(time.time() - t_start, 1)
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    sb, sw = (int(x) for x in args.speedup_config.split("x"))
    ok = {r["variant"]: r for r in record["runs"] if (r["batch"], r["beam"]) == (sb, sw) and r["status"] == "ok"}
    record["speedup_config"] = args.speedup_config
    record["speedup"] = ok["prefix_fn"]["speedup_ours_vs_this"] if "prefix_fn" in ok and "ours" in ok else None
    both = "prefix_fn" in ok and "ours" in ok
    record["speedup_min_wall"] = ok["prefix_fn"]["speedup_ours_vs_this_min"] if both else None
    record["speedup_cpu_time"] = ok["prefix_fn"]["speedup_ours_vs_this_cpu"] if both else None
    record["speedup_vs_processor"] = ok["processor"]["speedup_ours_vs_this"] if "processor" in ok and "ours" in ok else None
    out.write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    print(f"speedup at {args.speedup_config}: {record['speedup']}  -> {out}")


if __name__ == "__main__":
    main()
