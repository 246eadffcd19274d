"""Editing the data under a run never resumes it: the run stops, naming what changed, and its record stays."""
import json

import numpy as np
import pytest

from genrec.config import load_config
from genrec.training import loop


def _write_table(path, seed):
    rng = np.random.default_rng(seed)
    rows = ["user_id,item_id,timestamp"]
    for u in range(60):
        for t, item in enumerate(rng.choice(30, size=6, replace=False)):
            rows.append(f"u{u},i{item},{1000 + t}")
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_changed_data_stops_resume_and_eval_and_keeps_the_record(tmp_path):
    table = tmp_path / "events.csv"
    _write_table(table, 0)

    def cfg(*o):
        return load_config(["configs/tiny.yaml"], [
            "data.name=custom", "data.reader=table", f"data.path={table}", f"output_dir={tmp_path}/runs",
            f"results_dir={tmp_path}/results", "train.progress=false", "train.epochs=1", "name=r", *o])

    first = loop.train(cfg())
    assert first["inputs"]["data"] and first["inputs"]["data_source"]
    before = open(first["path"]).read()
    _write_table(table, 1)  # same shape, other interactions
    with pytest.raises(ValueError, match=r"trained on other inputs: the data .*events.csv.* changed"):
        loop.train(cfg())
    with pytest.raises(ValueError, match="trained on other inputs"):
        loop.evaluate_run(f"{tmp_path}/runs/r", [])
    assert open(first["path"]).read() == before  # the old record is untouched
    _write_table(table, 0)  # restored: resumes (only re-evaluates) as before
    again = loop.train(cfg())
    assert again["metrics"] == first["metrics"]
    assert json.load(open(again["path"]))["inputs"] == first["inputs"]
