"""Why ``train.compile`` cannot give the LLM one graph (and a GPU no CUDA graph) yet: dynamo's graph breaks in
its training forward, and the number of ATen operator calls one training step dispatches (on a GPU nearly each
one a kernel launch: at small batches the step is bound by them, not by FLOPs).

One length-bucketed Beauty batch of ``--rows`` rows, configs/llm/beauty.yaml (SID head, bf16 autocast, LoRA).
Writes results/analysis/llm_graph_breaks_<device>.json.

    GENREC_DATA_ROOT=../shared/data python scripts/llm_graph_breaks.py
"""
import argparse
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from genrec.models.llm_lora import LLMRecommender  # noqa: E402
from genrec.training.records import write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402


def main(argv=None) -> None:
    p = llm_parser(__doc__, "llm_graph_breaks")
    p.add_argument("--rows", type=int, default=8)
    args = p.parse_args(argv)
    device, cfg, split, ctx, _ = llm_setup(args)
    torch.manual_seed(0)
    model = LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                 seed=cfg.seed).to(device).train()
    ds = model.train_dataset(split)
    batch = model.collate([ds[i] for i in range(args.rows)])
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with torch.profiler.profile() as prof:
        step()
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    explain = torch._dynamo.explain(model)(batch)
    reasons = []
    for r in explain.break_reasons:
        line = " ".join(str(r.reason).split())[:160]
        frame = f"{os.path.relpath(r.user_stack[-1].filename, ROOT)}:{r.user_stack[-1].lineno}" if r.user_stack else ""
        reasons.append(f"{frame} {line}".strip())
    out = args.out or os.path.join(ROOT, "results", "analysis", f"llm_graph_breaks_{device.type}.json")
    print(write_record(out, {
        "what": "graph breaks of the LLM training forward under torch.compile, and ATen calls per training step",
        "dataset": cfg.data.name, "base_model": cfg.model.llm.base, "head": cfg.model.llm.head,
        "batch_shape": list(batch["input_ids"].shape),
        "graphs": explain.graph_count, "graph_breaks": explain.graph_break_count, "break_reasons": reasons,
        "aten_calls_per_step": sum(e.count for e in ops),
        "aten_calls_top": {e.key: e.count for e in sorted(ops, key=lambda e: -e.count)[:10]},
        "note": "aten_calls counts nested calls too (aten::to -> aten::_to_copy -> aten::copy_); forward + backward "
                "+ clip + AdamW (foreach where the device supports it)"}))
    print(f"graphs {explain.graph_count}, breaks {explain.graph_break_count}; "
          f"{sum(e.count for e in ops)} ATen calls per step")


if __name__ == "__main__":
    main()
