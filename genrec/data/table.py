"""A user's own data as a plain table: one row per interaction (``user_id, item_id, timestamp``), CSV / TSV / Parquet.

Layout: ``path`` is either the interactions file itself (``.csv``, ``.tsv`` or ``.parquet``) or a folder holding
``interactions.{csv,tsv,parquet}`` and, optionally, ``items.{csv,tsv,parquet,jsonl}`` (``item_id`` plus any text
columns: ``title``, ``brand``, ``description``, ``price``, ``categories`` as ``"a|b|c"`` or a JSON list). See
``genrec/data/README.md``.
"""
from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pandas as pd

from .interactions import InteractionData, from_user_sequences

log = logging.getLogger(__name__)

REQUIRED = ("user_id", "item_id", "timestamp")
TABLE_EXTS = (".csv", ".tsv", ".parquet")
ITEM_EXTS = (".csv", ".tsv", ".parquet", ".jsonl")


def _read_frame(path: str) -> pd.DataFrame:
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith(".jsonl"):
        return pd.DataFrame(_read_jsonl(path))
    sep = "\t" if path.endswith(".tsv") else ","
    try:
        # ids are read as text so "007" and "7" stay distinct; canonical_id turns integral numbers into "7" anyway
        return pd.read_csv(path, sep=sep, dtype={"user_id": str, "item_id": str})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; expected a header {list(REQUIRED)} and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'} ({e})") from None


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def canonical_id(v) -> str:
    """An id as text: integral numbers (7, 7.0, np.int64(7)) become "7", strings stay as they are (stripped)."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _resolve(path: str) -> tuple[str, str | None]:
    """(interactions file, items file or None)."""
    if os.path.isfile(path):
        if not path.endswith(TABLE_EXTS):
            raise ValueError(f"{path!r}: reader 'table' reads {', '.join(TABLE_EXTS)} files")
        return path, None
    if not os.path.isdir(path):
        raise FileNotFoundError(f"interaction table not found: {path!r} (a .csv/.tsv/.parquet file or a folder "
                                f"holding interactions.csv / interactions.parquet)")
    found = [os.path.join(path, "interactions" + e) for e in TABLE_EXTS]
    found = [f for f in found if os.path.isfile(f)]
    if not found:
        raise FileNotFoundError(f"no interactions file in {path!r}: expected one of "
                                f"{['interactions' + e for e in TABLE_EXTS]}")
    if len(found) > 1:
        raise ValueError(f"{path!r} holds several interaction files {[os.path.basename(f) for f in found]}; keep one")
    items = [os.path.join(path, "items" + e) for e in ITEM_EXTS if os.path.isfile(os.path.join(path, "items" + e))]
    if len(items) > 1:
        raise ValueError(f"{path!r} holds several item files {[os.path.basename(f) for f in items]}; keep one")
    return found[0], (items[0] if items else None)


def parse_categories(v) -> list[list[str]] | None:
    """``"a|b|c"`` -> ``[["a", "b", "c"]]`` (one path); a JSON list of names -> one path; a list of lists as is."""
    if _is_missing(v):
        return None
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            try:
                v = json.loads(text)
            except json.JSONDecodeError:
                pass
        if isinstance(v, str):
            path = [p.strip() for p in text.split("|") if p.strip()]
            return [path] if path else None
    v = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    if not v:
        return None
    if all(isinstance(p, (list, tuple, np.ndarray)) for p in v):
        return [[str(c) for c in p] for p in v]
    return [[str(c) for c in v]]


def _item_table(path: str) -> dict[str, dict]:
    frame = _read_frame(path)
    if "item_id" not in frame.columns:
        raise ValueError(f"{path}: the item table needs an 'item_id' column; found {list(frame.columns)}")
    meta: dict[str, dict] = {}
    dupes = 0
    for row_no, rec in enumerate(frame.to_dict("records")):
        if _is_missing(rec["item_id"]):
            raise ValueError(f"{path}: row {row_no + 1} has no item_id: {rec}")
        key = canonical_id(rec.pop("item_id"))
        if key in meta:
            dupes += 1
            continue
        row = {k: (None if _is_missing(v) else v) for k, v in rec.items()}
        if "categories" in row:
            row["categories"] = parse_categories(row["categories"])
        if row.get("price") is not None:
            try:
                row["price"] = float(row["price"])
            except (TypeError, ValueError):
                pass  # keep text such as "$4.99" as given
        meta[key] = row
    if dupes:
        log.warning("%s: %d repeated item_id rows ignored (first kept)", path, dupes)
    return meta


def parse_timestamps(col, path: str) -> np.ndarray:
    """One sortable float per row: numbers as they are (epoch seconds, or any order key), or ISO 8601 dates as
    seconds since the epoch (with their fractions).

    Every row must be of one kind. A column that mixes numbers and dates, or holds a date that is not ISO 8601
    (``03/05/2014`` is ambiguous), is refused naming the first offending row: sorting such a column as text would
    silently reorder histories and change the test targets.
    """
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=float)
    text = col.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    is_num = numbers.notna().to_numpy()
    if is_num.all():
        return numbers.to_numpy(dtype=float)
    if is_num.any():
        r = int(np.flatnonzero(is_num != is_num[0])[0])
        raise ValueError(f"{path}: column 'timestamp' mixes numbers and dates: data row {r + 1} has "
                         f"{text.iloc[r]!r} but data row 1 has {text.iloc[0]!r}; use one kind for every row")
    dates = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = dates.isna().to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: data row {r + 1} has timestamp {text.iloc[r]!r}, which is not a number or an "
                         f"ISO 8601 date (e.g. 2014-03-05 or 2014-03-05T10:00:00Z)")
    # seconds since the epoch, whatever unit pandas stores the dates in
    return ((dates - pd.Timestamp(0, tz="UTC").as_unit(dates.dt.unit)) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def read_table(path: str, name: str = "table") -> InteractionData:
    """Read a user's own interaction table (+ optional item table) into time-ordered sequences.

    Each user's rows are sorted by ``timestamp`` (numbers, or ISO 8601 dates; ``parse_timestamps``); equal
    timestamps keep file order. Repeated (user, item) rows are kept (repeat consumption). Users come out in sorted
    ``user_id`` order and items are numbered 1..N by first appearance in that order; ``items[i]["item_key"]`` is the
    original ``item_id`` as text. Items absent from the item table get no text and are counted
    (``skipped["items_without_metadata"]``); item-table rows nobody interacted with are counted too.

    Raises:
        FileNotFoundError: the file or folder does not exist.
        ValueError: a required column is missing (naming the file and the columns found), a row has an empty
            user_id / item_id / timestamp (naming the row), or the table is empty.
    """
    inter_path, items_path = _resolve(path)
    frame = _read_frame(inter_path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{inter_path}: missing column(s) {missing}; found {list(frame.columns)}. "
                         f"Required: {list(REQUIRED)}")
    if frame.empty:
        raise ValueError(f"{inter_path}: no rows")
    for col in REQUIRED:
        bad = frame[col].isna().to_numpy()
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{inter_path}: row {r + 1} (data row, header not counted) has no {col}: "
                             f"{frame.iloc[r][list(REQUIRED)].to_dict()}")
    users = [canonical_id(v) for v in frame["user_id"].tolist()]
    items = [canonical_id(v) for v in frame["item_id"].tolist()]
    keys = parse_timestamps(frame["timestamp"], inter_path)
    order = np.lexsort((np.arange(len(frame)), keys))  # stable by time
    in_range = bool((np.abs(keys) < 2.0**62).all())  # order keys beyond int64 still sort, but are no times
    if not in_range:
        log.warning("%s: timestamps beyond +-2^62 are used for ordering only; models that read times "
                    "(model.hstu.time_bias) cannot use this table", inter_path)
    seconds = np.floor(keys).astype(np.int64) if in_range else np.zeros(len(keys), dtype=np.int64)
    by_user: dict[str, list[str]] = {}
    by_user_times: dict[str, list[int]] = {}
    for r in order:
        by_user.setdefault(users[r], []).append(items[r])
        by_user_times.setdefault(users[r], []).append(int(seconds[r]))
    # numeric user ids sort as numbers, others as text
    # (ids beyond int64, e.g. 26 digits, stay text: they cannot be stored as numbers without losing digits)
    numeric = all(u.lstrip("-").isdigit() and abs(int(u)) < 2**63 for u in by_user)
    user_seqs = {u: by_user[u] for u in sorted(by_user, key=(lambda u: int(u)) if numeric else None)}
    # without an item file every item simply has no text: nothing to count as missing
    meta = _item_table(items_path) if items_path else {i: {} for i in set(items)}
    data = from_user_sequences(name, user_seqs, meta, inter_path, by_user_times if in_range else None)
    columns = list(dict.fromkeys(k for row in meta.values() for k in row))  # ordered: same output every run
    for row in data.items:  # every row gets the same keys, None where the item table has no row
        for k in columns:
            row.setdefault(k, None)
    if numeric:
        data.users = np.array([int(u) for u in user_seqs], dtype=np.int64)
    if items_path:
        unused = len(set(meta) - {r["item_key"] for r in data.items})
        if unused:
            data.skipped["item_rows_without_interactions"] = unused
            log.warning("%s: %d item rows have no interactions; they are left out", items_path, unused)
    return data.validate()
