"""McAuley 2014 raw files: time order (ties keep file order), repeated pairs, iterative k-core, metadata as
Python-literal dicts, items without metadata counted. The files are built here, small enough to check by hand."""
import gzip
import json

import pytest

from genrec.config import DataConfig
from genrec.data import load_dataset
from genrec.data.amazon import read_amazon_raw

# (reviewerID, asin, unixReviewTime) in file order.
REVIEWS = [
    ("U1", "A", 100), ("U1", "B", 100),  # same second: A then B, as in the file
    ("U1", "C", 50), ("U1", "F", 200),
    ("U2", "B", 10), ("U2", "A", 20), ("U2", "A", 30),  # the second (U2, A) is a repeat
    ("U2", "F", 40),
    ("U3", "C", 5), ("U3", "D", 6),  # D is reviewed once
    ("U0", "E", 1),  # a one-review user
]
# 2-core by hand: D and E have one review -> U3 keeps [C], U0 keeps [] -> both removed -> C now has one review (U1)
# -> U1 becomes [A, B, F]. Stable: U1 = [A, B, F], U2 = [B, A, F]. Items numbered by first appearance: A=1 B=2 F=3.
META = [
    "{'asin': 'A', 'title': 'Nail \"Polish\"', 'categories': [['Beauty', 'Nails']], 'price': 4.99, "
    "'salesRank': {'Beauty': 10}, 'imUrl': 'http://x/a.jpg'}",
    json.dumps({"asin": "B", "title": "Shampoo", "brand": "Acme", "description": None}),  # JSON (null): fallback
    "{'asin': 'C', 'title': 'removed by the k-core'}",
    "{'asin': 'A', 'title': 'a second row for A is ignored'}",
]  # no row for F


def review_line(user, asin, t):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0, "reviewText": "ok"})


def build(folder, reviews=REVIEWS, meta=META, gz=True, cat="Beauty"):
    folder.mkdir(exist_ok=True)
    lines = "".join(review_line(*r) + "\n" for r in reviews) if not isinstance(reviews, str) else reviews
    meta_text = "".join(m + "\n" for m in meta)
    if gz:
        with gzip.open(folder / f"reviews_{cat}_5.json.gz", "wt") as f:
            f.write(lines)
        with gzip.open(folder / f"meta_{cat}.json.gz", "wt") as f:
            f.write(meta_text)
    else:
        (folder / f"reviews_{cat}_5.json").write_text(lines)
        (folder / f"meta_{cat}.json").write_text(meta_text)
    return str(folder)


def test_two_core_by_hand(tmp_path):
    data = read_amazon_raw(build(tmp_path / "raw"), "beauty", kcore=2)
    assert data.users.tolist() == ["U1", "U2"]
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3], [2, 1, 3]]
    assert [t.tolist() for t in data.times] == [[100, 100, 200], [10, 20, 40]]  # C (50) gone; A's first review kept
    assert [r["asin"] for r in data.items] == ["A", "B", "F"]
    assert data.skipped == {
        "duplicate_user_item_pairs": 1,
        "users_removed_by_2_core": 2,
        "items_removed_by_2_core": 3,  # C, D, E
        "interactions_removed_by_2_core": 4,
        "duplicate_metadata_rows": 1,  # the second row for A
        "items_without_metadata": 1,  # F
    }


def test_metadata_python_literals_and_missing_rows(tmp_path):
    a, b, f = read_amazon_raw(build(tmp_path / "raw"), kcore=2).items
    assert a["title"] == 'Nail "Polish"' and a["categories"] == [["Beauty", "Nails"]] and a["price"] == 4.99
    assert a["salesRank"] == {"Beauty": 10} and a["brand"] is None
    assert b["title"] == "Shampoo" and b["brand"] == "Acme" and b["description"] is None
    assert f["asin"] == "F" and f["title"] is None and set(f) == set(a)


def test_no_kcore_keeps_everyone_in_sorted_user_order(tmp_path):
    data = read_amazon_raw(build(tmp_path / "raw", gz=False), kcore=0)
    assert data.users.tolist() == ["U0", "U1", "U2", "U3"]
    keys = [r["asin"] for r in data.items]
    seqs = [[keys[i - 1] for i in s] for s in data.sequences]
    assert seqs == [["E"], ["C", "A", "B", "F"], ["B", "A", "F"], ["C", "D"]]
    assert data.skipped == {"duplicate_user_item_pairs": 1, "duplicate_metadata_rows": 1,
                            "items_without_metadata": 3}  # F, D, E


def test_through_load_dataset(tmp_path):
    build(tmp_path / "raw")
    data = load_dataset(DataConfig(name="custom", reader="amazon_raw", path=str(tmp_path / "raw"), kcore=2))
    assert data.num_users == 2 and data.num_items == 3 and data.num_interactions == 6


def test_default_five_core_leaving_nobody_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no user is left after the 5-core filter.*lower kcore"):
        read_amazon_raw(build(tmp_path / "raw"))


def test_malformed_review_line(tmp_path):
    text = review_line("U1", "A", 1) + "\n{not json\n"
    with pytest.raises(ValueError, match=r"reviews_Beauty_5.json.gz:2: expected one JSON object"):
        read_amazon_raw(build(tmp_path / "raw", reviews=text), kcore=0)
    text = json.dumps({"reviewerID": "U1", "asin": "A"}) + "\n"
    with pytest.raises(ValueError, match=r":1: a review needs reviewerID, asin and an integer unixReviewTime"):
        read_amazon_raw(build(tmp_path / "raw2", reviews=text), kcore=0)


def test_malformed_meta_line(tmp_path):
    with pytest.raises(ValueError, match=r"meta_Beauty.json.gz:2: expected one JSON object or Python dict"):
        read_amazon_raw(build(tmp_path / "raw", meta=[META[0], "{'asin': 'B',"]), kcore=2)


def test_missing_files_name_the_path(tmp_path):
    folder = tmp_path / "raw"
    build(folder)
    (folder / "meta_Beauty.json.gz").unlink()
    with pytest.raises(FileNotFoundError, match=str(folder / "meta_Beauty.json.gz")):
        read_amazon_raw(str(folder))
    with pytest.raises(FileNotFoundError, match="no reviews_<Category>"):
        read_amazon_raw(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        read_amazon_raw(str(tmp_path / "nowhere"))
