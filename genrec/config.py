"""Typed experiment configs: dataclass schemas + stacked YAML files + dotted overrides.

    cfg = load_config(["configs/sasrec/beauty.yaml", "configs/ablations/bce.yaml"], ["train.lr=3e-4"])

Later files win, then overrides. A misspelled key or a wrong type fails here, naming the key, the file
and the valid choices. This module imports no torch so that tools can read configs cheaply.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

V = TypeVar("V")


# --------------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    name: str = "tiny"  # key of genrec.data.DATASETS (a preset: reader + folder), or "custom"
    reader: str = ""  # key of genrec.data.READERS; "" takes the preset's reader
    path: str = ""  # folder or file, relative to data_root unless absolute; "" takes the preset's
    root: str = ""  # data root; "" reads $GENREC_DATA_ROOT, then ./data
    max_history: int = 20  # history items kept before each target (TIGER: 20)
    min_interactions: int = 3  # users with fewer are skipped (and counted) before leave-one-out
    kcore: int = 0  # iterative k-core filter on users and items; 0 keeps the data as read
    # HSTU's protocol (its research code trains on all but the last item): training sequences end at the validation
    # item. The validation target is then trained on, so no validation runs: train.epochs are trained and the last
    # weights tested, and eval.splits must be [test].
    train_on_valid: bool = False
    num_workers: int = 0


# ---------------------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingConfig:
    source: str = "text"  # key of genrec.embeddings.SOURCES: text | file | collab | fusion
    encoder: str = "minilm"  # local folder, hub name, or "minilm" (the offline default package)
    # Python format fields name item keys; a missing field drops itself and the literal text just before it.
    template: str = "{title}. Brand: {brand}. Categories: {categories}."
    pooling: str = "mean"  # mean (over the attention mask) | cls; sentence-transformers MiniLM uses mean
    normalize: bool = True  # L2-normalise each item vector (as MiniLM expects)
    batch_size: int = 128
    max_length: int = 128
    file: str = ""  # source=file: a .npy / .pt matrix (N, E) in item-id order (row 0 = item 1)
    fusion: list[str] = field(default_factory=list)  # source=fusion: "text", "collab" or files, concatenated
    collab_dim: int = 128  # collab: SVD dimensions of the PPMI co-occurrence of training sequences
    collab_window: int = 3  # collab: items within this many positions co-occur (weight 1 / distance)
    cache_dir: str = ".cache/genrec/embeddings"


# ---------------------------------------------------------------------------------------- tokenizers
@dataclass
class RQVAEConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent_dim: int = 32
    beta: float = 0.25  # commitment weight (TIGER, VQ-VAE)
    epochs: int = 50  # sized for <= 15 min per Beauty build on 2 CPU cores; a GPU can afford more
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    kmeans_init: bool = True  # initialise each level's codebook by k-means on the latent residuals
    kmeans_iters: int = 20
    dead_code_reset: bool = True  # re-seed codes unused over an epoch from current residuals
    reset_every: int = 1  # epochs between dead-code checks
    reset_until: float = 1.0  # reset during this fraction of the epochs (1.0: up to the last one)
    dropout: float = 0.0
    device: str = "cpu"  # cpu | cuda | auto


@dataclass
class RKMeansConfig:
    balanced: bool = False  # capacity-constrained assignment while fitting (equal-size clusters)
    iters: int = 50


@dataclass
class PQConfig:
    iters: int = 50


@dataclass
class OPQConfig:
    rotation: bool = True  # learn OPQ's rotation before PQ (Ge et al., CVPR 2013; RPG); false: plain PQ by faiss
    pca_dim: int = 0  # > 0: PCA to this many dimensions first (a multiple of num_levels); 0 keeps E
    whiten: bool = True  # with pca_dim: scale each principal component to unit variance (RPG)


@dataclass
class TokenizerConfig:
    kind: str = "rqvae"  # key of genrec.tokenizers.TOKENIZERS: rqvae | rkmeans | pq | opq | random | lsh
    num_levels: int = 3  # L, before the collision digit
    codebook_size: int = 256  # K per level (lsh: a power of two)
    dedup: bool = True  # append a collision digit so every item's ID is unique
    seed: int = 0
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    rkmeans: RKMeansConfig = field(default_factory=RKMeansConfig)
    pq: PQConfig = field(default_factory=PQConfig)
    opq: OPQConfig = field(default_factory=OPQConfig)
    out_dir: str = ".cache/genrec/sids"


# -------------------------------------------------------------------------------------------- models
@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    loss: str = "ce"  # key of genrec.models.sasrec.LOSSES: ce | bce | sampled
    num_negatives: int = 1  # loss=bce (per position) and loss=sampled (per position, uniform)
    temperature: float = 1.0  # logits / temperature (every loss, and the scores)
    negatives: str = "position"  # loss=sampled: position (own draw each) | sequence (one draw per row, shared)
    l2_norm: bool = False  # L2-normalise the sequence state and the item embeddings (HSTU's SASRec row: with 0.05)
    # mask padded keys and count positions from the oldest item (HSTU's right-padded SASRec); false: the original
    # code's left padding, visible to attention
    mask_padding: bool = False
    # HSTU's SASRec baseline's other details: layer norms without affine, no final layer norm, its initialisation
    reference_details: bool = False
    # mha: torch.nn.MultiheadAttention (the original, attention-weight dropout); or a key of genrec.attention.ATTENTION
    # (sdpa eager flex linear hstu ...) on the same projections, without attention dropout
    attention: str = "mha"
    window: int = 0  # > 0: each position sees its `window` most recent items (needs a kernel, not mha)


@dataclass
class DecoderConfig:
    dim: int = 128
    layers: int = 4
    heads: int = 4
    mlp: str = "swiglu"  # swiglu | gelu
    mlp_ratio: float = 4.0
    positions: str = "rope"  # rope | learned
    dropout: float = 0.1
    num_user_tokens: int = 2000  # hashed user tokens; 0 disables
    window: int = 0  # sliding attention window in tokens, 0 = full causal (eager, sdpa, flash, flex, hstu)
    loss_on: str = "target"  # target: the target item's L codes (TIGER) | all: every item's codes (causal LM)
    pack: bool = True  # pack training sequences into rows with doc_ids (needs a kernel with doc_ids; not linear)
    # add a learned embedding of each code's ID prefix (levels 2 .. L; the full ID: one row per item) to its input
    # (prefix n-grams, Singh et al. 2024): every item gets an input row of its own while the codes stay shared
    prefix_embedding: bool = False
    # score a code at levels 1 .. L-1 also by the prefix row it completes (h . code row + h . prefix row): the output
    # side of prefix_embedding, tied to the same rows, so every item has an output row of its own at the last level
    prefix_output: bool = False
    # 0: one prefix row per prefix (at the last level one per item); B > 0: a table of B rows, prefix id i on row
    # 1 + (i - 1) mod B, for catalogs too large for a row per item (rows are then shared by unrelated prefixes; the
    # output side scores against the B rows, not one per prefix)
    prefix_buckets: int = 0


@dataclass
class TigerConfig:
    d_model: int = 128
    d_kv: int = 64
    num_heads: int = 6
    d_ff: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.1
    num_user_tokens: int = 2000  # hashed user-ID tokens (TIGER: 2000); 0 disables the user token
    feed_forward_proj: str = "relu"  # T5 MLP: relu (original T5, as in TIGER) | gated-gelu (T5 v1.1)
    relative_attention_num_buckets: int = 32  # T5 defaults
    relative_attention_max_distance: int = 128
    softmax: str = "full"  # full: log_softmax over the whole vocab (paper's CE) | level: over the level's codes
    encoder_chunk: int = 0  # > 0: encode length-sorted chunks of this many rows, each trimmed (same result, less padding)
    encoder_eos: bool = False  # end the encoder input with </s>, as T5 inputs do
    # > 0 (at least data.max_history): add a learned embedding of each history token's recency (1 = the latest
    # item) to the encoder input. Plain T5 has only relative positions, so finding the latest item is slow to learn.
    recency_positions: int = 0


@dataclass
class HSTUConfig:
    """HSTU over item IDs (``model.kind=hstu``, genrec/models/hstu.py); defaults are HSTU's ML-1M settings."""

    dim: int = 50
    layers: int = 2
    heads: int = 1
    dqk: int = 50  # per-head query / key size (HSTU-large: 25)
    dv: int = 50  # per-head value size (HSTU-large: 25)
    dropout: float = 0.2
    loss: str = "sampled"  # sampled | ce (genrec.models.losses)
    num_negatives: int = 128
    temperature: float = 0.05
    negatives: str = "position"  # loss=sampled: position (HSTU's) | sequence (one draw per row: a CPU-cheap matmul)
    # the research code's block details (genrec/models/hstu.py): constant 1/n, layer norms without affine, no U/V/Q/K
    # bias, positions from the oldest item, its initialisation
    reference_details: bool = False
    shared_bias: bool = False  # one relative-position table per layer for all heads (the research code's)
    # HSTU's relative time bias: a learned weight per log-bucket of the time between the request and each history
    # item; needs data with timestamps (MovieLens ratings.dat, a user table), not sequences.txt
    time_bias: bool = False
    time_buckets: int = 128  # buckets 0..time_buckets, bucket = floor(ln(max(|gap seconds|, 1)) / 0.301)


