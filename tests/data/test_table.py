"""Plain-table reader for a user's own data: CSV / TSV / Parquet agree, items file, clear errors."""
import json

import numpy as np
import pandas as pd
import pytest

from genrec.config import DataConfig
from genrec.data import load_dataset
from genrec.data.table import parse_categories, read_table

INTER = pd.DataFrame({
    "user_id": [2, 1, 1, 2, 1, 3, 3, 3],
    "item_id": ["a", "b", "c", "a", "b", "c", "a", "d"],
    "timestamp": [5, 3, 3, 1, 2, 9, 8, 7],
})
# user 1: b(2) b(3) c(3) -> ties keep file order, the repeat is kept; user 2: a(1) a(5); user 3: d a c
EXPECT_SEQS = [[1, 1, 2], [3, 3], [4, 3, 2]]  # b=1 c=2 a=3 d=4 by first appearance


def as_tuple(data):
    return data.users.tolist(), [s.tolist() for s in data.sequences], data.items, data.skipped


def test_csv_tsv_parquet_agree(tmp_path):
    INTER.to_csv(tmp_path / "i.csv", index=False)
    INTER.to_csv(tmp_path / "i.tsv", index=False, sep="\t")
    INTER.to_parquet(tmp_path / "i.parquet")
    results = [as_tuple(read_table(str(tmp_path / f), "t")) for f in ("i.csv", "i.tsv", "i.parquet")]
    assert results[0] == results[1] == results[2]
    users, seqs, items, skipped = results[0]
    assert users == [1, 2, 3] and seqs == EXPECT_SEQS and skipped == {}
    assert [r["item_key"] for r in items] == ["b", "c", "a", "d"]


def test_folder_with_item_table(tmp_path):
    INTER.to_parquet(tmp_path / "interactions.parquet")
    pd.DataFrame({
        "item_id": ["a", "b", "c", "z"],
        "title": ["Alpha", "Beta", None, "unused"],
        "categories": ["Beauty|Nails", json.dumps(["Hair", "Shampoo"]), None, "x"],
        "price": [1.5, None, 3, 4],
    }).to_csv(tmp_path / "items.csv", index=False)
    data = read_table(str(tmp_path), "t")
    b, c, a, d = data.items
    assert a == {"item_key": "a", "title": "Alpha", "categories": [["Beauty", "Nails"]], "price": 1.5}
    assert b["categories"] == [["Hair", "Shampoo"]] and b["price"] is None and c["title"] is None
    assert d == {"item_key": "d", "title": None, "categories": None, "price": None}
    assert data.skipped == {"items_without_metadata": 1, "item_rows_without_interactions": 1}


def test_items_jsonl_and_parquet_items_agree(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        INTER.to_csv(folder / "interactions.csv", index=False)
    rows = [{"item_id": i, "title": f"T{i}", "categories": [["X", "Y"]]} for i in "abcd"]
    (a / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame({"item_id": list("abcd"), "title": [f"T{i}" for i in "abcd"], "categories": ["X|Y"] * 4}).to_parquet(
        b / "items.parquet")
    assert as_tuple(read_table(str(a))) == as_tuple(read_table(str(b)))


def test_parse_categories():
    assert parse_categories("a|b|c") == [["a", "b", "c"]]
    assert parse_categories('["a", "b"]') == [["a", "b"]]
    assert parse_categories('[["a", "b"], ["c"]]') == [["a", "b"], ["c"]]
    assert parse_categories(float("nan")) is None and parse_categories("") is None


def test_string_ids_and_iso_timestamps(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\nbob,7,2024-03-01\nann,7,2024-01-02\n"
                                    "bob,8,2024-01-05\nann,9,2023-12-31\n")
    data = read_table(str(tmp_path / "i.csv"))
    assert data.users.tolist() == ["ann", "bob"]
    assert [[data.items[i - 1]["item_key"] for i in s] for s in data.sequences] == [["9", "7"], ["8", "7"]]


def test_missing_column_names_file_and_columns(tmp_path):
    INTER.rename(columns={"timestamp": "time"}).to_csv(tmp_path / "i.csv", index=False)
    found = r"found \['user_id', 'item_id', 'time'\]"
    with pytest.raises(ValueError, match=r"i.csv: missing column\(s\) \['timestamp'\]; " + found):
        read_table(str(tmp_path / "i.csv"))
    pd.DataFrame({"id": [1], "title": ["x"]}).to_csv(tmp_path / "items.csv", index=False)
    INTER.to_csv(tmp_path / "interactions.csv", index=False)
    with pytest.raises(ValueError, match=r"items.csv: the item table needs an 'item_id' column; found \['id', 'title'"):
        read_table(str(tmp_path))


def test_nan_ids_name_the_row(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n1,a,1\n,b,2\n")
    with pytest.raises(ValueError, match=r"row 2 .*has no user_id"):
        read_table(str(tmp_path / "i.csv"))
    frame = INTER.astype({"item_id": object})
    frame.loc[3, "item_id"] = None
    frame.to_parquet(tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"row 4 .*has no item_id"):
        read_table(str(tmp_path / "i.parquet"))
    frame = INTER.astype({"timestamp": float})
    frame.loc[0, "timestamp"] = np.nan
    frame.to_parquet(tmp_path / "j.parquet")
    with pytest.raises(ValueError, match=r"row 1 .*has no timestamp"):
        read_table(str(tmp_path / "j.parquet"))


def test_missing_path_and_wrong_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.csv")):
        read_table(str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="no interactions file in"):
        read_table(str(tmp_path))
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="reads .csv, .tsv, .parquet files"):
        read_table(str(tmp_path / "x.txt"))
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n")
    with pytest.raises(ValueError, match="e.csv: no rows"):
        read_table(str(tmp_path / "e.csv"))


def test_through_load_dataset(tmp_path):
    INTER.to_csv(tmp_path / "interactions.csv", index=False)
    data = load_dataset(DataConfig(name="custom", reader="table", path=str(tmp_path)))
    assert data.users.tolist() == [1, 3] and data.skipped == {"users_shorter_than_3": 1}


@pytest.mark.parametrize("rows,message", [
    ("u,a,100\nu,b,2014-03-05\n", r"mixes numbers and dates: data row 2 has '2014-03-05'"),
    ("u,a,2014-03-05\nu,b,03/06/2014\n", r"data row 2 has timestamp '03/06/2014', which is not a number or an ISO"),
    ("u,a,2014-03-05\nu,b,soon\n", r"data row 2 has timestamp 'soon'"),
])
def test_timestamps_of_mixed_or_ambiguous_kinds_are_refused_by_row(tmp_path, rows, message):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n" + rows)
    with pytest.raises(ValueError, match=message):
        read_table(str(tmp_path / "i.csv"))


def test_numeric_text_timestamps_sort_as_numbers_and_iso_dates_as_instants():
    from genrec.data.table import parse_timestamps

    # as text "100" < "9"; as numbers 9 < 10 < 100 (a parquet / JSON column of numeric strings)
    keys = parse_timestamps(pd.Series(["10", "9", "100"], dtype=object), "x.parquet")
    assert list(np.argsort(keys, kind="stable")) == [1, 0, 2]
    keys = parse_timestamps(pd.Series(["2014-03-05T10:00:00Z", "2014-03-05T09:00:00+00:00", "2014-03-04"]), "x")
    assert list(np.argsort(keys, kind="stable")) == [2, 1, 0]
