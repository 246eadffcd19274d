"""The semantic-ID stage: dataset -> item embeddings (cached) -> tokenizer fit -> collision digit -> artifact.

It orchestrates the data, embedding and tokenizer packages (``genrec.tokenizers`` itself reads no data); it changes
no process state: threads are the caller's, and the fit draws from ``tokenizer.seed`` inside its own RNG scope.

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

from .embeddings import embedding_sha256, item_embeddings
from .embeddings.text_encoder import cache_meta
from .tokenizers import build_tokenizer
from .tokenizers.artifact import SemanticIds
from .tokenizers.dedup import add_collision_digit
from .tokenizers.report import plot_usage, reconstruction_error, sid_report

log = logging.getLogger(__name__)

# Part of every artifact key: bump when a change to the fitting code changes the codes a config produces, so
# artifacts built by older code are not silently reused. (2: RQ-VAE input standardisation, level-wise reset.)
FIT_VERSION = 2


def _fix_version(tcfg: dict) -> dict:
    """Fixes that change one tokenizer's codes for some configs only, part of those configs' keys alone, so every
    other artifact stays valid. opq 1: the OPQ rotation is trained against a PQ of ``codebook_size`` codes per
    level (8-bit codes, 256, were already trained so and keep their keys; without a rotation nothing changed)."""
    if tcfg["kind"] == "opq" and tcfg["opq"]["rotation"] and tcfg["codebook_size"] != 256:
        return {"opq": 1}
    return {}


def sids_path(cfg, dataset: str, emb_sha: str) -> str:
    """Artifact path for this dataset, embedding and tokenizer config."""
    tcfg = dataclasses.asdict(cfg.tokenizer)
    tcfg.pop("out_dir")
    payload = {"emb": emb_sha, "tok": tcfg, "v": FIT_VERSION, **_fix_version(tcfg)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cfg.tokenizer.out_dir, f"{dataset}_{cfg.tokenizer.kind}_{key}.pt")


def load_items(cfg):
    """The dataset (``InteractionData``: item table, row i = item i+1, and sequences) through ``load_dataset``."""
    from .data import load_dataset

    return load_dataset(cfg.data)


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

    Uses ``cfg.data`` (items), ``cfg.embedding`` (content vectors, cached) and ``cfg.tokenizer`` (kind, L, K, seed,
    kind sub-config).

    Returns:
        The ``SemanticIds`` artifact, with ``extra`` holding timings and the build report.
    """
    t0, c0 = time.time(), time.process_time()
    data = load_items(cfg)
    items, dataset = data.items, data.name
    emb = item_embeddings(cfg.embedding, items, dataset, data=data)
    t_embed, c_embed = time.time() - t0, time.process_time() - c0
    emb_sha = embedding_sha256(emb)
    path = sids_path(cfg, dataset, emb_sha)
    stem = path[:-3]
    if os.path.isfile(path) and not force:
        log.info("semantic IDs: loading %s", path)
        sids = SemanticIds.load(path)
        found = (sids.dataset, sids.embedding_sha256, sids.codes.shape[0])
        if found != (dataset, emb_sha, emb.shape[0]):
            raise ValueError(f"semantic-ID artifact {path} was built for dataset {found[0]!r}, embeddings "
                             f"{found[1][:12]}, {found[2]} items, not for {dataset!r}, {emb_sha[:12]}, "
                             f"{emb.shape[0]} items; delete it and the next run rebuilds it")
        return sids
    log.info("semantic IDs: fitting %s (%d levels x %d codes) on %d items", cfg.tokenizer.kind,
             cfg.tokenizer.num_levels, cfg.tokenizer.codebook_size, emb.shape[0])

    with torch.random.fork_rng(devices=[]):  # the fit draws from tokenizer.seed and leaves the caller's RNG as it was
        torch.manual_seed(cfg.tokenizer.seed)
        tokenizer = build_tokenizer(cfg.tokenizer)
        t1, c1 = time.time(), time.process_time()
        codes, sizes, raw = fit_sids(tokenizer, emb, cfg.tokenizer.dedup)
        t_fit, c_fit = time.time() - t1, time.process_time() - c1

    report = sid_report(raw, tokenizer.codebook_sizes)
    report["reconstruction"] = reconstruction_error(tokenizer, emb, raw)
    report.update(
        dataset=dataset,
        kind=cfg.tokenizer.kind,
        embedding={"source": cfg.embedding.source, "encoder": cfg.embedding.encoder,
                   "template": cfg.embedding.template, "fusion": list(cfg.embedding.fusion),
                   "collab": {"dim": cfg.embedding.collab_dim, "window": cfg.embedding.collab_window},
                   "dim": emb.shape[1], "sha256": emb_sha,
                   "cache": cache_meta(cfg.embedding, items, dataset) if cfg.embedding.source == "text" else {}},
        codebook_sizes_after_dedup=sizes,
        # Wall seconds, and CPU seconds of this process (summed over threads): on a shared machine the wall
        # time depends on other load, the CPU time much less. An embedding-cache hit shows as ~0 embedding time.
        seconds={"embedding": round(t_embed, 2), "fit": round(t_fit, 2)},
        cpu_seconds={"embedding": round(c_embed, 2), "fit": round(c_fit, 2)},
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
    coll = report.get("collisions", {})
    log.info("semantic IDs: wrote %s (%d items, levels %s, %d items shared an ID before the collision digit; "
             "fit %.0fs; report %s)", path, codes.shape[0], sizes, coll.get("collided_items", 0), t_fit,
             stem + ".report.json")
    return sids


def record_build(sids: SemanticIds, path: str, command: str, wall_seconds: float, threads: int = 0) -> dict:
    """Write a results record for a build: its report plus provenance (command, git commit, device, date, wall
    time), and copy the usage plot beside it as ``<path stem>.png``."""
    import datetime
    import platform
    import shutil
    import subprocess

    with open(sids.extra["report"]) as f:
        report = json.load(f)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = "unknown"
    if os.path.isfile("/proc/cpuinfo"):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    device = f"CPU: {os.cpu_count()} cores, {cpu}, torch {torch.__version__}, {threads or torch.get_num_threads()} threads"
    record = {
        "command": command,
        "git_commit": commit,
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 2),
        "python": platform.python_version(),
        **report,
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    png = os.path.splitext(path)[0] + ".png"
    shutil.copyfile(report["plot"], png)
    record["plot"] = png
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    return record
