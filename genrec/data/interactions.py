"""The one internal data format: time-ordered user sequences over items 1..N plus an item table.

Every reader returns an ``InteractionData``. Item ids are dense integers 1..N (0 is padding); ``items[i]`` is the
metadata dict of item ``i + 1`` (keys such as ``title``, ``brand``, ``categories``, ``description``, ``price``;
values may be ``None``). ``sequences[u]`` is user ``users[u]``'s items, oldest first, and ``times[u]`` (readers whose
files have timestamps: MovieLens ``ratings.dat``, a user table, McAuley's raw reviews) the time of each, in whole
seconds; ``times`` is ``None`` for files without them.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class InteractionData:
    name: str
    sequences: list[np.ndarray]  # per user: int64 item ids in 1..num_items, time order
    users: np.ndarray  # (U,) original user ids (or 1..U)
    items: list[dict]  # row i = item i + 1
    source: str = ""  # where it was read from
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, for everything not kept
    times: list[np.ndarray] | None = None  # per user: int64 seconds of each interaction, non-decreasing; or None

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def validate(self) -> "InteractionData":
        """Check the invariants every later stage relies on; raise ValueError naming the first offender."""
        n = self.num_items
        if not self.sequences:
            raise ValueError(f"{self.source or self.name}: no users left (skipped: {self.skipped or 'nothing'}); "
                             f"check the files or lower data.min_interactions / data.kcore")
        if len(self.users) != len(self.sequences):
            raise ValueError(f"{self.source}: {len(self.users)} user ids for {len(self.sequences)} sequences")
        for u, seq in enumerate(self.sequences):
            if len(seq) == 0:
                raise ValueError(f"{self.source}: user {self.users[u]} has an empty sequence")
            lo, hi = int(seq.min()), int(seq.max())
            if lo < 1 or hi > n:
                bad = lo if lo < 1 else hi
                raise ValueError(f"{self.source}: user {self.users[u]} has item id {bad}, expected 1..{n} "
                                 f"(the item table has {n} rows)")
        if self.times is not None:
            if len(self.times) != len(self.sequences):
                raise ValueError(f"{self.source}: timestamps for {len(self.times)} users, sequences for "
                                 f"{len(self.sequences)}")
            for u, (seq, t) in enumerate(zip(self.sequences, self.times)):
                if len(t) != len(seq):
                    raise ValueError(f"{self.source}: user {self.users[u]} has {len(seq)} items but {len(t)} "
                                     f"timestamps")
                if len(t) > 1 and (np.diff(t) < 0).any():
                    r = int(np.flatnonzero(np.diff(t) < 0)[0])
                    raise ValueError(f"{self.source}: user {self.users[u]}'s timestamps go back in time at "
                                     f"interaction {r + 2} ({int(t[r])} then {int(t[r + 1])}); sequences must be in "
                                     f"time order")
        return self

    def stats(self) -> dict:
        lengths = np.array([len(s) for s in self.sequences])
        counts = np.bincount(np.concatenate(self.sequences), minlength=self.num_items + 1)[1:]
        return {
            "dataset": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "items_with_interactions": int((counts > 0).sum()),
            "interactions": self.num_interactions,
            "density": self.num_interactions / max(1, self.num_users * self.num_items),
            "seq_len_mean": float(lengths.mean()),
            "seq_len_median": float(np.median(lengths)),
            "seq_len_min": int(lengths.min()),
            "seq_len_max": int(lengths.max()),
            "seq_len_p90": float(np.percentile(lengths, 90)),
            "item_count_min": int(counts.min()),
            "item_count_max": int(counts.max()),
            "timestamps": self._time_span(),
            "skipped": dict(self.skipped),
        }

    def _time_span(self) -> str:
        """'none', or the first and last interaction's time (UTC dates when they are epoch seconds of 1970-2100)."""
        if self.times is None:
            return "none"
        lo, hi = min(int(t[0]) for t in self.times), max(int(t[-1]) for t in self.times)
        if 0 <= lo and hi < 4102444800:
            import datetime

            def day(t):
                return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")

            return f"{day(lo)} .. {day(hi)} (UTC, read as epoch seconds)"
        return f"{lo} .. {hi}"


def drop_short(data: InteractionData, min_len: int) -> InteractionData:
    """Drop users with fewer than ``min_len`` interactions, counting them in ``data.skipped``."""
    keep = [i for i, s in enumerate(data.sequences) if len(s) >= min_len]
    dropped = len(data.sequences) - len(keep)
    if dropped:
        log.warning("%s: skipped %d users with fewer than %d interactions", data.name, dropped, min_len)
        data.skipped[f"users_shorter_than_{min_len}"] = data.skipped.get(f"users_shorter_than_{min_len}", 0) + dropped
    data.sequences = [data.sequences[i] for i in keep]
    data.users = data.users[keep]
    if data.times is not None:
        data.times = [data.times[i] for i in keep]
    return data


def times_after_filter(before: dict, times: dict, kept: dict) -> dict:
    """The timestamps of the sequences a k-core kept: ``kept[u]`` is ``before[u]`` with some items removed (by
    identity, so every occurrence of a removed item goes), ``times[u]`` the timestamps of ``before[u]``.

    Raises:
        ValueError: a kept sequence is not its original with items removed (the filter broke that contract).
    """
    out = {}
    for u, new in kept.items():
        keep = set(new)
        if [i for i in before[u] if i in keep] != list(new):
            raise ValueError(f"user {u}: the filtered sequence is not the original with items removed")
        out[u] = [t for i, t in zip(before[u], times[u]) if i in keep]
    return out


def kcore(user_items: dict, k: int) -> dict:
    """Iterative k-core: drop users and items with fewer than k interactions until none remain.

    Args:
        user_items: user -> time-ordered list of item ids (any hashable ids).
    Returns:
        The filtered dict, order kept (users with fewer than k items left are removed).
    """
    data = {u: list(v) for u, v in user_items.items()}
    if k <= 1:
        return data
    while True:
        item_count = Counter(i for seq in data.values() for i in seq)
        changed = False
        for u in list(data):
            seq = [i for i in data[u] if item_count[i] >= k]
            if len(seq) < k:
                del data[u]
                changed = True
            elif len(seq) != len(data[u]):
                data[u] = seq
                changed = True
        if not changed:
            return data


def from_user_sequences(name: str, user_seqs: dict, item_meta: dict, source: str,
                        user_times: dict | None = None) -> InteractionData:
    """Renumber items densely 1..N by first appearance in user order and build the InteractionData.

    Args:
        user_seqs: original user id -> list of original item ids, time-ordered.
        item_meta: original item id -> metadata dict (missing items get ``{}`` and are counted).
        user_times: original user id -> the timestamps of its items (seconds), when the source has them.
    """
    item_index: dict = {}
    sequences = []
    for seq in user_seqs.values():
        sequences.append(np.array([item_index.setdefault(i, len(item_index) + 1) for i in seq], dtype=np.int64))
    items = []
    missing = 0
    for orig in item_index:
        meta = item_meta.get(orig)
        if meta is None:
            missing += 1
            meta = {}
        items.append({"item_key": str(orig), **meta})
    data = InteractionData(name, sequences, np.array(list(user_seqs.keys()), dtype=object), items, source)
    if user_times is not None:
        data.times = [np.asarray(user_times[u], dtype=np.int64) for u in user_seqs]
    if missing:
        log.warning("%s: %d items have no metadata row", name, missing)
        data.skipped["items_without_metadata"] = missing
    return data
