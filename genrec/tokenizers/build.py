"""The semantic-ID stage: dataset -> item embeddings (cached) -> tokenizer fit -> collision digit -> artifact.

    sids = build_sids(cfg)      # a second call with the same inputs just loads the artifact

Files under ``cfg.tokenizer.out_dir`` are keyed by dataset, tokenizer kind and a hash of (embedding sha256,
tokenizer config), so changing the encoder, template, item table or any tokenizer knob builds a new artifact:
``<dataset>_<kind>_<key>.pt`` (codes + metadata), ``.json`` (metadata), ``.tokenizer.pt`` (fitted tokenizer,
encodes new items), ``.report.json`` and ``.usage.png`` (code usage per level).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import torch

from ..embeddings import embedding_sha256, item_embeddings
from . import build_tokenizer
from .artifact import SemanticIds
from .dedup import add_collision_digit
from .report import plot_usage, sid_report

log = logging.getLogger(__name__)


def sids_path(cfg, dataset: str, emb_sha: str) -> str:
    """Artifact path for this dataset, embedding and tokenizer config."""
    tcfg = dataclasses.asdict(cfg.tokenizer)
    tcfg.pop("out_dir")
    key = hashlib.sha256(json.dumps({"emb": emb_sha, "tok": tcfg}, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cfg.tokenizer.out_dir, f"{dataset}_{cfg.tokenizer.kind}_{key}.pt")


def load_items(cfg) -> tuple[list[dict], str]:
    """The item table (row i = item i+1) and dataset name, through ``genrec.data.load_dataset``."""
    from ..data import load_dataset

    data = load_dataset(cfg.data)
    return data.items, data.name


def fit_sids(tokenizer, emb: torch.Tensor, dedup: bool = True) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Fit, encode, and append the collision digit.

    Returns:
        codes (N, L') after dedup, codebook_sizes (L'), raw tokenizer codes (N, L).
    """
    tokenizer.fit(emb)
    raw = tokenizer.encode(emb)
    if not dedup:
        return raw, tokenizer.codebook_sizes, raw
    codes, last = add_collision_digit(raw)
    return codes, [*tokenizer.codebook_sizes, last], raw


def build_sids(cfg, force: bool = False) -> SemanticIds:
    """Run the semantic-ID stage for an ``ExperimentConfig``.

    Uses ``cfg.data`` (items), ``cfg.embedding`` (content vectors, cached), ``cfg.tokenizer`` (kind, L, K, seed,
    kind sub-config) and ``cfg.train.threads`` (CPU threads, 0 = torch default).

    Returns:
        The ``SemanticIds`` artifact, with ``extra`` holding timings and the build report.
    """
    if getattr(cfg.train, "threads", 0):
        torch.set_num_threads(cfg.train.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    items, dataset = load_items(cfg)
    emb = item_embeddings(cfg.embedding, items, dataset)
    t_embed = time.time() - t0
    emb_sha = embedding_sha256(emb)
    path = sids_path(cfg, dataset, emb_sha)
    stem = path[:-3]
    if os.path.isfile(path) and not force:
        log.info("semantic IDs: loading %s", path)
        return SemanticIds.load(path)

    torch.manual_seed(cfg.tokenizer.seed)
    tokenizer = build_tokenizer(cfg.tokenizer)
    t1 = time.time()
    codes, sizes, raw = fit_sids(tokenizer, emb, cfg.tokenizer.dedup)
    t_fit = time.time() - t1

    report = sid_report(raw, tokenizer.codebook_sizes)
    report.update(
        dataset=dataset,
        kind=cfg.tokenizer.kind,
        embedding={"source": cfg.embedding.source, "encoder": cfg.embedding.encoder,
                   "template": cfg.embedding.template, "dim": emb.shape[1], "sha256": emb_sha},
        codebook_sizes_after_dedup=sizes,
        seconds={"embedding": round(t_embed, 2), "fit": round(t_fit, 2)},
        artifact=path,
    )
    if hasattr(tokenizer, "history") and tokenizer.history:
        report["final_epoch"] = tokenizer.history[-1]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tokenizer.save(stem + ".tokenizer.pt")
    sids = SemanticIds(
        codes=codes, codebook_sizes=sizes, dataset=dataset, embedding_sha256=emb_sha, tokenizer=cfg.tokenizer.kind,
        tokenizer_config=tokenizer.config, dedup=cfg.tokenizer.dedup, tokenizer_path=stem + ".tokenizer.pt",
        extra={"seconds": report["seconds"], "report": stem + ".report.json"},
    )
    sids.save(path)
    plot_usage(raw, tokenizer.codebook_sizes, stem + ".usage.png", title=f"{dataset} {cfg.tokenizer.kind}")
    report["plot"] = stem + ".usage.png"
    with open(stem + ".report.json", "w") as f:
        json.dump(report, f, indent=1)
    log.info("semantic IDs: wrote %s", path)
    return sids
