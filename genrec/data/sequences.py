"""Leave-one-out splits and the torch Datasets every model trains and evaluates on.

For a user with items ``s_1 .. s_n`` (time order): test target ``s_n`` with history ``s_1..s_{n-1}``, validation
target ``s_{n-1}`` with history ``s_1..s_{n-2}``, training on ``s_1..s_{n-2}`` (on ``s_1..s_{n-1}`` with
``train_on_valid``, HSTU's protocol). Histories keep the last
``max_history`` items and are LEFT-padded with 0, so the most recent item is always the last column.
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

    def __post_init__(self):
        short = [u for u, s in enumerate(self.data.sequences) if len(s) < 3]
        if short:
            raise ValueError(f"{self.data.name}: leave-one-out needs >= 3 items per user; {len(short)} users have fewer "
                             f"(e.g. user {self.data.users[short[0]]}). Set data.min_interactions >= 3.")

    def train_sequence(self, u: int) -> np.ndarray:
        return self.data.sequences[u][:-1 if self.train_on_valid else -2]

    def eval_example(self, u: int, split: str) -> tuple[np.ndarray, int]:
        seq = self.data.sequences[u]
        cut = {"valid": len(seq) - 2, "test": len(seq) - 1}[split]
        return seq[:cut], int(seq[cut])


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
        return {"user": u, "history": torch.from_numpy(left_pad(seq[:t], self.split.max_history)), "target": int(seq[t])}


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
        return {
            "user": u,
            "input": torch.from_numpy(left_pad(seq[:-1], self.split.max_history)),
            "labels": torch.from_numpy(left_pad(seq[1:], self.split.max_history)),
        }


class UserSequenceDataset(SequenceDataset):
    """One example per user: its last ``max_history + 1`` training items as history + target.

    For models that put the loss on every item of a sequence in one pass (``loss_on="all"``): the example carries
    the whole window, the model predicts each item from the items before it.
    """

    def __getitem__(self, i: int) -> dict:
        u = int(self.users[i])
        seq = self.split.train_sequence(u)[-(self.split.max_history + 1):]
        history = torch.from_numpy(left_pad(seq[:-1], self.split.max_history))
        return {"user": u, "history": history, "target": int(seq[-1])}


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a list of example dicts into a batch of tensors (ints become (B,) int64)."""
    out = {}
    for key in examples[0]:
        vals = [e[key] for e in examples]
        out[key] = torch.stack(vals) if torch.is_tensor(vals[0]) else torch.tensor(vals, dtype=torch.int64)
    return out


TRAIN_DATASETS = {"next_item": NextItemDataset, "sequence": SequenceDataset}