@dataclass
class ParallelConfig:
    """Item-level parallel semantic-ID decoder (``model.kind=parallel``, genrec/models/parallel.py)."""

    dim: int = 128
    layers: int = 2
    heads: int = 4
    mlp: str = "gelu"  # gelu | swiglu
    mlp_ratio: float = 4.0
    positions: str = "learned"  # learned | rope
    window: int = 0  # sliding attention window in items, 0 = full causal
    dropout: float = 0.2  # inside the blocks
    input_dropout: float = 0.5  # on the pooled item inputs (RPG: 0.5)
    pooling: str = "mean"  # mean | sum | attention: how an item's L code embeddings become one input vector
    item_embedding: bool = False  # add a learned per-item embedding to the pooled codes (hybrid input; LIGER)
    num_user_tokens: int = 0  # > 0: a hashed user token before the first item
    head: str = "dot"  # dot (tied to the code table) | cosine (both normalised, divided by temperature; RPG)
    temperature: float = 0.07  # head=cosine
    # level: mean per-level cross-entropy of the next item's codes (RPG) | item: full-catalog softmax over items,
    # an item's logit the sum of its codes' logits (the joint the ranking uses; the same exact scores rank items)
    loss: str = "level"
    topk: str = "exact"  # exact: score every item (sum of per-level log-probs) | beam: trie beam search (approx.)
    score_chunk: int = 65536  # items scored at a time by the exact top-K


