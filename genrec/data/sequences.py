"""Leave-one-out splits and the torch Datasets every model trains and evaluates on.

For a user with items ``s_1 .. s_n`` (time order): test target ``s_n`` with history ``s_1..s_{n-1}``, validation
target ``s_{n-1}`` with history ``s_1..s_{n-2}``, training on ``s_1..s_{n-2}`` (on ``s_1..s_{n-1}`` with
``train_on_valid``, HSTU's protocol). Histories keep the last
``max_history`` items and are LEFT-padded with 0, so the most recent item is always the last column.

For models that read timestamps (``Split(times_for=...)``), every example also carries the time of each item,
padded the same way (``input_times`` / ``label_times``, ``history_times`` / ``target_time``): the target's time is
the time of the request the model answers (HSTU's time-gap bias reads it, as its research code does).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .interactions import InteractionData


def left_pad(seq: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.int64)
    seq = seq[-length:] if length > 0 else seq[:0]
    if len(seq):
        out[length - len(seq):] = seq
    return out


@dataclass
class Split:
    """Leave-one-out view of an InteractionData. ``user_index[u]`` is the row of the user in ``data``."""

    data: InteractionData
    max_history: int
    train_on_valid: bool = False  # training sequences end at the validation item (HSTU's protocol)
    times_for: str = ""  # the config key of a model that reads timestamps ('': none); examples then carry them

    def __post_init__(self):
        short = [u for u, s in enumerate(self.data.sequences) if len(s) < 3]
        if short:
            raise ValueError(f"{self.data.name}: leave-one-out needs >= 3 items per user; {len(short)} users have fewer "
                             f"(e.g. user {self.data.users[short[0]]}). Set data.min_interactions >= 3.")
        if self.times_for and self.data.times is None:
            raise ValueError(f"{self.times_for}=true reads the time of each interaction, but "
                             f"{self.data.source or self.data.name} has no timestamps (MovieLens ratings.dat, a "
                             f"user table with times within +-2^62 and McAuley's raw reviews have them; "
                             f"sequences.txt files do not); set "
                             f"{self.times_for}=false or read a file with timestamps")

    @property
    def with_times(self) -> bool:
        return bool(self.times_for)

    def train_sequence(self, u: int) -> np.ndarray:
        return self.data.sequences[u][:-1 if self.train_on_valid else -2]

    def train_times(self, u: int) -> np.ndarray:
        return self.data.times[u][:-1 if self.train_on_valid else -2]

    def _cut(self, u: int, split: str) -> int:
        return {"valid": len(self.data.sequences[u]) - 2, "test": len(self.data.sequences[u]) - 1}[split]

    def eval_example(self, u: int, split: str) -> tuple[np.ndarray, int]:
        seq, cut = self.data.sequences[u], self._cut(u, split)
        return seq[:cut], int(seq[cut])

    def eval_times(self, u: int, split: str) -> tuple[np.ndarray, int]:
        """The timestamps of ``eval_example(u, split)``: the history's, and the target's."""
        t, cut = self.data.times[u], self._cut(u, split)
        return t[:cut], int(t[cut])


def _times(split: Split, history: np.ndarray, target: int) -> dict:
    """``history_times`` (T,) padded as the history, and ``target_time``."""
    return {"history_times": torch.from_numpy(left_pad(history, split.max_history)), "target_time": target}


class EvalDataset(Dataset):
    """One example per user: ``{"user", "history" (T,), "target"}`` for ``split`` in {valid, test}.

    With ``with_seen`` also ``"seen"``: EVERY item before the target (not only the last ``max_history``), left-padded
    to the longest sequence of the data, for the exclude-history protocol (RecBole / RePlay mask all of them).
    """

    def __init__(self, split: Split, name: str, users: np.ndarray | None = None, with_seen: bool = False):
        if name not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {name!r}")
        self.split, self.name = split, name
        self.users = np.arange(split.data.num_users) if users is None else np.asarray(users)
        self.seen_len = max(len(s) for s in split.data.sequences) if with_seen else 0

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> dict:
        u = int(self.users[i])
        history, target = self.split.eval_example(u, self.name)
        out = {"user": u, "history": torch.from_numpy(left_pad(history, self.split.max_history)), "target": target}
        if self.split.with_times:
            out.update(_times(self.split, *self.split.eval_times(u, self.name)))
        if self.seen_len:
            out["seen"] = torch.from_numpy(left_pad(history, self.seen_len))
        return out


class NextItemDataset(Dataset):
    """Every prefix of every training sequence -> next item (TIGER's training examples)."""

    def __init__(self, split: Split):
        self.split = split
        index = [(u, t) for u in range(split.data.num_users) for t in range(1, len(split.train_sequence(u)))]
        self.index = np.array(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def lengths(self) -> np.ndarray:
        """History items per example (for length-bucketed batches)."""
        return np.minimum(self.index[:, 1], self.split.max_history)

    def __getitem__(self, i: int) -> dict:
        u, t = (int(x) for x in self.index[i])
        seq = self.split.train_sequence(u)
        out = {"user": u, "history": torch.from_numpy(left_pad(seq[:t], self.split.max_history)), "target": int(seq[t])}
        if self.split.with_times:
            times = self.split.train_times(u)
            out.update(_times(self.split, times[:t], int(times[t])))
        return out


class SequenceDataset(Dataset):
    """One example per user: the last ``max_history + 1`` training items as input/label pairs (SASRec)."""

    def __init__(self, split: Split):
        self.split = split
        self.users = np.array([u for u in range(split.data.num_users) if len(split.train_sequence(u)) >= 2])

    def lengths(self) -> np.ndarray:
        """Items per row (for length-bucketed batches)."""
        return np.array([min(len(self.split.train_sequence(int(u))) - 1, self.split.max_history) for u in self.users])

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> dict:
        u = int(self.users[i])
        seq = self.split.train_sequence(u)[-(self.split.max_history + 1):]
        out = {
            "user": u,
            "input": torch.from_numpy(left_pad(seq[:-1], self.split.max_history)),
            "labels": torch.from_numpy(left_pad(seq[1:], self.split.max_history)),
        }
        if self.split.with_times:  # the time of each input item, and of the item each position predicts
            times = self.split.train_times(u)[-(self.split.max_history + 1):]
            out["input_times"] = torch.from_numpy(left_pad(times[:-1], self.split.max_history))
            out["label_times"] = torch.from_numpy(left_pad(times[1:], self.split.max_history))
        return out


class UserSequenceDataset(SequenceDataset):
    """One example per user: its last ``max_history + 1`` training items as history + target.

    For models that put the loss on every item of a sequence in one pass (``loss_on="all"``): the example carries
    the whole window, the model predicts each item from the items before it.
    """

    def __getitem__(self, i: int) -> dict:
        u = int(self.users[i])
        seq = self.split.train_sequence(u)[-(self.split.max_history + 1):]
        history = torch.from_numpy(left_pad(seq[:-1], self.split.max_history))
        out = {"user": u, "history": history, "target": int(seq[-1])}
        if self.split.with_times:
            times = self.split.train_times(u)[-(self.split.max_history + 1):]
            out.update(_times(self.split, times[:-1], int(times[-1])))
        return out


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a list of example dicts into a batch of tensors (ints become (B,) int64)."""
    out = {}
    for key in examples[0]:
        vals = [e[key] for e in examples]
        out[key] = torch.stack(vals) if torch.is_tensor(vals[0]) else torch.tensor(vals, dtype=torch.int64)
    return out


TRAIN_DATASETS = {"next_item": NextItemDataset, "sequence": SequenceDataset}
