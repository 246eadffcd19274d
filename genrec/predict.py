"""Top-K recommendations from a trained run, outside evaluation.

    run = load_run("runs/<run name>")                 # config, data, model with its best weights
    items, scores = run.recommend([[12, 7, 301]], k=10)  # any histories of item ids (1..N), oldest first
    genrec predict runs/<run name> --k 100 --out recs.parquet [--users users.txt] [--split test|valid|next]

``--split test`` (the default) recommends from each user's test-time history and writes the held-out target
beside the list, so the recorded metrics can be recomputed from the file alone (``metrics_from_file``);
``valid`` does the same one step earlier; ``next`` uses the whole sequence, i.e. recommends the item after the
last one we have. Lists are ranked exactly as the evaluator ranks them: score models by their scores (with the
run's ``eval.exclude_history``), generative models by their search, whose width is ``max(eval.beam_size, k)``
(so a list longer than the evaluation's ``max(eval.ks)`` comes from a wider search).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .data.sequences import left_pad

SPLITS = ("test", "valid", "next")


@dataclass
class TrainedRun:
    """A trained run, ready to recommend: ``cfg`` (resolved config), ``data`` (its dataset), ``model`` (eval mode)."""

    cfg: object
    data: object
    model: torch.nn.Module
    run_dir: str
    finished: bool = False  # the run trained to its end (not killed, not stopped by train.finish)
    inputs: dict | None = None  # fingerprints of the data and semantic IDs (``training.inputs.input_fingerprints``)

    @torch.no_grad()
    def recommend(self, histories: list[list[int]] | torch.Tensor, k: int = 10,
                  users: list[int] | torch.Tensor | None = None, times: list[list[int]] | torch.Tensor | None = None,
                  at: list[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items for each history.

        Args:
            histories: item ids (1..N) per user, oldest first (only the last ``data.max_history`` are read), or a
                (B, T) left-padded tensor.
            k: items per user.
            users: user rows (0..U-1) for models with user tokens; default 0 for all.
            times, at: for models that read timestamps (``model.times_for``, e.g. HSTU's time bias): the time of
                each history item (laid out as ``histories``) and the time of each request, in seconds.

        Returns:
            items (B, k) long and scores (B, k) float, best first (0 / -inf where fewer than k items exist).
        """
        from .evaluation.evaluate import ranks_by
        from .evaluation.metrics import mask_seen_scores

        t = self.cfg.data.max_history
        times_for = getattr(self.model, "times_for", "")
        if times_for:
            if times is None or at is None:
                raise ValueError(f"this run was trained with {times_for}=true: recommend() needs times= (each "
                                 f"history item's timestamp) and at= (the time of each request)")
            lengths, got = _row_lengths(histories), _row_lengths(times)
            if got != lengths or len(at) != len(histories):
                raise ValueError(f"recommend(): times= needs one timestamp per history item (history lengths "
                                 f"{lengths[:5]}, times {got[:5]}) and at= one time per history ({len(at)} for "
                                 f"{len(histories)})")
        if torch.is_tensor(histories):
            seen = histories
        else:  # the model reads the last t items; exclude_history masks every past one, or those t (scope window)
            longest = max([len(h) for h in histories] + [1])
            seen = torch.from_numpy(np.stack([left_pad(np.asarray(h, dtype=np.int64), longest) for h in histories]))
            histories = seen[:, -t:] if longest >= t else torch.nn.functional.pad(seen, (t - longest, 0))
            if self.cfg.eval.exclude_scope == "window":  # HSTU's protocol: only the items the model reads
                seen = histories
        if times_for and not torch.is_tensor(times):  # laid out as the history the model reads
            times = torch.from_numpy(np.stack([left_pad(np.asarray(x, dtype=np.int64), histories.shape[1])
                                               for x in times]))
        b = histories.shape[0]
        users = torch.zeros(b, dtype=torch.long) if users is None else torch.as_tensor(users, dtype=torch.long)
        batch = {"user": users, "history": histories, "target": torch.zeros(b, dtype=torch.long)}
        if times_for:
            batch["history_times"], batch["target_time"] = times, torch.as_tensor(at, dtype=torch.long)
        exclude = self.cfg.eval.exclude_history
        if ranks_by(self.model) == "score":
            scores = self.model.score(batch).float().clone()  # a model may return an expanded view (pop)
            scores[:, 0] = float("-inf")
            if exclude:
                scores = mask_seen_scores(scores, seen)
            top = scores.topk(min(k, scores.shape[1] - 1), dim=1)
            return top.indices, top.values
        want = k + histories.shape[1] if exclude else k
        items, scores = self.model.recommend(batch, want)
        if exclude:
            was_seen = (items[:, :, None] == seen[:, None, :]).any(-1) & (items > 0)
            order = torch.argsort(was_seen.to(torch.int8), dim=1, stable=True)[:, :k]  # as drop_seen_items
            items, scores = items.gather(1, order), scores.gather(1, order)
            dropped = was_seen.gather(1, order)
            items, scores = items.masked_fill(dropped, 0), scores.masked_fill(dropped, float("-inf"))
        return items[:, :k], scores[:, :k]


