"""Amazon review data readers.

* ``amazon2014``: the S3-Rec / P5 / TIGER 5-core sequences (``sequences.txt``: ``user item item ...``) with an item
  table (``items.jsonl``), as in ``$GENREC_DATA_ROOT/amazon2014/<name>/`` (see that folder's README).
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from .interactions import InteractionData

log = logging.getLogger(__name__)


def _need(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}. Point data.root (or $GENREC_DATA_ROOT) at the folder "
                                f"that holds it, or set data.path.")
    return path


def read_sequence_file(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read ``user item item ...`` lines (space separated integers, items oldest first).

    Raises:
        ValueError: a non-integer token or a repeated user, naming the file and line.
    """
    users, seqs, seen = [], [], set()
    with open(_need(path, "sequence file")) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = [int(p) for p in parts]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected space-separated integers 'user item item ...', "
                                 f"got {line.strip()[:80]!r}") from None
            if ids[0] in seen:
                raise ValueError(f"{path}:{lineno}: user {ids[0]} appears twice")
            seen.add(ids[0])
            users.append(ids[0])
            seqs.append(np.array(ids[1:], dtype=np.int64))
    return np.array(users, dtype=np.int64), seqs


def read_items_jsonl(path: str) -> list[dict]:
    """Read an item table, one JSON object per line with an integer ``item_id``; ids must be exactly 1..N."""
    rows: dict[int, dict] = {}
    with open(_need(path, "item table")) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                item_id = int(row["item_id"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with an integer 'item_id' ({e})") from None
            if item_id in rows:
                raise ValueError(f"{path}:{lineno}: item_id {item_id} appears twice")
            rows[item_id] = row
    n = len(rows)
    if set(rows) != set(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(rows))[:5]
        raise ValueError(f"{path}: item ids must be exactly 1..{n}; missing e.g. {missing}")
    return [rows[i] for i in range(1, n + 1)]


def read_amazon2014(path: str, name: str = "amazon2014") -> InteractionData:
    """Read ``sequences.txt`` + ``items.jsonl`` from the folder ``path``.

    Empty sequences are skipped and counted; an item id missing from the item table raises.
    """
    users, seqs = read_sequence_file(os.path.join(path, "sequences.txt"))
    items = read_items_jsonl(os.path.join(path, "items.jsonl"))
    keep = [i for i, s in enumerate(seqs) if len(s) > 0]
    data = InteractionData(name, [seqs[i] for i in keep], users[keep], items, source=path)
    if len(keep) < len(seqs):
        data.skipped["empty_sequences"] = len(seqs) - len(keep)
        log.warning("%s: skipped %d users with no items", path, len(seqs) - len(keep))
    return data.validate()
