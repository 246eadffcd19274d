"""Data: readers -> InteractionData (the one internal format) -> leave-one-out splits -> batches.

``load_dataset(cfg.data)`` resolves a preset name (``DATASETS``) or a reader + path (``READERS``) under the data
root (``data.root``, else ``$GENREC_DATA_ROOT``, else ``./data``), applies the configured filters and validates.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from ..config import DataConfig, lookup
from .interactions import InteractionData, drop_short, kcore
from .sequences import (TRAIN_DATASETS, EvalDataset, NextItemDataset, SequenceDataset, Split, UserSequenceDataset,
                        collate, left_pad)

log = logging.getLogger(__name__)

Reader = Callable[[str, str, DataConfig], InteractionData]  # (path, name, cfg) -> data


def _amazon2014(path, name, cfg):
    from .amazon import read_amazon2014

    return read_amazon2014(path, name)


def _amazon_raw(path, name, cfg):
    from .amazon import read_amazon_raw

    return read_amazon_raw(path, name, kcore=cfg.kcore or 5)


def _lcrec(path, name, cfg):
    from .amazon import read_lcrec

    return read_lcrec(path, name)


def _movielens(path, name, cfg):
    from .movielens import read_movielens

    return read_movielens(path, name)


def _table(path, name, cfg):
    from .table import read_table

    return read_table(path, name)


def _tiny(path, name, cfg):
    from .tiny import make_tiny

    return make_tiny()


READERS: dict[str, Reader] = {
    "amazon2014": _amazon2014,  # sequences.txt + items.jsonl (S3-Rec / P5 / TIGER 5-core)
    "amazon_raw": _amazon_raw,  # McAuley reviews_<cat>_5.json.gz + meta_<cat>.json.gz, k-core, time order
    "lcrec": _lcrec,  # Amazon 2018 <Name>.inter.json + <Name>.item.json (LC-Rec / LETTER)
    "movielens": _movielens,  # ratings.dat (or sequences.txt) + movies.dat
    "table": _table,  # a user's own CSV / Parquet: user_id,item_id,timestamp (+ optional items file)
    "tiny": _tiny,  # the embedded synthetic default, no files
}

# Presets: name -> (reader, folder under the data root)
DATASETS: dict[str, tuple[str, str]] = {
    "tiny": ("tiny", ""),
    "beauty": ("amazon2014", "amazon2014/beauty"),
    "sports": ("amazon2014", "amazon2014/sports"),
    "toys": ("amazon2014", "amazon2014/toys"),
    "ml-1m": ("movielens", "ml-1m"),
    "scientific": ("lcrec", "amazon2018/scientific"),
    "custom": ("", ""),  # data.reader and data.path must be set
}


def data_root(cfg: DataConfig) -> str:
    return cfg.root or os.environ.get("GENREC_DATA_ROOT") or "data"


def load_dataset(cfg: DataConfig) -> InteractionData:
    """Read, filter and validate the dataset named by ``cfg``.

    Raises:
        ValueError: unknown preset or reader (listing the valid ones), or data that breaks the format.
        FileNotFoundError: the files are not under the data root, naming the path that was tried.
    """
    reader_name, folder = lookup(DATASETS, cfg.name, field="data.name")
    reader_name = cfg.reader or reader_name
    if not reader_name:
        raise ValueError("data.name='custom' needs data.reader (one of %s) and data.path" % sorted(READERS))
    reader = lookup(READERS, reader_name, field="data.reader")
    if cfg.name == "custom" and not cfg.path:
        raise ValueError(f"data.name='custom' needs data.path: the file or folder for reader {reader_name!r}")
    rel = cfg.path or folder
    path = rel if os.path.isabs(rel) else os.path.join(data_root(cfg), rel)
    if reader_name != "tiny" and not os.path.exists(path):
        raise FileNotFoundError(f"data for data.name={cfg.name!r} not found at {path!r}. Set $GENREC_DATA_ROOT or "
                                f"data.root to the folder that holds {rel!r}, or data.path to the files.")
    data = reader(path, cfg.name, cfg)
    if cfg.kcore and reader_name != "amazon_raw":
        before_seqs = {u: list(s) for u, s in zip(data.users, data.sequences)}
        seqs = kcore(before_seqs, cfg.kcore)
        before = data.num_users
        from .interactions import from_user_sequences, times_after_filter

        times = None if data.times is None else times_after_filter(
            before_seqs, {u: t.tolist() for u, t in zip(data.users, data.times)}, seqs)

        # item_key records the id in the source; a stale item_id from the file would name the wrong item
        meta = {i + 1: {k: v for k, v in m.items() if k != "item_id"} for i, m in enumerate(data.items)}
        items_before, skipped = data.num_items, dict(data.skipped)  # keep the reader's counts
        data = from_user_sequences(data.name, seqs, meta, data.source, times)
        data.skipped = {**skipped, **data.skipped}
        data.skipped[f"users_removed_by_{cfg.kcore}_core"] = before - data.num_users
        data.skipped[f"items_removed_by_{cfg.kcore}_core"] = items_before - data.num_items
    data = drop_short(data, max(cfg.min_interactions, 3))
    return data.validate()


__all__ = [
    "DATASETS", "READERS", "InteractionData", "Split", "EvalDataset", "NextItemDataset", "SequenceDataset",
    "TRAIN_DATASETS", "UserSequenceDataset", "collate", "left_pad", "load_dataset", "data_root",
]
