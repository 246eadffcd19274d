"""Every value and choice of a config, checked when it loads: one table of constraints, not checks spread over
the code, so a typo or an impossible value costs a second, not an epoch (litgpt's ``Config``, pydantic-style).

``check_config(cfg)`` is called by ``genrec.config.load_config``; it raises ``ConfigError`` naming the key, the
value and what was expected. Choices are read from the registries themselves (``MODELS``, ``ATTENTION``, ...),
imported here on use so that ``genrec.config`` stays free of torch.
"""
from __future__ import annotations

import re
from typing import Any, Callable


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _registry(module: str, name: str) -> Callable[[], list[str]]:
    def keys() -> list[str]:
        import importlib

        return sorted(getattr(importlib.import_module(module), name))

    return keys


# key -> (test, what is expected)
POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.max_history": POSITIVE, "data.min_interactions": (lambda v: v >= 3, ">= 3 (leave-one-out needs 3 items)"),
    "data.kcore": NON_NEGATIVE, "data.num_workers": NON_NEGATIVE,
    "embedding.batch_size": POSITIVE, "embedding.max_length": POSITIVE, "embedding.collab_dim": POSITIVE,
    "embedding.collab_window": POSITIVE,
    "tokenizer.num_levels": POSITIVE, "tokenizer.codebook_size": (lambda v: v >= 2, ">= 2"),
    "model.sasrec.hidden": POSITIVE, "model.sasrec.layers": POSITIVE, "model.sasrec.heads": POSITIVE,
    "model.sasrec.dropout": PROBABILITY, "model.sasrec.num_negatives": POSITIVE,
    "model.decoder.dim": POSITIVE, "model.decoder.layers": POSITIVE, "model.decoder.heads": POSITIVE,
    "model.decoder.dropout": PROBABILITY, "model.decoder.num_user_tokens": NON_NEGATIVE,
    "model.decoder.window": NON_NEGATIVE, "model.decoder.mlp_ratio": POSITIVE,
    "model.tiger.d_model": POSITIVE, "model.tiger.d_kv": POSITIVE, "model.tiger.num_heads": POSITIVE,
    "model.tiger.d_ff": POSITIVE, "model.tiger.encoder_layers": POSITIVE, "model.tiger.decoder_layers": POSITIVE,
    "model.tiger.dropout": PROBABILITY, "model.tiger.num_user_tokens": NON_NEGATIVE,
    "model.tiger.recency_positions": NON_NEGATIVE, "model.tiger.encoder_chunk": NON_NEGATIVE,
    "model.parallel.dim": POSITIVE, "model.parallel.layers": POSITIVE, "model.parallel.heads": POSITIVE,
    "model.parallel.dropout": PROBABILITY, "model.parallel.input_dropout": PROBABILITY,
    "model.parallel.num_user_tokens": NON_NEGATIVE, "model.parallel.window": NON_NEGATIVE,
    "model.parallel.temperature": POSITIVE, "model.parallel.score_chunk": POSITIVE,
    "model.parallel.mlp_ratio": POSITIVE,
    "model.sasrec.temperature": POSITIVE, "model.sasrec.window": NON_NEGATIVE,
    "model.hstu.dim": POSITIVE, "model.hstu.layers": POSITIVE, "model.hstu.heads": POSITIVE,
    "model.hstu.dqk": POSITIVE, "model.hstu.dv": POSITIVE, "model.hstu.dropout": PROBABILITY,
    "model.hstu.num_negatives": POSITIVE, "model.hstu.temperature": POSITIVE,
    "model.llm.max_length": POSITIVE, "model.llm.lora.r": POSITIVE,
    "train.epochs": POSITIVE, "train.max_steps": NON_NEGATIVE, "train.batch_size": POSITIVE,
    "train.grad_accum": POSITIVE, "train.lr": POSITIVE, "train.weight_decay": NON_NEGATIVE,
    "train.warmup_steps": NON_NEGATIVE, "train.grad_clip": NON_NEGATIVE, "train.eval_every": POSITIVE,
    "train.patience": POSITIVE, "train.checkpoint_every": POSITIVE, "train.log_every": NON_NEGATIVE,
    "train.threads": NON_NEGATIVE, "train.checkpoint_steps": NON_NEGATIVE,
    "eval.batch_size": POSITIVE, "eval.beam_size": POSITIVE, "eval.max_users": NON_NEGATIVE,
    "eval.valid_max_users": NON_NEGATIVE,
}
CHOICES: dict[str, Callable[[], list[str]]] = {
    "model.kind": _registry("genrec.models", "MODELS"),
    "model.attention": _registry("genrec.attention", "ATTENTION"),
    "model.sasrec.attention": lambda: ["mha", *_registry("genrec.attention", "ATTENTION")()],
    "tokenizer.kind": _registry("genrec.tokenizers", "TOKENIZERS"),
    "embedding.source": _registry("genrec.embeddings", "SOURCES"),
    "train.optimizer": _registry("genrec.training.optim", "OPTIMIZERS"),
    "train.scheduler": _registry("genrec.training.optim", "SCHEDULERS"),
    "train.precision": lambda: ["auto", "bf16", "fp16", "no"],
    "train.compile_mode": lambda: ["default", "max-autotune", "reduce-overhead"],
    "eval.exclude_scope": lambda: ["all", "window"],
    "model.sasrec.loss": lambda: ["bce", "ce", "sampled"], "model.hstu.loss": lambda: ["ce", "sampled"],
    "model.sasrec.negatives": lambda: ["position", "sequence"], "model.hstu.negatives": lambda: ["position", "sequence"],
    "model.decoder.mlp": lambda: ["gelu", "swiglu"], "model.decoder.positions": lambda: ["learned", "rope"],
    "model.decoder.loss_on": lambda: ["all", "target"],
    "model.tiger.softmax": lambda: ["full", "level"],
    "model.parallel.mlp": lambda: ["gelu", "swiglu"], "model.parallel.positions": lambda: ["learned", "rope"],
    "model.parallel.pooling": lambda: ["attention", "mean", "sum"], "model.parallel.head": lambda: ["cosine", "dot"],
    "model.parallel.topk": lambda: ["beam", "exact"], "model.parallel.loss": lambda: ["item", "level"],
    "model.llm.loss_on": lambda: ["all", "target"], "model.llm.head": lambda: ["full", "sid"],
}


