"""LC-Rec / LETTER Amazon 2018 reader: the real Scientific counts and clear errors on bad files."""
import json

import pytest

from genrec.config import DataConfig
from genrec.data import load_dataset
from genrec.data.amazon import read_lcrec, split_lcrec_categories


def build(folder, inter, items, name="Toy"):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.inter.json").write_text(json.dumps(inter))
    (folder / f"{name}.item.json").write_text(json.dumps(items))
    return str(folder)


ITEMS = {str(i): {"title": f"t{i}", "description": "", "brand": "b", "categories": "A,B, C,D"} for i in range(3)}


def test_scientific_counts(data_root):
    data = load_dataset(DataConfig(name="scientific", root=data_root))
    assert (data.num_users, data.num_items, data.num_interactions) == (8_317, 4_344, 58_492)
    assert data.sequences[0].tolist() == list(range(1, 10))  # user "0": items 0..8 -> 1..9
    assert data.items[0]["title"].startswith("SUPCO SPP6")
    assert data.items[0]["categories"] == [["Industrial & Scientific", "Industrial Electrical", "Passive Components",
                                            "Capacitors"]]


def test_ids_shift_by_one_and_categories_split(tmp_path):
    data = read_lcrec(build(tmp_path / "d", {"7": [2, 0, 1], "3": [1, 2], "9": []}, ITEMS), "toy")
    assert data.users.tolist() == [7, 3]  # file order
    assert [s.tolist() for s in data.sequences] == [[3, 1, 2], [2, 3]]
    assert data.items[0]["categories"] == [["A", "B, C", "D"]] and data.items[0]["description"] is None
    assert data.skipped == {"empty_sequences": 1}


def test_split_categories():
    assert split_lcrec_categories("Industrial & Scientific,Tapes, Adhesives & Sealants,Tapes") == [
        ["Industrial & Scientific", "Tapes, Adhesives & Sealants", "Tapes"]]
    assert split_lcrec_categories("") is None and split_lcrec_categories(None) is None


def test_item_id_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"user '1' has item id 3, but .*Toy.item.json has items 0..2"):
        read_lcrec(build(tmp_path / "d", {"0": [0, 1], "1": [2, 3]}, ITEMS))


def test_non_contiguous_item_file(tmp_path):
    items = {k: v for k, v in ITEMS.items() if k != "1"}
    with pytest.raises(ValueError, match=r"item ids must be exactly 0..1; missing e.g. \[1\]"):
        read_lcrec(build(tmp_path / "d", {"0": [0]}, items))


def test_bad_json_and_bad_sequences(tmp_path):
    folder = tmp_path / "d"
    build(folder, {"0": [0, "x"]}, ITEMS)
    with pytest.raises(ValueError, match="user '0': expected a list of integer item ids"):
        read_lcrec(str(folder))
    (folder / "Toy.inter.json").write_text('{"0": [0, 1')
    with pytest.raises(ValueError, match="Toy.inter.json: invalid JSON"):
        read_lcrec(str(folder))


def test_missing_files_name_the_path(tmp_path):
    folder = tmp_path / "d"
    build(folder, {"0": [0]}, ITEMS)
    (folder / "Toy.item.json").unlink()
    with pytest.raises(FileNotFoundError, match=str(folder / "Toy.item.json")):
        read_lcrec(str(folder))
    with pytest.raises(FileNotFoundError, match=r"no <Name>.inter.json in"):
        read_lcrec(str(tmp_path))
    build(folder, {"0": [0]}, ITEMS, name="Other")
    (folder / "Toy.inter.json").unlink()
    build(folder, {"0": [0]}, ITEMS, name="Third")
    with pytest.raises(ValueError, match="several <Name>.inter.json files"):
        read_lcrec(str(folder))
