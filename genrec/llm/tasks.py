"""Training tasks for the LLM recommender and their mixture, plus response-only tokenisation.

A task is a template (``prompts.PROMPTS``, or ``model.llm.prompts`` from a config) and a pool of examples:
``"sequences"`` tasks draw from the next-item training examples (every prefix of every training sequence, as TIGER
and LC-Rec), ``"items"`` tasks from the catalogue (the items that have every text field the template uses).
``model.llm.tasks`` maps a task name to a weight: the number of passes over that task's pool per epoch
(``seqrec: 1.0`` = every training example once; ``title2id: 0.5`` = a seeded half of the titled items). LC-Rec
mixes its alignment tasks with sequential recommendation the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import lookup
from .prompts import ITEM_FIELDS, PROMPTS, Template
from .tokens import sid_string

IGNORE_INDEX = -100  # labels on prompt and padding positions: no loss (torch cross_entropy's ignore_index)

TASK_POOLS: dict[str, str] = {name: tpl.pool for name, tpl in PROMPTS.items()}  # the built-in tasks' pools


def clean_title(title, max_words: int) -> str | None:
    if title is None:
        return None
    words = str(title).split()
    return " ".join(words[:max_words]) if words else None


def item_text(row: dict | None, name: str, max_words: int) -> str | None:
    """An item's text field for prompts, cut to ``max_words`` words; None when absent or empty. ``categories``
    as the Amazon metadata has them (a list of category paths) read as the first path, ``"A > B > C"``, whole; a
    flat list (genres) as ``"A, B"``."""
    value = (row or {}).get(name)
    if name == "categories" and isinstance(value, (list, tuple)):
        nested = bool(value) and isinstance(value[0], (list, tuple))
        parts = [" ".join(str(c).split()) for c in (value[0] if nested else value) if str(c).strip()]
        return (" > " if nested else ", ").join(parts) or None
    return clean_title(value, max_words)


class TextRenderer:
    """Renders examples into ``(prompt, response)`` strings from semantic-ID codes and item text fields.

    Args:
        sid_codes: (N + 1, L) codes, row 0 padding.
        item_texts: item table (row i = item i + 1; dicts with ``title``, ``brand``, ...), or None.
        max_title_words: titles and the other text fields are cut to this many words (keeps prompts short).
        templates: task name -> Template (default the built-in ``PROMPTS``).
    """

    def __init__(self, sid_codes: torch.Tensor, item_texts: list[dict] | None, max_title_words: int = 20,
                 templates: dict[str, Template] | None = None):
        self.templates = dict(PROMPTS if templates is None else templates)
        self.sids = [""] + [sid_string(row) for row in sid_codes[1:].tolist()]
        rows = list(item_texts or [])[:len(self.sids) - 1]
        missing = [None] * (len(self.sids) - 1 - len(rows))
        self.text: dict[str, list[str | None]] = {
            name: [None] + [item_text(r, name, max_title_words) for r in rows] + missing
            for name in ITEM_FIELDS if name != "sid"}

    @property
    def titles(self) -> list[str | None]:
        return self.text["title"]

    def template(self, task: str) -> Template:
        return lookup(self.templates, task, field="model.llm.tasks")

    def fields(self, item: int) -> dict[str, str]:
        return {"sid": self.sids[item], **{name: col[item] or "" for name, col in self.text.items()}}

    def pool(self, task: str) -> list[int]:
        """An ``items`` task's pool: the items with every text field its template uses."""
        need = [self.text[f] for f in sorted(self.template(task).item_fields()) if f != "sid"]
        return [i for i in range(1, len(self.sids)) if all(col[i] for col in need)]

    def history(self, tpl: Template, items: Sequence[int]) -> str:
        return tpl.item_sep.join(tpl.history_item.format(**self.fields(i)).rstrip() for i in items if i > 0)

    def render(self, task: str, history: Sequence[int] | None, item: int) -> tuple[str, str]:
        """``history``: item ids (0 = padding, dropped); ``item``: the target (sequence tasks) or the item."""
        tpl = self.template(task)
        fields = self.fields(item)
        if history is not None:
            fields["history"] = self.history(tpl, history)
        return tpl.prompt.format(**fields), tpl.response.format(**fields)


