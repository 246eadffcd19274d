"""scripts/valid_vs_test.py: the ratio is read at the tested (best) epoch, and unfinished or untested records are
left out."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("valid_vs_test", os.path.join(REPO, "scripts", "valid_vs_test.py"))
valid_vs_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(valid_vs_test)


def _record(path, best_epoch=2, split="test", finished=True, test=0.03):
    history = [{"epoch": 1, "ndcg@10": 0.05, "users": 100}, {"epoch": 2, "ndcg@10": 0.04, "users": 100},
               {"epoch": 3, "ndcg@10": 0.02, "users": 100}]
    path.write_text(json.dumps({"split": split, "model": "m", "best_epoch": best_epoch, "training_finished": finished,
                                "validation_history": history, "metrics": {"ndcg@10": test, "users": 200}}))


def test_ratio_at_the_tested_epoch_and_only_finished_test_records(tmp_path):
    runs = tmp_path / "results" / "runs" / "d"
    runs.mkdir(parents=True)
    _record(runs / "a.json")
    _record(runs / "b.json", split="valid")
    _record(runs / "c.json", finished=False)
    _record(runs / "e.json", best_epoch=9)  # no validation entry of the tested epoch
    (row,) = valid_vs_test.rows("d", "ndcg@10", root=str(tmp_path))
    assert row["record"] == os.path.join("results", "runs", "d", "a.json")
    assert (row["valid_ndcg@10"], row["test_ndcg@10"], row["valid_users"], row["test_users"]) == (0.04, 0.03, 100, 200)
    assert row["ratio"] == pytest.approx(0.75)
