"""Run names: ``<config stems>[__<overrides>]__s<seed>-<hash>``, equal on every rank and unique per config."""
from __future__ import annotations

import hashlib
import json

from ..config import ExperimentConfig, to_dict

# Keys that never change what a run computes: left out of run names and their hashes.
_NAME_IGNORED = ("sources", "name", "output_dir", "results_dir", "train.progress", "train.threads", "train.resume",
                 "train.finish", "train.trackers", "train.log_every", "train.checkpoint_steps", "model.llm.cache_dir")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_delta(resolved: dict) -> dict:
    """Dotted keys of a resolved config (``to_dict``) whose values differ from the schema defaults.

    A field added to the schema later, with a default, does not appear, so it changes no existing run's name.
    """
    defaults = _flatten(to_dict(ExperimentConfig()))
    flat = _flatten(resolved)
    return {k: v for k, v in flat.items() if not k.startswith(_NAME_IGNORED) and defaults.get(k, object()) != v}


_OVERRIDES_SHOWN = 120  # characters of overrides a name spells out; the hash covers every value


def overrides_part(overrides: list[str]) -> str:
    """The overrides a name spells out: whole ones while they fit in ``_OVERRIDES_SHOWN`` characters, then ``+N``.

    A cut never falls inside an override, so a name never shows a value it does not have (``window=5`` for
    ``window=50``); ``+N`` counts the overrides left out, which the hash and the record's config still hold.
    """
    shown = [o.replace("/", "-") for o in overrides]
    kept = 0
    while kept < len(shown) and len("_".join(shown[:kept + 1])) <= _OVERRIDES_SHOWN:
        kept += 1
    left_out = f"+{len(shown) - kept}" if kept < len(shown) else ""
    return "_".join(shown[:kept] + ([left_out] if left_out else []))


def run_name(cfg: ExperimentConfig) -> str:
    """``<config stems>[__<overrides>]__s<seed>-<hash>``: readable, equal on all ranks, and unique per config.

    The hash covers the values that differ from the schema defaults (``config_delta``), so runs keep their names
    (and resume, and the table runner finds their records) when the schema gains fields.
    """
    if cfg.name:
        return cfg.name
    stems = ["-".join(p.replace(".yaml", "").split("/")[-2:]) for p in cfg.sources if p.endswith(".yaml")]
    overrides = [o for o in cfg.sources if not o.endswith(".yaml") and not o.startswith(("seed=", *_NAME_IGNORED))]
    delta = config_delta(to_dict(cfg))
    digest = hashlib.sha1(json.dumps(delta, sort_keys=True).encode()).hexdigest()[:6]
    parts = ["_".join(stems) or f"{cfg.model.kind}-{cfg.data.name}"]
    if overrides:
        parts.append(overrides_part(overrides))
    parts.append(f"s{cfg.seed}-{digest}")
    return "__".join(parts)


__all__ = ["config_delta", "overrides_part", "run_name"]
