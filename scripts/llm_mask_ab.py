"""The LLM training step with transformers' own mask (built from the 2D attention mask) vs
``genrec.generation.hf_steps.left_padded_mask``, on the same length-bucketed Beauty batches: the losses (fp32 and
bf16 autocast) must be equal, and the step time is compared. Writes results/analysis/llm_left_padded_mask_<device>.json.

    GENREC_DATA_ROOT=../shared/data python scripts/llm_mask_ab.py
"""
import json, os, statistics, sys, time
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT); sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import torch
from accelerate import Accelerator
from genrec.config import load_config
from genrec.data import Split, load_dataset
from genrec.models import llm_lora as L
from genrec.training.loop import build_context
from genrec.training.records import cpu_bf16_flags, device_description, git_commit
from bench_llm_step import batches
torch.set_num_threads(2)
cfg = load_config([os.path.join(ROOT, "configs/llm/beauty.yaml")])
data = load_dataset(cfg.data)
split = Split(data, cfg.data.max_history)
ctx = build_context(cfg, data, Accelerator(cpu=True))
torch.manual_seed(0)
model = L.LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts, seed=0).train()
ds = model.train_dataset(split)
idx = batches(ds, 32, 7, 0)["bucketed"]
rows = [model.collate([ds[i] for i in b]) for b in idx]
fixed = L.left_padded_mask
variants = {"transformers 2D mask": lambda m, a: a, "left_padded_mask": fixed}
res = {k: {"loss_fp32": [], "loss_bf16": [], "s_bf16": []} for k in variants}
for r in rows:
    for name, fn in variants.items():
        L.left_padded_mask = fn
        with torch.no_grad():
            res[name]["loss_fp32"].append(model(r).loss.item())
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(r).loss
        loss.backward()
        res[name]["s_bf16"].append(time.perf_counter() - t)
        res[name]["loss_bf16"].append(loss.item())
        model.zero_grad(set_to_none=True)
L.left_padded_mask = fixed
a, b = res["transformers 2D mask"], res["left_padded_mask"]
out = {"what": ("LLM training step (SmolLM2-135M + LoRA, SID head, configs/llm/beauty.yaml, 7 length-bucketed "
                "batches of 32 packed rows, forward+backward) with transformers' own mask from the 2D attention "
                "mask vs genrec.generation.hf_steps.left_padded_mask; the first batch is warm-up for the timing"),
       "command": "python scripts/llm_mask_ab.py",
       "git_commit": git_commit(), "device": device_description(torch.device("cpu")),
       "cpu_bf16_flags": cpu_bf16_flags(),
       "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
       "padded_rows_per_batch": [int((r["attention_mask"] == 0).any(1).sum()) for r in rows],
       "max_abs_loss_diff_fp32": max(abs(x - y) for x, y in zip(a["loss_fp32"], b["loss_fp32"])),
       "max_abs_loss_diff_bf16": max(abs(x - y) for x, y in zip(a["loss_bf16"], b["loss_bf16"])),
       "median_step_s_bf16": {k: round(statistics.median(v["s_bf16"][1:]), 3) for k, v in res.items()},
       "raw": res}
print(json.dumps({k: v for k, v in out.items() if k != "raw"}, indent=1))
json.dump(out, open(os.path.join(ROOT, "results", "analysis", "llm_left_padded_mask_cpu.json"), "w"), indent=1)