def _row_lengths(rows) -> list[int]:
    return [rows.shape[1]] * len(rows) if torch.is_tensor(rows) else [len(x) for x in rows]


def load_run(run_dir: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainedRun:
    """Rebuild a trained run's model from ``<run_dir>/config.yaml`` and ``best_model.pt`` (CPU, eval mode).

    The data and semantic IDs must be the ones the run trained on (their fingerprints are checked).

    Raises:
        FileNotFoundError: the folder lacks the config or the best weights (naming the path).
        ValueError: the inputs changed since training, or a file is damaged.
    """
    import json

    from .config import load_config
    from .data import load_dataset
    from .io import torch_load
    from .models import build_model
    from .training.distributed import load_full_state_dict
    from .training.inputs import build_context, check_inputs, input_fingerprints

    cfg_path, best_path = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "best_model.pt")
    for path in (cfg_path, best_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found; pass the folder of a trained run (runs/<name>)")
    cfg = load_config([cfg_path], list(overrides))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = load_dataset(cfg.data)
    ctx = build_context(cfg, data, None)
    state_path = os.path.join(run_dir, "checkpoint", "trainer_state.json")
    finished = False
    model = build_model(cfg, ctx)  # before the check: whether its fingerprint covers the timestamps
    inputs = input_fingerprints(data, ctx, times=bool(model.times_for))
    if os.path.isfile(state_path):
        with open(state_path) as f:
            state = json.load(f)
        check_inputs(run_dir, state, inputs)
        finished = bool(state.get("done")) and state.get("finished_by_user_at_epoch") is None
    load_full_state_dict(model, model, torch_load(best_path, "best weights", "re-train the run", map_location="cpu"))
    return TrainedRun(cfg, data, model.eval(), run_dir, finished, inputs)


def predict(run: TrainedRun, k: int = 10, split: str = "test", users: list[str] | None = None,
            batch_size: int = 256):
    """A pandas DataFrame with one row per (user, rank): user, user_row, rank, item, score, title, target.

    ``users``: original user ids (as in the data files) to recommend for; default every user. ``target`` is
    the held-out item of ``split`` (0 for ``next``). A model that reads timestamps gets the held-out item's time as
    the request time, and for ``next`` the time of the user's last interaction.
    """
    import pandas as pd

    if split not in SPLITS:
        raise ValueError(f"--split {split!r} is not one of {list(SPLITS)}")
    data = run.data
    index = {str(u): i for i, u in enumerate(data.users)}
    if users is None:
        rows = list(range(data.num_users))
    else:
        missing = [u for u in users if str(u) not in index]
        if missing:
            raise ValueError(f"{len(missing)} user ids are not in {data.name} (e.g. {missing[0]!r})")
        rows = [index[str(u)] for u in users]
    cut = {"test": 1, "valid": 2, "next": 0}[split]
    out = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        seqs = [data.sequences[r] for r in chunk]
        hist = [s[: len(s) - cut] for s in seqs]
        timed = {}
        if getattr(run.model, "times_for", "") and data.times is not None:
            ts = [data.times[r] for r in chunk]
            timed = {"times": [x[: len(x) - cut] for x in ts], "at": [int(x[len(x) - max(cut, 1)]) for x in ts]}
        items, scores = run.recommend(hist, k, users=chunk, **timed)
        targets = [int(s[len(s) - cut]) if cut else 0 for s in seqs]
        for j, r in enumerate(chunk):
            for rank in range(items.shape[1]):
                it = int(items[j, rank])
                out.append((str(data.users[r]), r, rank + 1, it, float(scores[j, rank]),
                            (data.items[it - 1].get("title") or "") if it > 0 else "", targets[j]))
    return pd.DataFrame(out, columns=["user", "user_row", "rank", "item", "score", "title", "target"])


def metrics_from_file(frame, ks: list[int]) -> dict:
    """Recall@K / NDCG@K recomputed from a ``predict`` frame (a target missing from the list is a miss)."""
    from .evaluation.metrics import metrics_from_ranks

    ranks = []
    for _, group in frame.groupby("user_row", sort=True):
        hit = group.loc[group["item"] == group["target"], "rank"]
        ranks.append(int(hit.iloc[0]) - 1 if len(hit) else 10**9)  # 0-based rank, or beyond every K
    return metrics_from_ranks(torch.tensor(ranks), ks)


__all__ = ["SPLITS", "TrainedRun", "load_run", "metrics_from_file", "predict"]
