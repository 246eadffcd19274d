"""Amazon review data readers.

* ``amazon2014``: the S3-Rec / P5 / TIGER 5-core sequences (``sequences.txt``: ``user item item ...``) with an item
  table (``items.jsonl``), as in ``$GENREC_DATA_ROOT/amazon2014/<name>/`` (see that folder's README).
* ``amazon_raw``: the original per-category files of the 2014 release (R. He and J. McAuley, WWW 2016; J. McAuley et
  al., SIGIR 2015): ``reviews_<Cat>_5.json.gz`` and ``meta_<Cat>.json.gz``, turned into time-ordered k-core
  sequences the way S3-Rec (K. Zhou et al., CIKM 2020) and TIGER (S. Rajput et al., NeurIPS 2023) describe.
* ``lcrec``: the Amazon 2018 (J. Ni et al., EMNLP 2019) files of LC-Rec (B. Zheng et al., ICDE 2024) and LETTER
  (W. Wang et al., CIKM 2024): ``<Name>.inter.json`` + ``<Name>.item.json``.
"""
from __future__ import annotations

import ast
import glob
import gzip
import json
import logging
import os
import re

import numpy as np

from .interactions import InteractionData, from_user_sequences, kcore as kcore_filter, times_after_filter

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


# ------------------------------------------------------------------------------------------- amazon_raw
RAW_ITEM_FIELDS = ("asin", "title", "brand", "categories", "description", "price", "salesRank", "imUrl")


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def _find_one(folder: str, patterns: list[str], what: str) -> str:
    found = sorted({f for p in patterns for f in glob.glob(os.path.join(folder, p))})
    if not found:
        raise FileNotFoundError(f"no {what} in {folder!r} (looked for {', '.join(patterns)})")
    if len(found) > 1:
        raise ValueError(f"{folder!r} holds several {what} files {[os.path.basename(f) for f in found]}; "
                         f"put one dataset per folder")
    return found[0]


def _raw_files(path: str) -> tuple[str, str]:
    """(reviews file, meta file) for a folder, or for the reviews file itself."""
    if os.path.isfile(path):
        reviews, folder = path, os.path.dirname(path)
    else:
        _need_dir(path, "Amazon raw data folder")
        folder = path
        reviews = _find_one(folder, ["reviews_*.json.gz", "reviews_*.json"], "reviews_<Category>[_5].json[.gz] file")
    m = re.fullmatch(r"reviews_(.+?)(_5)?\.json(\.gz)?", os.path.basename(reviews))
    if not m:
        raise ValueError(f"{reviews!r}: expected a file named reviews_<Category>_5.json.gz (or .json)")
    cat = m.group(1)
    for cand in (f"meta_{cat}.json.gz", f"meta_{cat}.json"):
        if os.path.isfile(os.path.join(folder, cand)):
            return reviews, os.path.join(folder, cand)
    raise FileNotFoundError(f"item metadata not found: {os.path.join(folder, f'meta_{cat}.json.gz')!r} (or .json); "
                            f"it goes next to {os.path.basename(reviews)}")


def _need_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path!r}. Point data.root (or $GENREC_DATA_ROOT) at the folder "
                                f"that holds it, or set data.path.")
    return path


