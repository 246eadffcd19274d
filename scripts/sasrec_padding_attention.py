"""How much attention a trained SASRec (left-padded rows, causal mask only: the original code's setting) puts on
the padding before short histories, per layer, on the test histories of its users with padding.

    python scripts/sasrec_padding_attention.py runs/sasrec-ml-1m__s0-180e67

Writes ``results/analysis/sasrec_padding_attention_<dataset>.json``: per layer the mean attention mass on padded
keys at the last position (the state that is scored) and averaged over every real position.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.data import EvalDataset, Split, collate  # noqa: E402
from genrec.predict import load_run  # noqa: E402
from genrec.training.records import write_record  # noqa: E402


@torch.no_grad()
def padding_attention(model, history: torch.Tensor) -> list[dict]:
    """Per layer: attention mass on padded keys, at the last position and over every real position."""
    pad = history == 0
    T = history.shape[1]
    x = model.item_emb(history) * model.hidden ** 0.5 + model.pos_emb(torch.arange(T))
    x = x.masked_fill(pad[..., None], 0.0)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    out = []
    for block in model.blocks:  # the block's forward, with the attention weights kept
        q = block.ln1(x)
        y, w = block.attn(q, x, x, attn_mask=causal, need_weights=True)  # w (B, T, T), averaged over heads
        on_pad = (w * pad[:, None, :]).sum(-1)  # (B, T)
        real = ~pad
        out.append({"last_position": float(on_pad[:, -1].mean()),
                    "real_positions": float((on_pad * real).sum() / real.sum())})
        x = block.ln2(q + y)
        x = (x + block.ff(x)).masked_fill(pad[..., None], 0.0)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    run = load_run(args.run_dir)
    if run.cfg.model.kind != "sasrec" or run.cfg.model.sasrec.mask_padding:
        raise ValueError(f"{args.run_dir}: expected a SASRec run without model.sasrec.mask_padding")
    ds = EvalDataset(Split(run.data, run.cfg.data.max_history, run.cfg.data.train_on_valid), "test")
    histories = collate([ds[i] for i in range(len(ds))])["history"]
    histories = histories[(histories == 0).any(1)]  # users with padding before their history
    layers = None
    for start in range(0, len(histories), args.batch_size):
        part = padding_attention(run.model, histories[start:start + args.batch_size])
        n = min(args.batch_size, len(histories) - start)
        layers = [{k: v * n for k, v in lay.items()} for lay in part] if layers is None else [
            {k: acc[k] + v * n for k, v in lay.items()} for acc, lay in zip(layers, part)]
    layers = [{k: round(v / len(histories), 4) for k, v in lay.items()} for lay in layers]
    for i, lay in enumerate(layers):
        print(f"layer {i}: {lay['last_position']:.1%} of the last position's attention on padding, "
              f"{lay['real_positions']:.1%} over real positions")
    out = args.out or os.path.join(ROOT, "results", "analysis", f"sasrec_padding_attention_{run.cfg.data.name}.json")
    print(write_record(out, {
        "analysis": "attention mass on left padding (causal mask only) of a trained SASRec, test histories",
        "run": os.path.basename(os.path.normpath(args.run_dir)), "users_with_padding": len(histories),
        "users": len(ds), "max_history": run.cfg.data.max_history, "layers": layers}))


if __name__ == "__main__":
    main()
