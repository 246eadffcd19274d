"""The LLM training step with transformers' own mask (built from the 2D attention mask) vs
``genrec.generation.hf_steps.left_padded_mask``, on the same length-bucketed Beauty batches: the losses (fp32 and
bf16 autocast) must be equal, and the step time is compared. Writes results/analysis/llm_left_padded_mask_<device>.json.

    GENREC_DATA_ROOT=../shared/data python scripts/llm_mask_ab.py
"""
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_llm_step import batches  # noqa: E402
from genrec.models import llm_lora as L  # noqa: E402
from genrec.training.records import cpu_bf16_flags, write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402


def main(argv=None) -> None:
    args = llm_parser(__doc__, "llm_left_padded_mask").parse_args(argv)
    device, cfg, split, ctx, _ = llm_setup(args)
    torch.manual_seed(0)
    model = L.LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                   seed=0).to(device).train()
    ds = model.train_dataset(split)
    rows = [model.collate([ds[i] for i in b]) for b in batches(ds, 32, 7, 0)["bucketed"]]
    fixed = L.left_padded_mask
    variants = {"transformers 2D mask": lambda m, a: a, "left_padded_mask": fixed}
    res = {k: {"loss_fp32": [], "loss_bf16": [], "s_bf16": []} for k in variants}
    for r in rows:
        for name, fn in variants.items():  # interleaved: machine load hits both alike
            L.left_padded_mask = fn
            with torch.no_grad():
                res[name]["loss_fp32"].append(model(r).loss.item())
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(r).loss
            loss.backward()
            res[name]["s_bf16"].append(time.perf_counter() - t)
            res[name]["loss_bf16"].append(loss.item())
            model.zero_grad(set_to_none=True)
    L.left_padded_mask = fixed
    a, b = res["transformers 2D mask"], res["left_padded_mask"]
    out = args.out or os.path.join(ROOT, "results", "analysis", f"llm_left_padded_mask_{device.type}.json")
    record = {
        "what": ("LLM training step (SmolLM2-135M + LoRA, SID head, configs/llm/beauty.yaml, 7 length-bucketed "
                 "batches of 32 packed rows, forward+backward) with transformers' own mask from the 2D attention "
                 "mask vs genrec.generation.hf_steps.left_padded_mask; the first batch is warm-up for the timing"),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "padded_rows_per_batch": [int((r["attention_mask"] == 0).any(1).sum()) for r in rows],
        "max_abs_loss_diff_fp32": max(abs(x - y) for x, y in zip(a["loss_fp32"], b["loss_fp32"])),
        "max_abs_loss_diff_bf16": max(abs(x - y) for x, y in zip(a["loss_bf16"], b["loss_bf16"])),
        "median_step_s_bf16": {k: round(statistics.median(v["s_bf16"][1:]), 3) for k, v in res.items()},
        "raw": res}
    print(json.dumps({k: v for k, v in record.items() if k != "raw"}, indent=1))
    print(write_record(out, record))


if __name__ == "__main__":
    main()
