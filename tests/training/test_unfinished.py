"""A run killed before it finished is never recorded as an ordinary result."""
import json

import pytest

from genrec.config import load_config
from genrec.training import loop


@pytest.mark.slow
def test_eval_of_a_killed_run_is_flagged_and_a_finished_run_is_not(tmp_path, kill_at_validation):
    def cfg(*o):
        return load_config(["configs/tiny.yaml"], [f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                                                   "train.progress=false", "train.epochs=3", "name=r", *o])

    kill_at_validation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg())
    kill_at_validation.disarm()
    record = loop.evaluate_run(f"{tmp_path}/runs/r", [])
    assert record["training_finished"] is False
    with open(record["path"]) as f:
        assert json.load(f)["training_finished"] is False
    done = loop.train(cfg())  # resumes and finishes
    assert done["training_finished"] is True
    assert loop.evaluate_run(f"{tmp_path}/runs/r", [])["training_finished"] is True