def _cross_field(cfg) -> list[str]:
    """Rules between fields; each failure is one message."""
    errors = []
    ks = list(cfg.eval.ks)
    if not ks or any(k <= 0 for k in ks):
        errors.append(f"eval.ks={ks} must be a non-empty list of positive cut-offs")
    m = re.fullmatch(r"(ndcg|recall)@(\d+)", cfg.train.monitor)
    if not m or int(m.group(2)) not in ks:
        errors.append(f"train.monitor={cfg.train.monitor!r} must be ndcg@K or recall@K with K in eval.ks={ks}")
    bad = [s for s in cfg.eval.splits if s not in ("valid", "test")]
    if bad or not cfg.eval.splits:
        errors.append(f"eval.splits={list(cfg.eval.splits)} must name 'valid' and/or 'test'")
    if cfg.data.train_on_valid and "valid" in cfg.eval.splits:
        errors.append(f"data.train_on_valid=true trains on the validation item, so eval.splits="
                      f"{list(cfg.eval.splits)} must not name 'valid': set eval.splits=[test]")
    for model in ("decoder", "parallel"):
        sub = getattr(cfg.model, model)
        if cfg.model.kind == model and sub.dim % sub.heads:
            errors.append(f"model.{model}.dim={sub.dim} must be divisible by model.{model}.heads={sub.heads}")
    if cfg.model.kind == "llm":  # task templates and names, before any data or model is loaded
        from .config import lookup
        from .llm.prompts import templates

        try:
            pools = templates(cfg.model.llm.prompts)
            for task in cfg.model.llm.tasks:
                lookup(pools, task, field="model.llm.tasks")
        except ValueError as e:
            errors.append(str(e))
    if cfg.model.kind == "sasrec" and cfg.model.sasrec.reference_details and not cfg.model.sasrec.mask_padding:
        errors.append("model.sasrec.reference_details=true needs model.sasrec.mask_padding=true: HSTU's SASRec rows "
                      "are right-padded (padding never attended to, positions from the oldest item)")
    if cfg.model.kind == "sasrec" and cfg.model.sasrec.window:
        from .models.sasrec import WINDOWLESS

        if cfg.model.sasrec.attention in WINDOWLESS:
            errors.append(f"model.sasrec.window={cfg.model.sasrec.window} needs a kernel with a window: set "
                          "model.sasrec.attention to sdpa (or flex, eager, hstu); "
                          f"{cfg.model.sasrec.attention!r} has none")
    if cfg.train.compile and cfg.model.kind == "decoder" and cfg.model.decoder.pack:
        errors.append("train.compile=true needs model.decoder.pack=false: packing builds rows of data-dependent "
                      "shape on the host every step")
    return errors


def check_config(cfg) -> None:
    """Raise ``ConfigError`` listing every value that breaks ``RANGES``, ``CHOICES`` or a cross-field rule."""
    from .config import ConfigError, lookup

    errors = []
    for key, (ok, expected) in RANGES.items():
        value = _get(cfg, key)
        if not ok(value):
            errors.append(f"{key}={value!r} must be {expected}")
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        try:
            lookup(dict.fromkeys(choices()), value, field=key)
        except ValueError as e:
            errors.append(str(e))
    errors += _cross_field(cfg)
    if errors:
        raise ConfigError("; ".join(errors))


__all__ = ["CHOICES", "RANGES", "check_config"]
