"""Model registry: ``MODELS[cfg.model.kind](cfg, ctx) -> nn.Module`` (see ``base.py`` for the contract).

Entries import their module on use, so ``import genrec`` stays light and optional dependencies (peft for
``llm``) are needed only by the models that use them.
"""
from __future__ import annotations

from ..config import lookup
from .base import ModelContext, ModelFactory, Output, Recommender


def _sasrec(cfg, ctx):
    from .sasrec import SASRec

    return SASRec.from_config(cfg, ctx)


def _decoder(cfg, ctx):
    from .decoder import DecoderRecommender

    return DecoderRecommender.from_config(cfg, ctx)


def _tiger(cfg, ctx):
    from .tiger import TigerModel

    return TigerModel.from_config(cfg, ctx)


def _llm(cfg, ctx):
    from .llm_lora import LLMRecommender

    return LLMRecommender.from_config(cfg, ctx)


def _parallel(cfg, ctx):
    from .parallel import ParallelSidModel

    return ParallelSidModel.from_config(cfg, ctx)


def _hstu(cfg, ctx):
    from .hstu import HSTU

    return HSTU.from_config(cfg, ctx)


def _pop(cfg, ctx):
    from .pop import Popularity

    return Popularity.from_config(cfg, ctx)


MODELS: dict[str, ModelFactory] = {"pop": _pop, "sasrec": _sasrec, "decoder": _decoder, "tiger": _tiger, "llm": _llm,
                               "parallel": _parallel, "hstu": _hstu}
GENERATIVE = {"decoder", "tiger", "llm", "parallel"}  # models that read semantic IDs


def build_model(cfg, ctx: ModelContext):
    return lookup(MODELS, cfg.model.kind, field="model.kind")(cfg, ctx)


__all__ = ["MODELS", "GENERATIVE", "ModelContext", "Output", "Recommender", "build_model"]
