"""Leave-one-out split, padding, the training/eval datasets, k-core and the tiny dataset."""
import numpy as np
import pytest
import torch

from genrec.config import DataConfig
from genrec.data import (EvalDataset, InteractionData, NextItemDataset, SequenceDataset, Split, collate, left_pad,
                         load_dataset)
from genrec.data.interactions import drop_short, kcore
from genrec.data.tiny import make_tiny


def make_data(seqs):
    n = max(max(s) for s in seqs)
    return InteractionData("hand", [np.array(s, dtype=np.int64) for s in seqs], np.arange(10, 10 * len(seqs) + 1, 10),
                           [{"title": f"item {i}"} for i in range(1, n + 1)], source="hand-made").validate()


@pytest.fixture
def split():
    # users 10, 20, 30; histories capped at 3
    return Split(make_data([[1, 2, 3, 4, 5], [2, 3, 4], [6, 5, 4, 3, 2, 1, 2]]), max_history=3)


def test_left_pad_keeps_most_recent_last():
    assert left_pad(np.array([1, 2]), 4).tolist() == [0, 0, 1, 2]
    assert left_pad(np.array([1, 2, 3, 4, 5]), 3).tolist() == [3, 4, 5]
    assert left_pad(np.array([], dtype=np.int64), 2).tolist() == [0, 0]


def test_split_eval_examples_exact(split):
    valid, test = EvalDataset(split, "valid"), EvalDataset(split, "test")
    assert len(valid) == len(test) == 3
    expect_valid = [([1, 2, 3], 4), ([0, 0, 2], 3), ([4, 3, 2], 1)]
    expect_test = [([2, 3, 4], 5), ([0, 2, 3], 4), ([3, 2, 1], 2)]
    for ds, expect in ((valid, expect_valid), (test, expect_test)):
        for u, (hist, target) in enumerate(expect):
            ex = ds[u]
            assert ex["user"] == u and ex["history"].tolist() == hist and ex["target"] == target
    # the un-capped raw split: test history is everything before the last item
    hist, target = split.eval_example(0, "test")
    assert hist.tolist() == [1, 2, 3, 4] and target == 5


def test_split_train_sequences_exclude_eval_targets(split):
    assert [split.train_sequence(u).tolist() for u in range(3)] == [[1, 2, 3], [2], [6, 5, 4, 3, 2]]


def test_train_on_valid_trains_through_the_validation_item_and_leaves_eval_examples_alone(split):
    hstu = Split(split.data, max_history=3, train_on_valid=True)
    assert [hstu.train_sequence(u).tolist() for u in range(3)] == [[1, 2, 3, 4], [2, 3], [6, 5, 4, 3, 2, 1]]
    for name in ("valid", "test"):
        for u in range(3):
            assert EvalDataset(hstu, name)[u]["target"] == EvalDataset(split, name)[u]["target"]
    # user 20 ([2, 3, 4]) now has a training pair; its window ends at the validation item
    rows = SequenceDataset(hstu)
    assert rows.users.tolist() == [0, 1, 2] and rows[1]["labels"].tolist() == [0, 0, 3]


def test_history_cap_follows_max_history():
    data = make_data([list(range(1, 31))])
    for cap, expect in ((20, list(range(9, 29))), (5, [24, 25, 26, 27, 28])):
        ex = EvalDataset(Split(data, max_history=cap), "valid")[0]
        assert ex["history"].tolist() == expect and ex["target"] == 29
    assert DataConfig().max_history == 20  # TIGER's default


def test_eval_dataset_rejects_unknown_split(split):
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        EvalDataset(split, "train")


def test_next_item_dataset_is_every_training_prefix(split):
    ds = NextItemDataset(split)
    assert len(ds) == sum(len(split.train_sequence(u)) - 1 for u in range(3)) == 2 + 0 + 4
    got = [(ds[i]["user"], ds[i]["history"].tolist(), ds[i]["target"]) for i in range(len(ds))]
    assert got == [
        (0, [0, 0, 1], 2), (0, [0, 1, 2], 3),
        (2, [0, 0, 6], 5), (2, [0, 6, 5], 4), (2, [6, 5, 4], 3), (2, [5, 4, 3], 2),
    ]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["history"].shape == (6, 3) and batch["target"].shape == (6,) and batch["user"].dtype == torch.int64


