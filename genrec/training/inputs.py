"""What a run trains on: the model's context (sizes, item table, semantic IDs) and fingerprints of its inputs."""
from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np
import torch
from accelerate import Accelerator

from ..config import ExperimentConfig
from ..models import GENERATIVE, ModelContext

def build_context(cfg: ExperimentConfig, data, accelerator: Accelerator | None = None) -> ModelContext:
    """What the model may know about the data: sizes, item table, and (generative models) the semantic IDs.

    Under several processes rank 0 builds (or loads) the ID artifact first, then the others load it.
    """
    ctx = ModelContext(num_items=data.num_items, num_users=data.num_users, item_texts=data.items)
    if cfg.model.kind in GENERATIVE:
        from ..sids import build_sids

        with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():  # rank 0 builds (or loads) the artifact, the others load it
            sids = build_sids(cfg)
        if sids.codes.shape[0] != data.num_items:
            raise ValueError(f"semantic IDs cover {sids.codes.shape[0]} items but {cfg.data.name} has {data.num_items}")
        ctx.sid_codes = torch.cat([torch.zeros(1, sids.codes.shape[1], dtype=torch.long), sids.codes.long()])
        ctx.codebook_sizes = list(sids.codebook_sizes)
        ctx.extra["sids"] = sids
    return ctx


def input_fingerprints(data, ctx: ModelContext, times: bool = False) -> dict:
    """Hashes of what a run trains on: the interactions and item table, the semantic IDs (generative models), and
    the timestamps (``times``: models that read them; others are unaffected by a change of times).

    Stored in the checkpoint and the record; a resume or ``genrec eval`` on changed inputs stops (``check_inputs``).
    """
    h = hashlib.sha256()
    h.update(np.array([len(s) for s in data.sequences], dtype=np.int64).tobytes())
    h.update(np.concatenate(data.sequences).astype(np.int64).tobytes() if data.sequences else b"")
    h.update(json.dumps(data.items, sort_keys=True, default=str).encode())
    out = {"data": h.hexdigest()[:16], "data_source": data.source}
    if times and data.times is not None:
        out["times"] = hashlib.sha256(np.concatenate(data.times).astype(np.int64).tobytes()).hexdigest()[:16]
    if ctx.sid_codes is not None:
        out["semantic_ids"] = hashlib.sha256(ctx.sid_codes.numpy().tobytes()).hexdigest()[:16]
    return out


def check_inputs(run_dir: str, saved_state: dict, inputs: dict) -> None:
    """Raise ValueError when a run's saved inputs differ from today's (its weights would be scored on other data)."""
    saved = saved_state.get("inputs")
    if not saved:  # checkpoints written before fingerprints existed
        return
    for key, what in (("data", f"the data ({inputs.get('data_source') or 'generated'})"),
                      ("semantic_ids", "the semantic IDs (artifact rebuilt from other embeddings or settings)"),
                      ("times", "the interactions' timestamps")):
        if key == "times" and key not in saved:  # a model that reads no times
            continue
        if saved.get(key) != inputs.get(key):
            raise ValueError(f"{run_dir} was trained on other inputs: {what} changed since (fingerprint "
                             f"{saved.get(key)} -> {inputs.get(key)}). Start a new run (name=... or another "
                             f"output_dir) or restore the inputs; the old run and its record are left as they are.")


def sids_fields(ctx: ModelContext) -> dict:
    """The semantic-ID artifact a generative run used: file, build report, build seconds, levels ({} otherwise)."""
    sids = ctx.extra.get("sids")
    if sids is None:
        return {}
    return {"semantic_ids": {"artifact": sids.tokenizer_path.replace(".tokenizer.pt", ".pt"), "tokenizer": sids.tokenizer,
                             "codebook_sizes": list(sids.codebook_sizes), "report": sids.extra.get("report"),
                             "build_seconds": sids.extra.get("seconds")}}


__all__ = ["build_context", "check_inputs", "input_fingerprints", "sids_fields"]
