"""Timestamps: readers keep them aligned with the items (through ties, k-core and short-user filters), the split's
datasets give each example the times of its items and of its target, and data without them is refused by name."""
import numpy as np
import pandas as pd
import pytest

from genrec.config import DataConfig
from genrec.data import EvalDataset, InteractionData, NextItemDataset, SequenceDataset, Split, load_dataset
from genrec.data.movielens import read_movielens
from genrec.data.sequences import UserSequenceDataset
from genrec.data.table import read_table


def timed_data(seqs, times):
    n = max(max(s) for s in seqs)
    return InteractionData("hand", [np.array(s, dtype=np.int64) for s in seqs], np.arange(1, len(seqs) + 1),
                           [{} for _ in range(n)], source="hand-made",
                           times=[np.array(t, dtype=np.int64) for t in times]).validate()


def test_ratings_dat_keeps_each_movies_time_through_ties(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.dat").write_text("10::A (2000)::Drama\n20::B (2001)::Drama\n30::C (2002)::Drama\n")
    (folder / "ratings.dat").write_text("1::20::5::300\n1::10::4::100\n1::30::3::300\n2::30::5::50\n2::10::2::10\n")
    data = read_movielens(str(folder))
    movie = [r["movie_id"] for r in data.items]
    assert [[movie[i - 1] for i in s] for s in data.sequences] == [[10, 20, 30], [10, 30]]
    assert [t.tolist() for t in data.times] == [[100, 300, 300], [10, 50]]
    (folder / "ratings.dat").unlink()
    (folder / "sequences.txt").write_text("1 10 20 30\n2 10 30\n")
    assert read_movielens(str(folder)).times is None


def test_table_times_are_whole_seconds_of_numbers_and_iso_dates(tmp_path):
    pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": ["a", "b", "c", "a", "c", "b"],
                  "timestamp": [30.7, 10, 20, 5, 6, 7]}).to_csv(tmp_path / "n.csv", index=False)
    data = read_table(str(tmp_path / "n.csv"))
    assert [t.tolist() for t in data.times] == [[10, 20, 30], [5, 6, 7]]
    pd.DataFrame({"user_id": [1, 1, 1], "item_id": ["a", "b", "c"],
                  "timestamp": ["1970-01-01T00:01:00Z", "1970-01-01T00:00:01.5Z", "1970-01-02"]}).to_csv(
        tmp_path / "d.csv", index=False)
    assert read_table(str(tmp_path / "d.csv")).times[0].tolist() == [1, 60, 86400]
    # dates beyond datetime64[ns] (1677-2262), e.g. a 9999-12-31 sentinel, still sort and convert
    pd.DataFrame({"user_id": [1, 1, 1], "item_id": ["a", "b", "c"],
                  "timestamp": ["9999-12-31", "1500-01-01", "2000-01-01"]}).to_csv(tmp_path / "far.csv", index=False)
    data = read_table(str(tmp_path / "far.csv"))
    assert [data.items[i - 1]["item_key"] for i in data.sequences[0]] == ["b", "c", "a"]
    assert data.times[0].tolist() == [-14831769600, 946684800, 253402214400]


def test_kcore_and_short_user_filters_keep_times_aligned(tmp_path):
    # item z is rare (dropped by the 2-core), user 3 is short: each kept item keeps its own time
    rows = [(1, "x", 1), (1, "z", 2), (1, "y", 3), (1, "x", 4), (2, "y", 10), (2, "x", 11), (2, "y", 12),
            (3, "x", 20), (3, "y", 21)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "i.csv", index=False)
    data = load_dataset(DataConfig(name="custom", reader="table", path=str(tmp_path / "i.csv"), kcore=2))
    key = {i + 1: r["item_key"] for i, r in enumerate(data.items)}
    got = {int(u): [(key[int(i)], int(t)) for i, t in zip(s, ts)]
           for u, s, ts in zip(data.users, data.sequences, data.times)}
    assert got == {1: [("x", 1), ("y", 3), ("x", 4)], 2: [("y", 10), ("x", 11), ("y", 12)]}
    assert data.skipped["users_shorter_than_3"] == 1


@pytest.mark.parametrize("times,message", [
    ([[1, 2, 3], [1, 2]], r"user 2 has 3 items but 2 timestamps"),
    ([[1, 2, 3], [5, 4, 6]], r"user 2's timestamps go back in time at interaction 2 \(5 then 4\)"),
])
def test_misaligned_or_unordered_times_are_refused(times, message):
    with pytest.raises(ValueError, match=message):
        timed_data([[1, 2, 3], [3, 2, 1]], times)


def test_examples_carry_the_times_of_their_items_and_target():
    data = timed_data([[1, 2, 3, 4, 5, 6], [6, 5, 4]], [[10, 20, 30, 40, 50, 60], [7, 8, 9]])
    split = Split(data, max_history=3, times_for="model.hstu.time_bias")
    ex = EvalDataset(split, "test")[0]
    assert ex["history"].tolist() == [3, 4, 5] and ex["history_times"].tolist() == [30, 40, 50]
    assert ex["target"] == 6 and ex["target_time"] == 60
    ex = EvalDataset(split, "valid")[1]
    assert ex["history"].tolist() == [0, 0, 6] and ex["history_times"].tolist() == [0, 0, 7] and ex["target_time"] == 8
    ex = SequenceDataset(split)[0]  # training items 1..4: inputs 1..3 (padded to 3), labels 2..4
    assert ex["input"].tolist() == [1, 2, 3] and ex["input_times"].tolist() == [10, 20, 30]
    assert ex["labels"].tolist() == [2, 3, 4] and ex["label_times"].tolist() == [20, 30, 40]
    ex = NextItemDataset(split)[1]  # user 0, prefix of 2
    assert ex["history"].tolist() == [0, 1, 2] and ex["history_times"].tolist() == [0, 10, 20]
    assert ex["target"] == 3 and ex["target_time"] == 30
    ex = UserSequenceDataset(split)[0]
    assert ex["history_times"].tolist() == [10, 20, 30] and ex["target_time"] == 40
    assert "history_times" not in EvalDataset(Split(data, max_history=3), "test")[0]  # only when a model reads them
    hstu = Split(data, max_history=3, train_on_valid=True, times_for="model.hstu.time_bias")  # through the valid item
    ex = SequenceDataset(hstu)[0]
    assert ex["labels"].tolist() == [3, 4, 5] and ex["label_times"].tolist() == [30, 40, 50]
    assert ex["input_times"].tolist() == [20, 30, 40]


def test_a_model_that_reads_times_refuses_data_without_them():
    data = InteractionData("hand", [np.array([1, 2, 3])], np.array([1]), [{}, {}, {}], source="x/sequences.txt")
    with pytest.raises(ValueError, match=r"model.hstu.time_bias=true reads the time of each interaction, but "
                                         r"x/sequences.txt has no timestamps"):
        Split(data, max_history=3, times_for="model.hstu.time_bias")


def test_stats_name_the_time_span_or_none():
    data = timed_data([[1, 2, 3]], [[978300760, 978300800, 1046454590]])
    assert data.stats()["timestamps"] == "2000-12-31 .. 2003-02-28 (UTC, read as epoch seconds)"
    data.times = [np.array([-5, 0, 7])]
    assert data.stats()["timestamps"] == "-5 .. 7"
    data.times = None
    assert data.stats()["timestamps"] == "none"
