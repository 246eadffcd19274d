"""Amazon 2014 (S3-Rec / P5 / TIGER) reader: the real Beauty counts and clear errors on bad files."""
import json

import pytest

from genrec.config import DataConfig
from genrec.data import load_dataset
from genrec.data.amazon import read_amazon2014


def write(folder, sequences: str, n_items: int = 3, ids=None):
    folder.mkdir(exist_ok=True)
    (folder / "sequences.txt").write_text(sequences)
    ids = ids or range(1, n_items + 1)
    (folder / "items.jsonl").write_text("".join(json.dumps({"item_id": i, "title": f"t{i}"}) + "\n" for i in ids))
    return str(folder)


def test_beauty_counts(data_root):
    data = load_dataset(DataConfig(name="beauty", root=data_root))
    assert (data.num_users, data.num_items, data.num_interactions) == (22_363, 12_101, 198_502)
    assert data.items[0]["title"] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert data.sequences[0].tolist() == [1, 2, 3, 4, 5] and data.users[0] == 1
    assert data.skipped == {}


def test_reads_small_folder_and_counts_empty_sequences(tmp_path):
    data = read_amazon2014(write(tmp_path / "d", "1 1 2 3\n\n2 3 2\n3\n"), "toy")
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3], [3, 2]]
    assert data.users.tolist() == [1, 2] and data.skipped == {"empty_sequences": 1}


def test_malformed_line_names_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"sequences.txt:2: expected space-separated integers"):
        read_amazon2014(write(tmp_path / "d", "1 1 2 3\n2 3 x\n"))


def test_duplicate_user(tmp_path):
    with pytest.raises(ValueError, match=r"sequences.txt:2: user 1 appears twice"):
        read_amazon2014(write(tmp_path / "d", "1 1 2 3\n1 3 2 1\n"))


def test_non_contiguous_item_ids(tmp_path):
    with pytest.raises(ValueError, match=r"item ids must be exactly 1..3; missing e.g. \[2\]"):
        read_amazon2014(write(tmp_path / "d", "1 1 3 3\n", ids=[1, 3, 4]))


def test_duplicate_item_row(tmp_path):
    with pytest.raises(ValueError, match="item_id 1 appears twice"):
        read_amazon2014(write(tmp_path / "d", "1 1 1 1\n", ids=[1, 1]))


def test_item_id_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"user 2 has item id 4, expected 1..3"):
        read_amazon2014(write(tmp_path / "d", "1 1 2 3\n2 3 4 1\n"))
    with pytest.raises(ValueError, match=r"user 1 has item id 0"):
        read_amazon2014(write(tmp_path / "e", "1 0 2 3\n"))


def test_missing_files_name_the_path(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "sequences.txt").write_text("1 1 2 3\n")
    with pytest.raises(FileNotFoundError, match=str(folder / "items.jsonl")):
        read_amazon2014(str(folder))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "amazon2014" / "beauty")):
        load_dataset(DataConfig(name="beauty", root=str(tmp_path)))


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="Did you mean 'beauty'"):
        load_dataset(DataConfig(name="beuaty"))
    with pytest.raises(ValueError, match="needs data.path"):
        load_dataset(DataConfig(name="custom", reader="amazon2014"))


def test_kcore_keeps_reader_counts_and_drops_stale_item_ids(tmp_path):
    path = write(tmp_path / "d", "1 1 2 3\n2 1 2 3\n3 3 4\n4\n", n_items=4)
    data = load_dataset(DataConfig(name="custom", reader="amazon2014", path=path, kcore=2))
    assert data.users.tolist() == [1, 2] and [s.tolist() for s in data.sequences] == [[1, 2, 3], [1, 2, 3]]
    assert data.skipped == {"empty_sequences": 1, "users_removed_by_2_core": 1, "items_removed_by_2_core": 1}
    assert [(r["item_key"], r["title"], "item_id" in r) for r in data.items] == [
        ("1", "t1", False), ("2", "t2", False), ("3", "t3", False)]