class TaskMixture(Dataset):
    """The epoch's examples, ``{"task", "history" (T,) or None, "item"}``, from every configured task.

    Args:
        next_item: the next-item training examples (dicts with ``history`` (T,) and ``target``).
        items: item ids of the ``items`` tasks' pool: one list for all of them, or task -> list
            (``TextRenderer.pool``).
        weights: task -> passes over its pool per epoch.
        seed: fixes the subsets taken by fractional weights.
        task_pools: task -> ``"sequences"`` | ``"items"`` (default the built-in tasks').
        row_tokens: example -> the token count of the row the model builds from it; ``lengths`` then gives
            tokens (the model knows them: templates, titles and packing differ by task), else a proxy.

    Raises:
        ValueError: an unknown task, a negative weight, a weighted task with an empty pool, or no examples.
    """

    def __init__(self, next_item: Dataset, items: Sequence[int] | dict[str, Sequence[int]],
                 weights: dict[str, float], seed: int = 0, task_pools: dict[str, str] | None = None,
                 row_tokens: Callable[[dict], int] | None = None):
        self.next_item, self.row_tokens = next_item, row_tokens
        self.task_pools = dict(TASK_POOLS if task_pools is None else task_pools)
        rng = np.random.default_rng(seed)
        index = []  # (task, i)
        for task, w in weights.items():
            pool = lookup(self.task_pools, task, field="model.llm.tasks")
            if w < 0:
                raise ValueError(f"model.llm.tasks.{task}={w} must be >= 0 (passes over the task's pool per epoch)")
            members = None if pool == "sequences" else list(items[task] if isinstance(items, dict) else items)
            size = len(next_item) if members is None else len(members)
            n = int(round(w * size))
            if w > 0 and size == 0:
                raise ValueError(f"model.llm.tasks.{task}={w}: its pool is empty (" + (
                    "no training examples)" if members is None else
                    "no item has every text field its template uses)"))
            if w > 0 and n == 0:
                raise ValueError(f"model.llm.tasks.{task}={w} gives 0 of its {size} examples; raise the weight or "
                                 f"set it to 0")
            reps = [rng.permutation(size) for _ in range(math.ceil(n / size))] if size else []
            picks = np.concatenate(reps)[:n] if reps else np.zeros(0, dtype=np.int64)
            for i in picks:
                index.append((task, int(i) if members is None else int(members[int(i)])))
        if not index:
            raise ValueError(f"model.llm.tasks={weights} gives no training examples (every weight is 0)")
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def lengths(self) -> np.ndarray:
        """Row lengths for length-bucketed batches (``train.bucket_by_length``): tokens with ``row_tokens``, else
        history items per example (1 for the item tasks; a proxy that puts every item-task row, whatever its text,
        in the bucket of one-item histories)."""
        if self.row_tokens is not None:
            return np.array([self.row_tokens(self[i]) for i in range(len(self))])
        items = self.next_item.lengths()
        return np.array([max(int(items[j]), 1) if self.task_pools[task] == "sequences" else 1
                         for task, j in self.index])

    def __getitem__(self, i: int) -> dict:
        task, j = self.index[i]
        if self.task_pools[task] == "sequences":
            ex = self.next_item[j]
            return {"task": task, "history": ex["history"], "item": int(ex["target"])}
        return {"task": task, "history": None, "item": j}


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def tokenize_example(tokenizer, prompt: str, response: str, max_length: int, eos: bool = True) -> Tokenized:
    """Prompt and response tokenised separately, concatenated; labels IGNORE_INDEX on the prompt.

    A prompt too long for ``max_length`` loses tokens from its start: the end of the history (the most recent
    items) and the question stay.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    return join_tokens(p, r, tokenizer.eos_token_id if eos else None, max_length)


def join_tokens(prompt: list[int], response: list[int], eos: int | None, max_length: int) -> Tokenized:
    """``prompt + response (+ eos)`` with labels on the response only; the prompt loses its start to fit."""
    r = list(response) + ([eos] if eos is not None else [])
    keep = max(max_length - len(r), 1)
    p = list(prompt)[-keep:]
    return Tokenized(p + r, [IGNORE_INDEX] * len(p) + r)


def packed_example(header: list[int], items: list[list[int]], sep: list[int], max_length: int,
                   target: bool = True) -> Tokenized:
    """Token ids of :class:`~genrec.llm.prompts.PackedLayout`, built from pieces (never re-tokenised as a whole).

    Args:
        header: the header's token ids.
        items: each item's semantic-ID token ids, oldest first.
        sep: the separator's token ids.
        max_length: row budget; the oldest items go first (a training row keeps at least two items).
        target: True: a training row ``header s_1 sep ... s_n`` with labels on the tokens of ``s_2 .. s_n``;
            False: a prompt ``header s_1 sep ... s_n sep`` (no labels) that leaves room for one more item.
    """
    cost = [len(t) + len(sep) for t in items]  # each item with the separator after it
    if target:  # no separator after s_n
        budget = max_length - len(header) + len(sep)
    else:  # room for the generated item
        budget = max_length - len(header) - (len(items[-1]) if items else 0)
    start = 0
    while start < len(items) - (2 if target else 0) and sum(cost[start:]) > budget:
        start += 1
    ids, labels = list(header), [IGNORE_INDEX] * len(header)
    for j, t in enumerate(items[start:]):
        last = target and start + j == len(items) - 1
        ids += t if last else t + sep
        labels += (t if j > 0 and target else [IGNORE_INDEX] * len(t)) + ([] if last else [IGNORE_INDEX] * len(sep))
    return Tokenized(ids, labels)


def pad_batch(rows: list[Tokenized], pad_id: int, side: str = "right", length: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest row, or to ``length`` if longer: input_ids (B, T), attention_mask (B, T), labels (B, T)."""
    T = max([len(r.input_ids) for r in rows] + [length])
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        ids[b, sl] = torch.tensor(r.input_ids)
        mask[b, sl] = 1
        labels[b, sl] = torch.tensor(r.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


__all__ = ["IGNORE_INDEX", "PROMPTS", "TASK_POOLS", "TaskMixture", "TextRenderer", "Tokenized", "item_text",
           "join_tokens", "packed_example", "pad_batch", "tokenize_example"]