def _parse_record(line: str, path: str, lineno: int, python_first: bool) -> dict:
    """One record: JSON, or a Python dict literal (the 2014 metadata files are written with ``str(dict)``)."""
    parsers = (ast.literal_eval, json.loads) if python_first else (json.loads, ast.literal_eval)
    for parse in parsers:
        try:
            rec = parse(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            continue
        if isinstance(rec, dict):
            return rec
    raise ValueError(f"{path}:{lineno}: expected one JSON object or Python dict per line, got {line.strip()[:80]!r}")


def read_amazon_raw(path: str, name: str = "amazon_raw", kcore: int = 5) -> InteractionData:
    """Read McAuley's 2014 review + metadata files into time-ordered k-core sequences.

    Steps: each review line (``reviewerID``, ``asin``, ``unixReviewTime``; other fields ignored) is grouped by
    reviewer and sorted by ``unixReviewTime``, ties kept in file order (stable sort). A repeated (reviewer, asin)
    pair keeps its first occurrence in that order; the rest are counted in ``skipped["duplicate_user_item_pairs"]``.
    The iterative ``kcore`` filter then removes users and items with fewer than ``kcore`` reviews (counted too).
    Users are numbered in sorted ``reviewerID`` order and items 1..N by first appearance in that user order.
    Item rows hold ``asin`` and the metadata fields ``title, brand, categories, description, price, salesRank,
    imUrl`` (``None`` where absent); items with no metadata line are counted in ``skipped["items_without_metadata"]``
    and repeated metadata rows (the first is kept) in ``skipped["duplicate_metadata_rows"]``.

    Args:
        path: a folder holding ``reviews_<Cat>_5.json.gz`` (or ``reviews_<Cat>.json[.gz]``) and
            ``meta_<Cat>.json.gz`` (or ``.json``), or the reviews file itself.
        kcore: minimum reviews per user and per item (5 as in the 5-core files); 0 or 1 keeps everything.
    Raises:
        FileNotFoundError: a missing folder or file, naming the path.
        ValueError: an unparseable line or a review without reviewerID / asin / unixReviewTime (file:line).
    """
    reviews_path, meta_path = _raw_files(path)
    by_user: dict[str, list[tuple[int, str]]] = {}
    with _open_text(reviews_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = _parse_record(line, reviews_path, lineno, python_first=False)
            try:
                user, asin, t = str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{reviews_path}:{lineno}: a review needs reviewerID, asin and an integer "
                                 f"unixReviewTime ({type(e).__name__}: {e})") from None
            by_user.setdefault(user, []).append((t, asin))
    if not by_user:
        raise ValueError(f"{reviews_path}: no reviews")
    skipped: dict[str, int] = {}
    raw_interactions = sum(len(v) for v in by_user.values())
    seqs: dict[str, list[str]] = {}
    times: dict[str, list[int]] = {}
    duplicates = 0
    for user in sorted(by_user):
        events = sorted(by_user[user], key=lambda e: e[0])  # stable: equal times keep file order
        seen, seq, ts = set(), [], []
        for t, asin in events:
            if asin in seen:
                duplicates += 1
                continue
            seen.add(asin)
            seq.append(asin)
            ts.append(t)
        seqs[user], times[user] = seq, ts
    if duplicates:
        skipped["duplicate_user_item_pairs"] = duplicates
        log.warning("%s: kept the first of each repeated (user, item) pair; skipped %d repeats", reviews_path,
                    duplicates)
    n_users, n_items = len(seqs), len({i for s in seqs.values() for i in s})
    n_inter = sum(len(s) for s in seqs.values())
    before, seqs = seqs, kcore_filter(seqs, kcore)
    times = times_after_filter(before, times, seqs)
    if kcore > 1:
        kept_items = len({i for s in seqs.values() for i in s})
        skipped[f"users_removed_by_{kcore}_core"] = n_users - len(seqs)
        skipped[f"items_removed_by_{kcore}_core"] = n_items - kept_items
        skipped[f"interactions_removed_by_{kcore}_core"] = n_inter - sum(len(s) for s in seqs.values())
        log.info("%s: %d-core kept %d of %d users, %d of %d items", reviews_path, kcore, len(seqs), n_users,
                 kept_items, n_items)
    if not seqs:
        raise ValueError(f"{reviews_path}: no user is left after the {kcore}-core filter "
                         f"({n_users} users, {raw_interactions} reviews read); lower kcore")
    wanted = {i for s in seqs.values() for i in s}
    meta: dict[str, dict] = {}
    with _open_text(meta_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = _parse_record(line, meta_path, lineno, python_first=True)
            asin = rec.get("asin")
            if asin is None:
                raise ValueError(f"{meta_path}:{lineno}: a metadata record needs an 'asin'")
            if asin in meta:
                skipped["duplicate_metadata_rows"] = skipped.get("duplicate_metadata_rows", 0) + 1  # first kept
            elif asin in wanted:
                meta[asin] = {k: rec.get(k) for k in RAW_ITEM_FIELDS}
    data = from_user_sequences(name, seqs, meta, source=reviews_path, user_times=times)
    for asin, row in zip((r["item_key"] for r in data.items), data.items):
        for k in RAW_ITEM_FIELDS:
            row.setdefault(k, None)
        row["asin"] = asin
    data.skipped = {**skipped, **data.skipped}
    return data.validate()


# ------------------------------------------------------------------------------------------------ lcrec
def split_lcrec_categories(text: str | None) -> list[list[str]] | None:
    """LC-Rec stores one category path as a comma-separated string. Names may themselves hold ", " (e.g.
    "Tapes, Adhesives & Sealants"), so only commas NOT followed by a space separate levels."""
    if not text or not str(text).strip():
        return None
    path = [p.strip() for p in re.split(r",(?! )", str(text)) if p.strip()]
    return [path] if path else None


def read_lcrec(path: str, name: str = "lcrec") -> InteractionData:
    """Read ``<Name>.inter.json`` (``{"user": [item, ...]}``, 0-based item ids, oldest first) and
    ``<Name>.item.json`` (``{"item": {"title", "description", "brand", "categories"}}``).

    Item ``i`` becomes ``i + 1``, so the order of the files is kept; users stay in file order. Categories are split
    into one path ``[[level, ...]]`` (see ``split_lcrec_categories``). Empty sequences are skipped and counted.

    Args:
        path: the folder holding exactly one ``*.inter.json`` and its ``.item.json``, or the ``.inter.json`` file.
    Raises:
        FileNotFoundError: missing folder or file (naming the path).
        ValueError: invalid JSON, item ids that are not exactly 0..N-1 in the item file, or an interaction with an
            item id outside 0..N-1 (naming the user).
    """
    if os.path.isfile(path):
        inter_path = path
    else:
        inter_path = _find_one(_need_dir(path, "LC-Rec data folder"), ["*.inter.json"], "<Name>.inter.json")
    if not inter_path.endswith(".inter.json"):
        raise ValueError(f"{inter_path!r}: expected a file named <Name>.inter.json")
    item_path = _need(inter_path[: -len(".inter.json")] + ".item.json", "LC-Rec item file")

    def load(p: str):
        try:
            with open(p, encoding="utf-8") as f:
                obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{p}: expected a JSON object keyed by id, got {type(obj).__name__}")
        return obj

    inter, item_obj = load(inter_path), load(item_path)
    try:
        item_rows = {int(k): v for k, v in item_obj.items()}
    except ValueError:
        raise ValueError(f"{item_path}: item keys must be integers 0..N-1") from None
    n = len(item_rows)
    if set(item_rows) != set(range(n)):
        missing = sorted(set(range(n)) - set(item_rows))[:5]
        raise ValueError(f"{item_path}: item ids must be exactly 0..{n - 1}; missing e.g. {missing}")
    items = []
    for i in range(n):
        row = item_rows[i] if isinstance(item_rows[i], dict) else {}
        items.append({
            "item_key": str(i),
            "title": row.get("title") or None,
            "description": row.get("description") or None,
            "brand": row.get("brand") or None,
            "categories": split_lcrec_categories(row.get("categories")),
        })
    users, seqs, empty = [], [], 0
    for user, seq in inter.items():
        if not isinstance(seq, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in seq):
            raise ValueError(f"{inter_path}: user {user!r}: expected a list of integer item ids, got {str(seq)[:80]}")
        if not seq:
            empty += 1
            continue
        bad = [i for i in seq if not 0 <= i < n]
        if bad:
            raise ValueError(f"{inter_path}: user {user!r} has item id {bad[0]}, but {item_path} has items 0..{n - 1}")
        users.append(user)
        seqs.append(np.asarray(seq, dtype=np.int64) + 1)
    try:
        user_ids = np.array([int(u) for u in users], dtype=np.int64)
    except ValueError:
        user_ids = np.array(users, dtype=object)
    data = InteractionData(name, seqs, user_ids, items, source=inter_path)
    if empty:
        data.skipped["empty_sequences"] = empty
        log.warning("%s: skipped %d users with no items", inter_path, empty)
    return data.validate()
