"""A pretrained causal LM that recommends by generating semantic IDs, fine-tuned with LoRA.

LC-Rec (Zheng et al., ICDE 2024) extends an LLM's vocabulary with one token per (level, code) of the items'
semantic IDs, trains on sequential recommendation plus alignment tasks between IDs and item text, and retrieves
with beam search constrained to valid IDs. Here:

* any Hugging Face causal LM (LLaMA / Qwen2 / SmolLM families), from a folder, a hub name, or ``"smollm2"``
  (the offline default, converted once by ``genrec.llm.pretrained``);
* new rows initialised from the mean of the existing rows plus small seeded noise (Hewitt, 2021, "Initializing
  new word embeddings for pretrained language models": a new token then starts near the average token instead
  of dominating the softmax), for the input embedding and, when untied, for the output head;
* LoRA (Hu et al., ICLR 2022) through peft, the new rows trained through ``trainable_token_indices`` so the
  adapter stores only those rows, never the whole resized embedding;
* ``loss_on="all"``: a user's whole training window in one row (``genrec.llm.prompts.PackedLayout``) with the
  loss on every item, instead of one example per prefix: the same next-item targets for a fraction of the tokens,
  and ``recommend`` prompts with that row's layout, so each target's training context is its inference prompt;
* decoding by the project's trie beam search (``genrec.generation``), greedy-deterministic: the checkpoint's
  generation config (instruct models ship sampling settings) is never consulted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..config import LLMConfig, lookup
from ..generation.hf_steps import left_padded_mask
from ..llm.pretrained import resolve_pretrained
from ..llm.prompts import PACKED, templates
from ..llm.task_cache import TokenizedItemTasks
from ..llm.tasks import (IGNORE_INDEX, TaskMixture, TextRenderer, Tokenized, packed_example, pad_batch,
                         tokenize_example)
from ..llm.tokens import SidTokenMap, add_sid_tokens
from .base import ModelContext, Output
from .vocab import SidModel, SidVocab

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ADAPTER_META = "genrec_llm.json"
LOSS_ON = {"target": "one example per training prefix", "all": "one packed row per user"}


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"module {type(module).__name__} not found in {type(model).__name__}")


def has_tied_head(lm) -> bool:
    """Whether the output head shares the input embedding's weight (also under peft's trainable-token wrappers)."""
    out = lm.get_output_embeddings()
    unwrap = lambda m: getattr(m, "original_module", m)  # noqa: E731 (peft's TrainableTokensWrapper)
    return out is not None and unwrap(out).weight is unwrap(lm.get_input_embeddings()).weight


def load_base(name: str, dtype: str = "float32"):
    """(model, tokenizer) for ``name`` (``"smollm2"``, a folder or a hub name), with deterministic generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_pretrained(name)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=lookup(DTYPES, dtype, field="model.llm.dtype"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gc = lm.generation_config  # never sample, whatever the checkpoint says (exported models inherit this)
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k = False, None, None, None
    return lm, tokenizer


def title_rows(tokenizer, weight: torch.Tensor, sid_codes: torch.Tensor, codebook_sizes: Sequence[int],
               titles: Sequence[str | None], max_tokens: int = 32) -> torch.Tensor:
    """Per (level, code): the mean over items with that code of the mean embedding of the item's title tokens.

    Gives each semantic-ID token a start in the LM's own word space (``<a_12>`` ~ "lipstick, lip, matte"), so the
    pretrained network can relate the IDs of a history before it has learned them. Codes whose items have no
    title fall back to the mean row.

    Args:
        weight: (V0, D) pretrained embedding (or output head) rows.
        sid_codes: (N + 1, L) codes, row 0 padding; titles: N + 1 entries, index = item id.

    Returns:
        (sum K_l, D) float rows, level-major like ``sid_vocabulary``.
    """
    w = weight.float()
    items = [i for i in range(1, len(titles)) if titles[i]]
    ids = tokenizer([" " + titles[i] for i in items], add_special_tokens=False)["input_ids"]
    vecs = torch.stack([w[torch.tensor(t[:max_tokens] or [0])].mean(0) for t in ids]) if items else w[:0]
    codes = sid_codes[torch.tensor(items, dtype=torch.long)] if items else sid_codes[:0]
    out = []
    for lvl, k in enumerate(codebook_sizes):
        sums = torch.zeros(int(k), w.shape[1]).index_add_(0, codes[:, lvl], vecs)
        counts = torch.bincount(codes[:, lvl], minlength=int(k)).float()[:, None]
        out.append(torch.where(counts > 0, sums / counts.clamp(min=1), w.mean(0)))
    return torch.cat(out)


@torch.no_grad()
def add_tokens_and_resize(lm, tokenizer, codebook_sizes: Sequence[int], noise: float = 0.01, seed: int = 0,
                          init: str = "mean", sid_codes: torch.Tensor | None = None,
                          titles: Sequence[str | None] | None = None) -> list[int]:
    """Add one token per (level, code), grow the embeddings, initialise the new rows; return their ids.

    ``init="mean"``: new rows = mean of the pretrained rows; ``init="titles"``: :func:`title_rows`. Either way
    plus ``noise`` * (per-dimension std) * N(0, 1) from a seeded generator, so that rebuilding the model for a
    reload gives the same rows. Handles tied heads (one matrix) and untied heads (both matrices), and tokenizers
    shorter than the model's padded vocabulary (Qwen2): new ids may land in existing padding rows, which are
    overwritten.

    Raises:
        ValueError: an unknown ``init``, or ``init="titles"`` without codes and titles.
    """
    if init not in ("mean", "titles"):
        raise ValueError(f"model.llm.token_init={init!r} is not one of ['mean', 'titles']")
    if init == "titles" and (sid_codes is None or titles is None):
        raise ValueError("model.llm.token_init='titles' needs item titles (ctx.item_texts); use token_init=mean")
    old_len = len(tokenizer)
    add_sid_tokens(tokenizer, codebook_sizes)
    new_ids = list(range(old_len, len(tokenizer)))
    emb = lm.get_input_embeddings()
    old_rows = min(old_len, emb.weight.shape[0])
    if len(tokenizer) > emb.weight.shape[0]:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor(new_ids)
    mats = [lm.get_input_embeddings().weight]
    if not has_tied_head(lm) and lm.get_output_embeddings() is not None:
        mats.append(lm.get_output_embeddings().weight)
    for w in mats:
        ref = w[:old_rows].float().cpu()
        base = ref.mean(0).expand(len(new_ids), -1) if init == "mean" else \
            title_rows(tokenizer, ref, sid_codes, codebook_sizes, titles)
        rows = base + noise * ref.std(0) * torch.randn(len(new_ids), w.shape[1], generator=g)
        w[idx.to(w.device)] = rows.to(w.dtype).to(w.device)
    return new_ids


def wrap_lora(lm, lora, new_ids: list[int]):
    """peft LoRA on ``lora.target_modules``; the new token rows train via ``trainable_token_indices``."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    tti = None
    if lora.train_new_tokens:
        tti = {_module_name(lm, lm.get_input_embeddings()): new_ids}
        if not has_tied_head(lm) and lm.get_output_embeddings() is not None:
            tti[_module_name(lm, lm.get_output_embeddings())] = new_ids  # else the new output rows stay at init
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
                            trainable_token_indices=tti)
    return get_peft_model(lm, config)


class LLMRecommender(SidModel):
    """Causal LM + semantic-ID tokens (+ LoRA); ``model(batch)`` trains, ``recommend(batch, k)`` retrieves.

    Args:
        lm: the (peft-wrapped or plain) causal LM, vocabulary already extended.
        tokenizer: its tokenizer, holding the semantic-ID tokens.
        sid_codes: (N + 1, L) codes, row 0 padding.
        codebook_sizes: K_l per level.
        item_texts: item table for titles (row i = item i + 1), or None.
        llm: the model.llm config.
        beam_size: default beams for ``recommend``.
        seed: seeds the task mixture.
    """

    STATIC_STEP = 64  # static_shapes (train.compile): batch widths are multiples of this, up to max_length

    example_mode = "next_item"

    def __init__(self, lm, tokenizer, sid_codes: torch.Tensor, codebook_sizes: Sequence[int],
                 item_texts: list[dict] | None, llm: LLMConfig, beam_size: int = 20, seed: int = 0):
        super().__init__()
        self.lm, self.tokenizer, self.llm = lm, tokenizer, llm
        self.tokens = SidTokenMap.from_tokenizer(tokenizer, [int(k) for k in codebook_sizes])
        self._level_ids_on: dict[torch.device, list[torch.Tensor]] = {}  # the level ids per device (_level_ids)
        self._level_span = [(int(ids[0]), len(ids)) for ids in self.tokens.level_ids]  # (first token id, codes)
        self._eos_id = tokenizer.eos_token_id  # (read in the training forward: a plain int traces, a tokenizer not)
        first = int(self.tokens.level_ids[0][0])  # the codes are tokens added after the base vocabulary
        if self.tokens.all_ids != list(range(first, first + sum(int(k) for k in codebook_sizes))):
            raise ValueError("the tokenizer's semantic-ID tokens are not one contiguous block, level-major "
                             "(genrec.llm.tokens.add_sid_tokens adds them so); rebuild it from the base model")
        self.vocab = SidVocab(sid_codes, codebook_sizes, num_special=first, owner="model.kind='llm'")
        self.templates = templates(llm.prompts)  # built-in tasks + model.llm.prompts
        self.task_pools = {name: tpl.pool for name, tpl in self.templates.items()}
        self.renderer = TextRenderer(self.vocab.cpu_codes, item_texts, llm.max_title_words, self.templates)
        self.beam_size, self.seed = beam_size, seed
        self.eval_task = "seqrec_with_titles" if llm.with_titles else "seqrec"
        for task in llm.tasks:
            lookup(self.task_pools, task, field="model.llm.tasks")
        # a response other than "{sid}" (id2title's title) puts text labels in batches: sid_loss checks for them
        self._text_labels = any(w > 0 and self.templates[t].response != "{sid}" for t, w in llm.tasks.items())
        if llm.tasks and not any(self.task_pools[t] == "sequences" for t in llm.tasks):
            raise ValueError(f"model.llm.tasks={dict(llm.tasks)} has no sequential-recommendation task; add "
                             f"{self.eval_task}: 1.0 (the prompt recommend() uses)")
        lookup(LOSS_ON, llm.loss_on, field="model.llm.loss_on")
        lookup({"full": 1, "sid": 1}, llm.head, field="model.llm.head")
        self.packed = llm.loss_on == "all"
        self._item_rows = None  # the item tasks' tokenised rows, built with the training data
        if self.packed:
            other = [t for t, w in llm.tasks.items() if self.task_pools[t] == "sequences" and t != "seqrec" and w > 0]
            if llm.with_titles or other:
                raise ValueError(f"model.llm.loss_on='all' packs the seqrec task only; got with_titles="
                                 f"{llm.with_titles}, tasks {other} (set loss_on=target for titled histories)")
            if "seqrec" in llm.prompts:
                raise ValueError("model.llm.prompts.seqrec has no effect with model.llm.loss_on='all' (packed rows "
                                 "follow genrec.llm.prompts.PACKED); drop it or set loss_on=target")
            self._header = tokenizer(PACKED.header, add_special_tokens=False)["input_ids"]
            self._sep = tokenizer(PACKED.item_sep, add_special_tokens=False)["input_ids"]
            self._item_ids = self.vocab.item_tokens(torch.arange(self.vocab.num_items + 1), on_cpu=True).tolist()

    # ------------------------------------------------------------------ building and reloading
    @classmethod
    def build(cls, llm: LLMConfig, sid_codes: torch.Tensor, codebook_sizes: Sequence[int],
              item_texts: list[dict] | None = None, beam_size: int = 20, seed: int = 0) -> "LLMRecommender":
        lm, tokenizer = load_base(llm.base, llm.dtype)
        new_ids = add_tokens_and_resize(lm, tokenizer, codebook_sizes, llm.token_init_noise, seed=0,
                                        **cls._init_args(llm.token_init, sid_codes, item_texts, llm.max_title_words))
        if llm.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            lm.config.use_cache = False
        if llm.lora.enabled:
            lm = wrap_lora(lm, llm.lora, new_ids)
        return cls(lm, tokenizer, sid_codes, codebook_sizes, item_texts, llm, beam_size, seed)

    @staticmethod
    def _init_args(init: str, sid_codes, item_texts, max_title_words: int) -> dict:
        titles = None
        if init == "titles" and item_texts is not None:
            titles = TextRenderer(sid_codes, item_texts, max_title_words).titles
        return {"init": init, "sid_codes": sid_codes.long().cpu(), "titles": titles}

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "LLMRecommender":
        if ctx.sid_codes is None or not ctx.codebook_sizes:
            raise ValueError("model.kind='llm' needs semantic IDs: ctx.sid_codes is None (build them with genrec sids build)")
        return cls.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                         beam_size=cfg.eval.beam_size, seed=cfg.seed)

    def save_adapter(self, path: str | os.PathLike) -> int:
        """Save the adapter (LoRA weights + the new token rows, not the full embedding); returns bytes on disk.

        With LoRA disabled (full fine-tuning) the whole model is saved instead.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.llm.lora.enabled:
            self.lm.save_pretrained(str(path), save_embedding_layers=False)
        else:
            self.lm.save_pretrained(str(path))
            self.tokenizer.save_pretrained(str(path))
        meta = {"base": self.llm.base, "codebook_sizes": self.codebook_sizes, "lora": self.llm.lora.enabled,
                "token_init": self.llm.token_init, "token_init_noise": self.llm.token_init_noise}
        (path / ADAPTER_META).write_text(json.dumps(meta, indent=2))
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())

    @classmethod
    def from_adapter(cls, path: str | os.PathLike, llm: LLMConfig, sid_codes: torch.Tensor,
                     item_texts: list[dict] | None = None, beam_size: int = 20) -> "LLMRecommender":
        """Fresh base + the same tokens and rows + the saved adapter: the logits of the saved model.

        Raises:
            ValueError: the adapter was saved for other semantic-ID codebook sizes.
        """
        from peft import PeftModel

        meta = json.loads((Path(path) / ADAPTER_META).read_text())
        sizes = [int(k) for k in meta["codebook_sizes"]]
        if not meta["lora"]:
            lm, tokenizer = load_base(str(path), llm.dtype)
            return cls(lm, tokenizer, sid_codes, sizes, item_texts, llm, beam_size)
        lm, tokenizer = load_base(meta["base"], llm.dtype)
        add_tokens_and_resize(lm, tokenizer, sizes, meta["token_init_noise"], seed=0,  # the rows the adapter was built on
                              **cls._init_args(meta["token_init"], sid_codes, item_texts, llm.max_title_words))
        lm = PeftModel.from_pretrained(lm, str(path))
        return cls(lm, tokenizer, sid_codes, sizes, item_texts, llm, beam_size)

    def merged(self):
        """A plain transformers model with the adapter merged in, for export (``save_pretrained`` + tokenizer)."""
        if not self.llm.lora.enabled:
            return self.lm
        return self.lm.merge_and_unload()

    def record_extras(self, run_dir: str, write: bool = True) -> dict:
        """Called by the training loop after testing: saves the adapter (main process) and reports its size."""
        path = os.path.join(run_dir, "adapter")
        if not write:
            return {}
        size = self.save_adapter(path)
        return {"adapter_dir": path, "adapter_bytes": size, "adapter_mb": round(size / 2**20, 2),
                "base_model": self.llm.base}

    # ------------------------------------------------------------------ training data
    def train_dataset(self, split, ctx: ModelContext | None = None):
        """The epoch's examples of every task in ``model.llm.tasks`` (see ``genrec.llm.tasks``).

        Args:
            split: a ``genrec.data.Split`` (its sequence examples are built here: every training prefix, or with
                ``loss_on="all"`` one window per user) or a Dataset of ``{"history", "target"}`` examples.
        """
        from ..data import NextItemDataset, UserSequenceDataset

        if not hasattr(split, "train_sequence"):
            next_item = split
        else:
            next_item = UserSequenceDataset(split) if self.packed else NextItemDataset(split)
        items = {t: self.renderer.pool(t) for t in self.llm.tasks if self.task_pools[t] == "items"}
        mixture = TaskMixture(next_item, items, dict(self.llm.tasks), seed=self.seed, task_pools=self.task_pools,
                              row_tokens=lambda ex: len(self._row(ex).input_ids))
        pairs = {(t, i) for t, i in mixture.index if self.task_pools[t] == "items"}
        self._item_rows = (TokenizedItemTasks(self.renderer, self.tokenizer, sorted(pairs), self.llm.max_length,
                                              self.llm.cache_dir) if pairs else None)
        return mixture

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Render and tokenise examples: ``{"input_ids", "attention_mask", "labels"}`` (B, T), left-padded.

        Accepts task examples (``{"task", "history", "item"}``) and plain next-item examples
        (``{"history", "target"}``, rendered with the recommendation prompt).
        """
        rows = [self._row(ex) for ex in examples]
        length = 0
        if self.static_shapes:  # train.compile: widths in steps of STATIC_STEP, so a few graphs serve every batch
            longest = max(len(r.input_ids) for r in rows)
            length = max(min(-(-longest // self.STATIC_STEP) * self.STATIC_STEP, self.llm.max_length), longest)
        return pad_batch(rows, self.tokenizer.pad_token_id, side="left", length=length)

    def _row(self, ex: dict) -> Tokenized:
        """One example's token ids and labels (``collate``'s rows; their lengths bucket the batches)."""
        task = ex.get("task", self.eval_task)
        item = int(ex["item"] if "item" in ex else ex["target"])
        history = ex.get("history")
        history = None if history is None else [int(i) for i in history]
        if self.packed and task == "seqrec":
            items = [i for i in (history or []) if i > 0] + [item]
            return packed_example(self._header, [self._item_ids[i] for i in items], self._sep, self.llm.max_length)
        if self._item_rows is not None and (task, item) in self._item_rows:  # tokenised once (datasets)
            return self._item_rows[task, item]
        if not self._text_labels and self.renderer.template(task).response != "{sid}":  # never a silent 0 loss
            raise ValueError(f"a {task!r} row answers with text, which sid_loss scores only when model.llm.tasks has "
                             f"such a task (it has {dict(self.llm.tasks)}); add {task}: <weight> to model.llm.tasks")
        prompt, response = self.renderer.render(task, history, item)
        return tokenize_example(self.tokenizer, prompt, response, self.llm.max_length)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        """Mean cross-entropy over the response tokens. Accepts ``collate`` batches or plain next-item batches.

        Batches are left-padded, so every response ends at the last column: the LM head runs only on the last
        ``R + 1`` positions (R = longest response), not on the whole prompt (the head is a fifth of the FLOPs of
        a 135M model). Positions count from each row's first real token, as in ``recommend``.
        """
        if "input_ids" not in batch:
            examples = [{"history": h, "target": t} for h, t in zip(batch["history"].cpu(), batch["target"].cpu().tolist())]
            batch = self.collate(examples)
        device = self.lm.get_input_embeddings().weight.device
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.llm.head == "sid":  # every position: slicing to the responses would read their start back (a sync)
            return Output(loss=self.sid_loss(self.hidden_states(ids, mask, pos)[:, :-1], labels[:, 1:]))
        has_label = (labels != IGNORE_INDEX).any(0).nonzero()
        keep = ids.shape[1] - int(has_label[0]) + 1 if len(has_label) else 2
        keep = min(keep, ids.shape[1])
        target = labels[:, -keep + 1:] if keep > 1 else labels[:, :0]
        logits = self.lm(input_ids=ids, attention_mask=left_padded_mask(self.lm, mask), position_ids=pos,
                         use_cache=False, logits_to_keep=keep).logits  # (B, keep, V)
        loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           ignore_index=IGNORE_INDEX)
        return Output(loss=loss)

    # ------------------------------------------------------------------ the SID-only head
    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(B, T, D) final (normed) hidden states of the LM body, with its LoRA and trainable token rows."""
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return base.model(input_ids=ids, attention_mask=left_padded_mask(base, mask), position_ids=pos,
                          use_cache=False).last_hidden_state

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """(..., D) hidden states -> (..., K_level) logits of that level's code tokens only."""
        ids = self._level_ids(level, h.device)
        with torch.autocast(h.device.type, enabled=False):  # fp32 scores: bf16 would tie close codes in beams
            if has_tied_head(self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm):
                rows = self.lm.get_input_embeddings()(ids)  # the adapted rows (peft's trainable tokens included)
                return h.float() @ rows.float().T
            head = self.lm.get_output_embeddings()  # an untied head: its full output, sliced
            return head(h.to(head.weight.dtype))[..., ids].float()

    def _level_ids(self, level: int, device: torch.device) -> torch.Tensor:
        """The level's code token ids on ``device``, copied once (a copy per step would wait for the GPU)."""
        if device not in self._level_ids_on:
            self._level_ids_on[device] = [ids.to(device) for ids in self.tokens.level_ids]
        return self._level_ids_on[device][level]

    def sid_loss(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over labelled positions: a code label's cross-entropy over its level's codes; a text label's (the
        titles of ``id2title``) over the whole vocabulary. EOS labels are left out (an ID's end is known, and
        ``recommend`` never generates text).

        Code labels are scored at every position and masked (a level's codes are a few hundred: cheap), so nothing
        is read back to the host; only a model with text responses in its tasks (id2title) reads whether a batch
        has text labels, which it gathers for the full head.

        Args:
            h: (B, R, D) states that predict ``target`` (B, R) (``IGNORE_INDEX`` where nothing is scored).
        """
        total = h.new_zeros((), dtype=torch.float)
        count = torch.zeros((), dtype=torch.long, device=h.device)
        is_code = torch.zeros_like(target, dtype=torch.bool)
        for level, (lo, k) in enumerate(self._level_span):
            sel = (target >= lo) & (target < lo + k)
            is_code |= sel
            ce = nn.functional.cross_entropy(self.level_logits(h, level).float().flatten(0, -2),
                                             (target - lo).clamp(0, k - 1).flatten(), reduction="none")
            total = total + (ce * sel.flatten()).sum()
            count = count + sel.sum()
        text = (target != IGNORE_INDEX) & ~is_code & (target != self._eos_id)
        if self._text_labels and bool(text.any()):  # only batches with titles pay for the full head (and the read)
            head = self.lm.get_output_embeddings()
            logits = head(h[text].to(head.weight.dtype)).float()
            total = total + nn.functional.cross_entropy(logits, target[text], reduction="sum")
            count = count + text.sum()
        return total / count.clamp(min=1)

    # ------------------------------------------------------------------ retrieval
    def prompts(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Left-padded recommendation prompts for a (B, T) history batch (0 = padding)."""
        rows = []
        for h in history.cpu().tolist():
            if self.packed:
                items = [self._item_ids[i] for i in h if i > 0]
                rows.append(packed_example(self._header, items, self._sep, self.llm.max_length, target=False).input_ids)
                continue
            prompt, _ = self.renderer.render(self.eval_task, h, 0)
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            rows.append(ids[-max(self.llm.max_length - len(self.codebook_sizes) - 1, 1):])  # as tokenize_example cuts
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, T - len(r):] = torch.tensor(r)
            mask[b, T - len(r):] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, beam_size: int | None = None):
        """Top-k distinct valid items per user by trie-constrained beam search over the LM's next-token log-probs.

        The prompt runs once (B rows); its KV cache is then copied to the W beams of each user and reordered by
        ``parent`` at each level, so each level costs one forward of one token per beam.

        Returns:
            items (B, k) long (0 where fewer than k valid items exist), scores (B, k) summed log-probs.
        """
        from ..generation import constrained_beam_search
        from ..generation.hf_steps import causal_lm_step_fn

        device = self.lm.get_input_embeddings().weight.device
        W = max(k, beam_size or self.beam_size)
        enc = {key: v.to(device) for key, v in self.prompts(batch["history"]).items()}
        B = enc["input_ids"].shape[0]
        level_ids = [ids.to(device) for ids in self.tokens.level_ids]
        # head=sid: the level's codes are normalised among themselves, as in training
        step_fn = causal_lm_step_fn(self.lm, enc["input_ids"], enc["attention_mask"], level_ids,
                                    renormalize=self.llm.head == "sid")
        res = constrained_beam_search(step_fn, self.vocab.trie(), batch_size=B, beam_size=W, device=device,
                                      num_return=k)
        return res.items, res.scores


__all__ = ["LLMRecommender", "add_tokens_and_resize", "has_tied_head", "load_base", "wrap_lora"]