@dataclass
class LoRAConfig:
    enabled: bool = True  # False: full fine-tuning
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    train_new_tokens: bool = True  # train the rows of the added semantic-ID tokens


@dataclass
class LLMConfig:
    base: str = "smollm2"  # local folder, hub name, or "smollm2" (the offline default package)
    # the base's weights as loaded: float32 | bfloat16 | float16 (train.precision sets autocast). With LoRA, the adapter
    # weights and new token rows stay fp32 master weights whatever the base holds (peft upcasts them)
    dtype: str = "float32"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # task -> passes over its pool per epoch: seqrec | seqrec_with_titles (training examples), title2id | id2title |
    # desc2id (items), or a task of `prompts`
    tasks: dict[str, float] = field(default_factory=lambda: {"seqrec": 1.0})
    # a task as data: name -> {pool: sequences|items, prompt, response[, history_item, item_sep]}, added to (or
    # replacing) the built-in templates of genrec.llm.prompts; fields {history} {sid} {title} {brand} {categories}
    # {description}
    prompts: dict[str, dict[str, str]] = field(default_factory=dict)
    # tokenised rows of the item tasks, a Hugging Face `datasets` arrow file per (texts, tokenizer); "" = in memory
    cache_dir: str = ".cache/genrec/llm_tasks"
    with_titles: bool = False  # recommend() prompts with seqrec_with_titles instead of seqrec
    # seqrec examples: target = one per training prefix, loss on its next item (LC-Rec); all = one per user, its
    # window in one row (genrec.llm.prompts.PackedLayout), loss on every item: 8x fewer padded tokens per Beauty
    # epoch (results/bench/llm_packing_cpu.json)
    loss_on: str = "target"
    gradient_checkpointing: bool = False
    max_length: int = 512  # tokens per example; longer prompts lose their oldest history first
    max_title_words: int = 20  # titles in prompts and responses are cut to this many words
    token_init: str = "mean"  # new token rows: mean (of all rows) | titles (of the title tokens of the code's items)
    token_init_noise: float = 0.01  # new token rows = init + noise * std * N(0, 1)
    # full: cross-entropy over the whole vocabulary (and recommend's log-softmax over it, sliced to a level's codes);
    # sid: each code label scored only against its level's code rows in training and in recommend (log-softmax
    # over the level's codes); text labels (id2title's titles) over the whole vocabulary; EOS labels left out
    head: str = "full"


