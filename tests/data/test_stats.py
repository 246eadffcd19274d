"""format_stats: an aligned table of the dataset figures."""
import re

from genrec.data.stats import format_stats
from genrec.data.tiny import make_tiny


def test_format_stats_aligned_table():
    stats = make_tiny().stats()
    stats["skipped"] = {"users_shorter_than_3": 2, "empty_sequences": 1}
    text = format_stats(stats)
    lines = text.splitlines()
    assert lines[0].split() == ["dataset", "tiny"] and lines[1].split() == ["users", "600"]
    assert re.search(r"^interactions +\d", text, re.M)
    assert re.search(r"^sequence length +mean [\d.]+, .*min 5", text, re.M)
    start = len("items with interactions") + 2  # the longest label, then two spaces
    assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines)  # one value column
    assert lines[-2].endswith("empty sequences: 1") and lines[-1].endswith("users shorter than 3: 2")


def test_format_stats_thousands_and_unknown_keys():
    text = format_stats({"users": 22363, "density": 0.000734, "note": "x", "skipped": {}})
    assert text.splitlines() == ["users    22,363", "density  0.0734%", "skipped  none", "note     x"]
