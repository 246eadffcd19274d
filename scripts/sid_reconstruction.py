"""Reconstruction error of saved semantic-ID tokenizers on a config's item embeddings: how much of the embeddings'
variance each tokenizer's codes lose (``genrec.tokenizers.report.reconstruction_error``).

    python scripts/sid_reconstruction.py --config configs/parallel/ml-1m.yaml \\
        --tokenizer before=.cache/genrec/sids/ml-1m_opq_47d19e6c043b.tokenizer.pt \\
        --tokenizer after=.cache/genrec/sids/ml-1m_opq_d032897c5b07.tokenizer.pt --out results/analysis/x.json

Each ``--tokenizer LABEL=PATH`` is a ``<artifact>.tokenizer.pt`` written by ``genrec sids build``; its codes are
re-encoded from the config's embeddings (the tokenizer's own codes, before the collision digit). ``--refit
LABEL=override,override`` also fits a fresh tokenizer from the config with those overrides, for a reference row
(e.g. ``plain_pq=tokenizer.opq.rotation=false``). Writes the record to ``--out`` with command, commit and device.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.config import load_config  # noqa: E402
from genrec.embeddings import item_embeddings  # noqa: E402
from genrec.sids import load_items  # noqa: E402
from genrec.tokenizers import build_tokenizer, load_tokenizer  # noqa: E402
from genrec.tokenizers.report import reconstruction_error  # noqa: E402
from genrec.training.records import write_record  # noqa: E402


def _label(spec: str, flag: str) -> tuple[str, str]:
    label, sep, value = spec.partition("=")
    if not sep or not label or not value:
        raise SystemExit(f"sid_reconstruction.py: {flag} {spec!r}: expected LABEL=VALUE")
    return label, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", "-c", action="append", default=[], required=True)
    p.add_argument("--tokenizer", action="append", default=[], help="LABEL=path/to/<artifact>.tokenizer.pt")
    p.add_argument("--refit", action="append", default=[], help="LABEL=override[,override...]")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = load_config(args.config, [])
    data = load_items(cfg)
    emb = item_embeddings(cfg.embedding, data.items, data.name, data=data).float()
    rows = []
    for spec in args.tokenizer:
        label, path = _label(spec, "--tokenizer")
        if not os.path.isfile(path):
            raise SystemExit(f"sid_reconstruction.py: --tokenizer {label}: no file {path}")
        tok = load_tokenizer(path)
        rows.append({"label": label, "tokenizer": path, "config": tok.config,
                     "reconstruction": reconstruction_error(tok, emb, tok.encode(emb))})
    for spec in args.refit:
        label, overrides = _label(spec, "--refit")
        rcfg = load_config(args.config, overrides.split(","))
        torch.manual_seed(rcfg.tokenizer.seed)
        tok = build_tokenizer(rcfg.tokenizer).fit(emb)
        rows.append({"label": label, "refit_overrides": overrides.split(","), "config": tok.config,
                     "reconstruction": reconstruction_error(tok, emb, tok.encode(emb))})
    for r in rows:
        print(f"{r['label']:>16s}  reconstruction {r['reconstruction']}")
    write_record(args.out, {"analysis": "semantic-ID reconstruction error (share of embedding variance lost)",
                            "dataset": data.name, "num_items": int(emb.shape[0]), "embedding_dim": int(emb.shape[1]),
                            "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