@dataclass
class ModelConfig:
    kind: str = "sasrec"  # key of genrec.models.MODELS: pop sasrec hstu decoder tiger llm parallel
    attention: str = "sdpa"  # key of genrec.attention.ATTENTION (decoder, parallel): eager sdpa flash flex linear hstu
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    tiger: TigerConfig = field(default_factory=TigerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    hstu: HSTUConfig = field(default_factory=HSTUConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


# ------------------------------------------------------------------------------------ train and eval
@dataclass
class TrainConfig:
    epochs: int = 200
    max_steps: int = 0  # > 0 stops after this many optimiser steps (across epochs)
    batch_size: int = 256
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "constant"  # key of genrec.training.optim.SCHEDULERS
    optimizer: str = "adamw"  # key of genrec.training.optim.OPTIMIZERS
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16
    eval_every: int = 1  # epochs between validations
    patience: int = 10  # validations without improvement of the monitored metric before stopping
    monitor: str = "ndcg@10"
    checkpoint_every: int = 1  # epochs between checkpoints
    log_every: int = 50  # optimiser steps between loss logs; 0 = no loss logs (and no host sync in any step)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard", "wandb"])  # wandb: when installed; offline unless logged in
    progress: bool = True
    threads: int = 0  # torch.set_num_threads on CPU; 0 leaves torch's default
    resume: bool = True  # continue from the run folder's last checkpoint when there is one
    checkpoint_steps: int = 0  # > 0 also checkpoints every N optimiser steps inside an epoch
    finish: bool = False  # stop a resumed run here: test its best weights and write the record (noted in it)
    bucket_by_length: bool = False  # batches of rows of similar length (less padding; datasets with lengths())
    # torch.compile the model (accelerate's dynamo plugin, inductor); batches keep their padded width
    # (``Recommender.static_shapes``) so one graph serves every step (the LLM: widths in steps of 64, a few
    # graphs); "reduce-overhead" adds CUDA graphs on GPU
    compile: bool = False
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune (torch.compile's mode)


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10])
    batch_size: int = 256
    beam_size: int = 20  # generative models: beams for constrained search (>= max(ks))
    max_users: int = 0  # > 0 evaluates a fixed random subset of users (stated in the record)
    subset_seed: int = 0  # picks that subset; independent of `seed`, so seed-averaged rows share their users
    valid_max_users: int = 0  # > 0 overrides max_users for validation only (cheap early stopping)
    splits: list[str] = field(default_factory=lambda: ["valid", "test"])
    # Rank only items outside the user's history (RecBole / RePlay full-sort protocol). Off: TIGER's protocol,
    # every item is a candidate. Records and tables name the protocol.
    exclude_history: bool = False
    # exclude_history removes: all (every item before the target) | window (only the last data.max_history items,
    # the history the model reads: HSTU's protocol, ``filter_invalid_ids`` over its ``past_ids``)
    exclude_scope: str = "all"


@dataclass
class ExperimentConfig:
    name: str = ""  # run name; "" derives one from the config files, overrides and seed
    seed: int = 0
    output_dir: str = "runs"
    results_dir: str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Set by load_config: the files and overrides this config came from (for run names and records).
    sources: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def lookup(table: Mapping[str, V], key: str, field: str) -> V:
    """``table[key]``, or a ValueError naming the config field and the valid keys."""
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{field}={key!r} is not one of {sorted(table)}.{hint}")


def _valid_keys(schema: Any, dotted: str) -> list[str]:
    node = schema
    for part in [p for p in dotted.split(".") if p][:-1]:
        node = getattr(node, part, None)
        if not dataclasses.is_dataclass(node):
            return []
    return sorted(f.name for f in dataclasses.fields(node)) if dataclasses.is_dataclass(node) else []


def _merge(cfg: Any, other: Any, origin: str) -> Any:
    try:
        return OmegaConf.merge(cfg, other)
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        valid = _valid_keys(ExperimentConfig(), key)
        close = difflib.get_close_matches(key.split(".")[-1], valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{origin}: unknown key {key!r}; valid keys here: {valid}.{hint}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{origin}: bad value for {key!r}: {e.msg if hasattr(e, 'msg') else e}") from None


def load_config(paths: list[str] | tuple[str, ...] = (), overrides: list[str] | tuple[str, ...] = (),
                validate: bool = True) -> ExperimentConfig:
    """Merge YAML files (later win) and dotted overrides (``train.lr=3e-4``) over the schema defaults.

    With ``validate`` (the default) every value and choice is checked (``genrec.checks``).

    Raises:
        ConfigError: unknown key or wrong type, naming the key, the file or override, and valid keys; a value
            out of range or not among the choices, naming the key, the value and what was expected.
        FileNotFoundError: a config file that does not exist.
    """
    cfg = OmegaConf.structured(ExperimentConfig)
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        loaded = OmegaConf.load(path)
        if loaded is None or not OmegaConf.is_dict(loaded):
            if loaded is None or len(loaded) == 0:  # an empty file is a no-op
                continue
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        cfg = _merge(cfg, loaded, path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    try:
        out: ExperimentConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:  # a required ??? value left unset
        raise ConfigError(f"missing value: {e}") from None
    out.sources = [*paths, *overrides]
    if validate:
        from .checks import check_config  # one table of value and choice constraints (imports registries on use)

        check_config(out)
    return out


def to_dict(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: ExperimentConfig, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


__all__ = ["ExperimentConfig", "ConfigError", "MISSING", "load_config", "lookup", "save_config", "to_dict"]