def test_sequence_dataset_shapes_and_label_alignment(split):
    ds = SequenceDataset(split)
    assert len(ds) == 2  # user 1 has a single training item: nothing to predict
    first, last = ds[0], ds[1]
    assert (first["user"], first["input"].tolist(), first["labels"].tolist()) == (0, [0, 1, 2], [0, 2, 3])
    assert (last["user"], last["input"].tolist(), last["labels"].tolist()) == (2, [5, 4, 3], [4, 3, 2])
    batch = collate([first, last])
    assert batch["input"].shape == batch["labels"].shape == (2, 3)
    # labels are the inputs shifted by one: label[t] is the item after input[t]
    for u, row in zip((0, 2), batch["labels"]):
        assert row[-1].item() == split.train_sequence(u)[-1]  # the last label is the last training item
    mask = batch["input"] != 0
    assert torch.equal(mask, batch["labels"] != 0)
    both = mask[:, 1:] & mask[:, :-1]
    assert torch.equal(batch["input"][:, 1:][both], batch["labels"][:, :-1][both])


def test_split_rejects_users_with_fewer_than_three_items():
    data = make_data([[1, 2, 3], [2, 3]])
    with pytest.raises(ValueError, match="min_interactions >= 3"):
        Split(data, max_history=20)


def test_load_dataset_skips_and_counts_short_users(tmp_path):
    rows = ["user_id,item_id,timestamp"]
    lengths = {"a": 2, "b": 3, "c": 5, "d": 1}
    for u, n in lengths.items():
        rows += [f"{u},i{t},{t}" for t in range(n)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(name="custom", reader="table", path=str(tmp_path / "inter.csv"))
    data = load_dataset(cfg)
    assert data.users.tolist() == ["b", "c"] and data.skipped == {"users_shorter_than_3": 2}
    Split(data, max_history=20)  # now valid
    cfg.min_interactions = 5
    data = load_dataset(cfg)
    assert data.users.tolist() == ["c"] and data.skipped == {"users_shorter_than_5": 3}
    cfg.min_interactions = 6
    with pytest.raises(ValueError, match="no users left"):
        load_dataset(cfg)


def test_drop_short_counts():
    data = drop_short(make_data([[1, 2, 3], [1], [1, 2]]), 3)
    assert data.num_users == 1 and data.users.tolist() == [10] and data.skipped == {"users_shorter_than_3": 2}


def test_kcore_hand_computed():
    seqs = {"a": [1, 2, 3], "b": [1, 2, 3], "c": [1, 2, 4], "d": [4, 5]}
    # k=2: item 5 is seen once -> d keeps [4], too short, removed -> item 4 now seen once -> c becomes [1, 2]
    assert kcore(seqs, 2) == {"a": [1, 2, 3], "b": [1, 2, 3], "c": [1, 2]}
    # k=3: item 3 (twice) and 4, 5 go, every user falls below 3 items
    assert kcore(seqs, 3) == {}
    assert kcore(seqs, 1) == seqs and kcore(seqs, 0) == seqs
    assert seqs["d"] == [4, 5]  # the input is not modified


def test_kcore_through_load_dataset_renumbers_and_counts(tmp_path):
    rows = ["user_id,item_id,timestamp"]
    for u, seq in {"a": "xyz", "b": "xyz", "c": "xyw", "d": "wv", "e": "xyz"}.items():
        rows += [f"{u},{i},{t}" for t, i in enumerate(seq)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(DataConfig(name="custom", reader="table", path=str(tmp_path / "inter.csv"), kcore=2))
    # d -> [w] removed, then c -> [x, y] (2 items, then dropped by the min 3 rule)
    assert data.users.tolist() == ["a", "b", "e"]
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3]] * 3
    assert [r["item_key"] for r in data.items] == ["x", "y", "z"]
    assert data.skipped == {"users_removed_by_2_core": 1, "items_removed_by_2_core": 2, "users_shorter_than_3": 1}


def test_validate_rejects_out_of_range_and_empty():
    data = InteractionData("bad", [np.array([1, 4])], np.array([1]), [{}, {}, {}], source="x")
    with pytest.raises(ValueError, match="item id 4, expected 1..3"):
        data.validate()
    data.sequences = [np.array([0, 1])]
    with pytest.raises(ValueError, match="item id 0"):
        data.validate()
    data.sequences = [np.array([], dtype=np.int64)]
    with pytest.raises(ValueError, match="empty sequence"):
        data.validate()


def test_tiny_dataset_is_deterministic():
    a, b = make_tiny(), make_tiny()
    assert a.num_users == 600 and a.num_items == 240
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences)) and a.items == b.items
    c = make_tiny(seed=1)
    assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))
    loaded = load_dataset(DataConfig())
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, loaded.sequences))
    Split(loaded, max_history=20)


def test_first_fit_decreasing_packs_every_sequence_once_within_capacity():
    from genrec.data.packing import first_fit_decreasing

    lengths = [5, 3, 8, 2, 7, 1, 4]
    rows = first_fit_decreasing(lengths, capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert rows[0][0] == 2 and len(rows) == 3  # longest first; 30 tokens need 3 rows of 10
    import pytest

    with pytest.raises(ValueError, match="more than the row capacity"):
        first_fit_decreasing([11], capacity=10)
