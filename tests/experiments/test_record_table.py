"""experiments/record_table.py: where a `genrec eval` cell takes its training facts from."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("record_table", os.path.join(REPO, "experiments", "record_table.py"))
record_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_table)

METRICS = {"recall@10": 0.25, "ndcg@10": 0.125, "recall@10_se": 0.01}


def _write(path, record):
    path.write_text(json.dumps(record))
    return str(path)


def _table(cell):
    return {"metrics": ["recall@10", "ndcg@10"], "protocols": {"all_items": "every item"},
            "rows": {"M": {"all_items": cell}}}


def _eval_record(**extra):
    return {"protocol": "all_items", "metrics": METRICS, "users_evaluated": 100, "evaluated_run": "m__s0-abc",
            "training_finished": True, "device": "GPU: the tester", **extra}


def test_an_eval_cell_takes_training_facts_from_the_trained_runs_record(tmp_path):
    _write(tmp_path / "m__s0-abc.json", {"num_params": 10, "train_seconds": 5.0, "device": "CPU: the trainer"})
    cell = _write(tmp_path / "m__s0-abc__eval-1.json",
                  _eval_record(trained={"num_params": 99, "train_seconds": 99.0, "devices": ["other"]}))
    (row,) = record_table.load_rows(_table(cell))
    assert (row["params"], row["train_seconds"], row["device"]) == (10, 5.0, "CPU: the trainer")
    assert row["test_device"] == "GPU: the tester"  # the metrics' own device, not the trainer's
    assert (row["recall@10"], row["recall@10_se"], row["users"]) == (0.25, 0.01, 100)


def test_without_that_record_the_facts_come_from_the_eval_records_run_folder_block(tmp_path):
    cell = _write(tmp_path / "m__s0-abc__eval-1.json",
                  _eval_record(trained={"num_params": 99, "train_seconds": 7.5, "devices": ["CPU: a", "CPU: b"]}))
    (row,) = record_table.load_rows(_table(cell))
    assert (row["params"], row["train_seconds"], row["device"]) == (99, 7.5, "CPU: a; CPU: b")


def test_an_eval_record_with_no_training_facts_leaves_them_blank(tmp_path):
    (row,) = record_table.load_rows(_table(_write(tmp_path / "e.json", _eval_record())))
    assert (row["params"], row["train_seconds"]) == (None, None)


def test_an_unfinished_evaluated_run_is_refused(tmp_path):
    cell = _write(tmp_path / "e.json", _eval_record(training_finished=False))
    with pytest.raises(ValueError, match="training_finished=false"):
        record_table.load_rows(_table(cell))


def test_the_devices_line_names_both_the_trainer_and_the_tester(tmp_path, monkeypatch):
    _write(tmp_path / "m__s0-abc.json", {"num_params": 10, "train_seconds": 5.0, "device": "CPU: the trainer"})
    cell = _write(tmp_path / "m__s0-abc__eval-1.json", _eval_record())
    monkeypatch.setattr(record_table, "_plot", lambda *a: None)
    table = {**_table(cell), "name": "t", "title": "T"}
    record_table.write(table, record_table.load_rows(table), str(tmp_path), "cmd", 0.0)
    devices = [l for l in (tmp_path / "t.md").read_text().splitlines() if l.startswith("Devices:")]
    assert devices == ["Devices: CPU: the trainer; GPU: the tester"]


def test_a_run_the_user_stopped_is_shown_with_where_it_stopped(tmp_path):
    record = _eval_record(training_finished=False, finished_by_user_at_epoch=78, config={"train": {"epochs": 100}})
    (row,) = record_table.load_rows(_table(_write(tmp_path / "e.json", record)))
    assert row["row"] == "M [stopped by the user at epoch 78 of 100 (train.finish=true)]"
