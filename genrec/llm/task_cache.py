"""Tokenised rows of the item tasks (title2id, id2title, desc2id, ...), built once as a Hugging Face ``datasets``
table and cached on disk.

An item task's examples are the same every epoch (one per item of its pool), so they are rendered and tokenised
once, by ``Dataset.map`` in batches, and stored as an arrow file named by a hash of everything that decides the
tokens: the rendered prompt and response texts, the tokenizer (its full serialisation, added semantic-ID tokens
included), EOS and ``max_length``. A second run with the same texts and tokenizer memory-maps the file instead of
tokenising; anything else gets a new file. The rows are exactly ``tokenize_example``'s (tested).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from ..console import interactive
from .tasks import Tokenized, TextRenderer, join_tokens

CACHE_VERSION = 1  # bump when the row layout or the truncation rule changes


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of a fast tokenizer's full state (its JSON: normaliser, vocabulary, merges, added tokens), class and
    EOS; None for a tokenizer without that serialisation (its rows are then never cached on disk: a vocabulary
    alone does not decide its tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.sha256(backend.to_str().encode())
    h.update(f"{type(tokenizer).__name__}|{tokenizer.eos_token_id}".encode())
    return h.hexdigest()


class TokenizedItemTasks:
    """``(task, item) -> Tokenized`` for the item tasks' examples.

    Args:
        renderer: renders each pair's ``(prompt, response)``.
        tokenizer: a Hugging Face tokenizer (batched ``__call__``).
        pairs: the ``(task, item)`` pairs to hold (each item task's pool).
        max_length: as ``tokenize_example``.
        cache_dir: folder of the arrow files; "" or None (or a tokenizer without a fast serialisation) keeps the
            table in memory only.
    """

    def __init__(self, renderer: TextRenderer, tokenizer, pairs: Sequence[tuple[str, int]], max_length: int,
                 cache_dir: str | None = None):
        import datasets

        pairs = sorted(set((str(t), int(i)) for t, i in pairs))
        texts = [renderer.render(t, None, i) for t, i in pairs]
        tok = tokenizer_fingerprint(tokenizer)
        key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "tok": tok, "max_length": max_length,
                                         "texts": texts}).encode()).hexdigest()[:20]
        eos = tokenizer.eos_token_id

        def tokenize(batch):
            p = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
            r = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
            rows = [join_tokens(a, b, eos, max_length) for a, b in zip(p, r)]
            return {"input_ids": [x.input_ids for x in rows], "labels": [x.labels for x in rows]}

        table = datasets.Dataset.from_dict({"prompt": [p for p, _ in texts], "response": [r for _, r in texts]})
        path = None
        if cache_dir and tok is not None:
            os.makedirs(cache_dir, exist_ok=True)
            path = os.path.join(cache_dir, f"item_tasks_{key}.arrow")
        self.cached = path is not None and os.path.isfile(path)
        if self.cached:
            table = datasets.Dataset.from_file(path)
        else:
            bars = datasets.is_progress_bar_enabled()
            if not interactive():  # no bar in logs (as every genrec progress bar)
                datasets.disable_progress_bars()
            try:
                table = table.map(tokenize, batched=True, batch_size=1000, remove_columns=["prompt", "response"],
                                  new_fingerprint=key, cache_file_name=path, keep_in_memory=path is None,
                                  desc="tokenising item tasks")
            finally:
                if bars:
                    datasets.enable_progress_bars()
        self.table, self.path = table, path
        self.rows = {pair: j for j, pair in enumerate(pairs)}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, pair: tuple[str, int]) -> bool:
        return pair in self.rows

    def __getitem__(self, pair: tuple[str, int]) -> Tokenized:
        row = self.table[self.rows[pair]]
        return Tokenized(list(row["input_ids"]), list(row["labels"]))


__all__ = ["TokenizedItemTasks", "tokenizer_fingerprint"]
