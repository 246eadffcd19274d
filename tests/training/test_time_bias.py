"""HSTU's time bias end to end: a user table with timestamps -> split with times -> training -> evaluation ->
``genrec eval`` and ``predict`` of the saved run. On data whose next item is decided by the time gap before it, the
model with the bias ranks the target first, the model without it cannot tell the two candidates apart."""
import numpy as np
import pandas as pd
import pytest

from genrec.config import load_config
from genrec.predict import load_run, predict
from genrec.training import loop


def write_gap_shop(path, users=300, items=20, length=12, seed=0):
    """After item i: item i + 1 when the next visit comes within a minute, item i + 7 when it comes a month later
    (mod ``items``); visits are short or long at random, so the items alone predict the next one half the time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        item, t = int(rng.integers(items)), 10**9 + int(rng.integers(10**6))
        rows.append((u, item + 1, t))
        for _ in range(length - 1):
            soon = rng.random() < 0.5
            t += 30 if soon else 30 * 86400
            item = (item + (1 if soon else 7)) % items
            rows.append((u, item + 1, t))
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)


def _cfg(tmp_path, time_bias):
    return load_config([], [
        "data.name=custom", "data.reader=table", f"data.path={tmp_path}/gaps.csv", "data.max_history=8",
        "model.kind=hstu", "model.hstu.dim=16", "model.hstu.dqk=8", "model.hstu.dv=8", "model.hstu.dropout=0.0",
        "model.hstu.loss=ce", f"model.hstu.time_bias={str(time_bias).lower()}", "model.hstu.time_buckets=64",
        "train.epochs=25", "train.batch_size=32", "train.lr=0.01", "train.eval_every=25", "train.threads=1",
        "train.progress=false", "train.trackers=[]", "train.monitor=recall@1", "eval.ks=[1,5]",
        f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results", f"name=gaps-{time_bias}",
    ])


@pytest.mark.slow
def test_time_bias_learns_what_the_gap_decides_and_reloads(tmp_path):
    write_gap_shop(tmp_path / "gaps.csv")
    with_bias = loop.train(_cfg(tmp_path, True))
    without = loop.train(_cfg(tmp_path, False))
    assert with_bias["metrics"]["recall@1"] > 0.9  # the gap names the target
    assert without["metrics"]["recall@1"] < 0.7  # ~0.5: two equally likely successors
    assert without["metrics"]["recall@5"] > 0.9  # ... which it has learned
    # the saved run reloads with its time bias: genrec eval gives the record's numbers, predict ranks the same way
    run_dir = f"{tmp_path}/runs/gaps-True"
    again = loop.evaluate_run(run_dir, [])
    assert again["metrics"] == pytest.approx(with_bias["metrics"])
    run = load_run(run_dir)
    frame = predict(run, k=1)
    assert (frame["item"] == frame["target"]).mean() == pytest.approx(with_bias["metrics"]["recall@1"])
    # recommend() by hand: the request time decides; times that do not match the history are refused
    data = run.data
    hist, times = data.sequences[0][:-1], data.times[0][:-1]
    shop_item = [int(row["item_key"]) - 1 for row in data.items]  # row ids are renumbered by first appearance
    soon, later = (shop_item[run.recommend([hist], k=1, times=[times], at=[int(times[-1]) + gap])[0].item() - 1]
                   for gap in (30, 30 * 86400))
    last = shop_item[int(hist[-1]) - 1]
    assert (soon, later) == ((last + 1) % 20, (last + 7) % 20)
    with pytest.raises(ValueError, match="times= needs one timestamp per history item"):
        run.recommend([hist], k=1, times=[times[1:]], at=[0])
    with pytest.raises(ValueError, match=r"model.hstu.time_bias=true: recommend\(\) needs times="):
        run.recommend([hist], k=1)
    # the run's fingerprint covers the timestamps it reads; a run that reads none ignores them
    frame = pd.read_csv(tmp_path / "gaps.csv")
    frame["timestamp"] += (frame["user_id"] == 0) * 5  # user 0's visits, 5 s later each: same order
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(ValueError, match="the interactions' timestamps changed"):
        load_run(run_dir)
    load_run(f"{tmp_path}/runs/gaps-False")
