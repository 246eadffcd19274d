"""experiments/run_table.py: dry-run commands, skip-if-record-exists, a crashed cell, mean ± s.e., missing data."""
import importlib.util
import json
import math
import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("run_table", os.path.join(REPO, "experiments", "run_table.py"))
run_table = importlib.util.module_from_spec(_spec)
sys.modules["run_table"] = run_table  # dataclasses look their module up by name
_spec.loader.exec_module(run_table)

TABLE = """
name: fake
title: A fake table
protocol: tiny synthetic data
seeds: [0, 1, 2]
metrics: [recall@10, ndcg@10]
launcher: python
overrides: [train.epochs=1, train.progress=false]
cells:
  Small: [configs/tiny.yaml]
  Wide: {configs: [configs/tiny.yaml], overrides: [model.sasrec.hidden=48], published: Paper wide}
  Broken: {configs: [configs/tiny.yaml], overrides: [model.sasrec.hidden=40]}
published:
  source: Someone et al., Table 9
  rows:
    Paper wide: {recall@10: 0.5, ndcg@10: 0.25}
    Other method: {recall@10: 0.1, ndcg@10: 0.05}
"""


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tmp_path / "fake.yaml"
    path.write_text(TABLE)
    return str(path)


def fake_launcher(jobs, values, fail=("Broken",)):
    """A launcher that writes the record a training run would write (metrics from ``values``) or crashes."""
    by_argv = {tuple(j.argv): j for j in jobs}
    calls = []

    def launch(argv, log):
        job = by_argv[tuple(argv)]
        calls.append((job.cell.label, job.seed))
        os.makedirs(os.path.dirname(log), exist_ok=True)
        if job.cell.label in fail:
            with open(log, "w") as f:
                f.write("Traceback: boom\n")
            return 1
        os.makedirs(os.path.dirname(job.record), exist_ok=True)
        with open(job.record, "w") as f:
            json.dump({"metrics": values[(job.cell.label, job.seed)], "user_subset": None, "users_evaluated": 20}, f)
        return 0

    return launch, calls


def test_run_table_dry_run_prints_every_command(table, tmp_path, capsys):
    assert run_table.main([table, "--dry-run", "--results-dir", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    cmds = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(cmds) == 9  # 3 cells x 3 seeds
    assert cmds[0] == (f"python -m genrec train --config configs/tiny.yaml train.epochs=1 train.progress=false "
                       f"results_dir={tmp_path / 'res'} seed=0")
    assert "model.sasrec.hidden=48" in cmds[3] and cmds[3].endswith("seed=0")


def test_smoke_mode_runs_every_cell_once_briefly_in_its_own_folders(table, capsys):
    assert run_table.main([table, "--dry-run", "--smoke"]) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(cmds) == 3  # every cell, one seed
    for cmd in cmds:
        assert "train.max_steps=20" in cmd and "eval.max_users=100" in cmd and "eval.valid_max_users=100" in cmd
        assert "results_dir=smoke/results" in cmd and "output_dir=smoke/runs" in cmd and cmd.endswith("seed=0")


def test_run_table_dry_run_accelerate_launcher(table, capsys):
    args = [table, "--dry-run", "--launcher", "accelerate", "--accelerate-config", "configs/accelerate/x.yaml",
            "--cells", "Small", "--seeds", "4"]
    assert run_table.main(args) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert cmds == ["accelerate launch --config_file configs/accelerate/x.yaml -m genrec train --config "
                    "configs/tiny.yaml train.epochs=1 train.progress=false seed=4"]


def test_run_table_skips_existing_records_and_survives_a_crash(table, tmp_path):
    t = run_table.load_table(table)
    jobs = run_table.plan(t, results_dir=str(tmp_path / "res"), output_dir=str(tmp_path / "runs"))
    assert len({j.name for j in jobs}) == 9  # seeds and overrides give distinct run names
    values = {(c, s): {"recall@10": 0.1 * (s + 1), "ndcg@10": 0.05} for c in ("Small", "Wide") for s in range(3)}
    launch, calls = fake_launcher(jobs, values)
    run_table.execute(jobs, launch=launch, echo=lambda s: None)
    assert len(calls) == 9
    assert [j.status for j in jobs] == ["ran"] * 6 + ["failed"] * 3
    assert all(j.returncode == 1 and os.path.isfile(j.log) for j in jobs[6:])

    # A second invocation launches only the failed cell; records found by run name are skipped.
    jobs = run_table.plan(t, results_dir=str(tmp_path / "res"), output_dir=str(tmp_path / "runs"))
    launch, calls = fake_launcher(jobs, values)
    run_table.execute(jobs, launch=launch, echo=lambda s: None)
    assert calls == [("Broken", 0), ("Broken", 1), ("Broken", 2)]
    assert [j.status for j in jobs[:6]] == ["done"] * 6

    paths = run_table.write_outputs(t, jobs, str(tmp_path / "tables"), t0=0.0)
    md = open(paths["md"]).read()
    assert "| Broken | ours, failed seeds [0, 1, 2] | 0 | — | — |" in md
    assert "Traceback" not in md and "broken__s0.log" in md
    assert os.path.isfile(paths["csv"]) and os.path.isfile(paths["png"])
    record = json.load(open(paths["json"]))
    assert {"command", "git_commit", "device", "date", "wall_seconds"} <= set(record)


def test_run_table_mean_and_standard_error_exact(table, tmp_path):
    t = run_table.load_table(table)
    jobs = run_table.plan(t, cells=["Small", "Wide"], results_dir=str(tmp_path / "res"))
    recalls = {0: 0.1, 1: 0.2, 2: 0.4}
    values = {(c, s): {"recall@10": recalls[s], "ndcg@10": 0.05} for c in ("Small", "Wide") for s in range(3)}
    launch, _ = fake_launcher(jobs, values)
    run_table.execute(jobs, launch=launch, echo=lambda s: None)
    rows = run_table.summarize(t, jobs)
    small = rows[0]
    mean = 0.7 / 3
    se = math.sqrt(sum((v - mean) ** 2 for v in recalls.values()) / 2) / math.sqrt(3)
    assert small["n"] == 3 and small["recall@10"] == pytest.approx(mean) and small["recall@10_se"] == pytest.approx(se)
    assert small["ndcg@10_se"] == pytest.approx(0.0)
    assert run_table.mean_se([0.3]) == (0.3, None)
    # The published row sits right under the cell it names; rows without a cell come last, labelled.
    assert rows[1]["cell"] == "Wide" and rows[2]["published_row"] == "Paper wide" and rows[2]["recall@10"] == 0.5
    assert rows[-1]["published_row"] == "Other method"
    md = run_table.to_markdown(t, rows)
    assert f"| Small | ours | 3 | {mean:.4f} ± {se:.4f} | 0.0500 ± 0.0000 |" in md
    assert "| Wide | published: Someone et al., Table 9 (Paper wide) | — | 0.5000 | 0.2500 |" in md


def test_run_table_missing_data_fails_up_front(table, tmp_path, capsys):
    args = [table, "--results-dir", str(tmp_path / "res"), "--output-dir", str(tmp_path / "runs"),
            "-o", "data.name=beauty", "-o", f"data.root={tmp_path / 'nowhere'}"]
    assert run_table.main(args) == 2
    err = capsys.readouterr().err
    assert "needs data that is not on this machine: beauty" in err and str(tmp_path / "nowhere") in err
    assert not os.path.exists(tmp_path / "runs")  # nothing was launched


def test_run_table_bad_table_files(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cells:\n  A: [configs/nope.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"cell 'A'.*configs/nope.yaml"):
        run_table.load_table(str(bad))
    bad.write_text("cels:\n  A: [configs/tiny.yaml]\n")
    with pytest.raises(ValueError, match=r"unknown keys \['cels'\]"):
        run_table.load_table(str(bad))
    with pytest.raises(FileNotFoundError, match="no table 'nope'"):
        run_table.load_table("nope")


@pytest.mark.slow
def test_run_table_end_to_end_one_epoch_sasrec(tmp_path, monkeypatch):
    """A real subprocess: one epoch of SASRec on the embedded tiny data, one seed (~20 s on 2 loaded cores)."""
    monkeypatch.chdir(REPO)
    path = tmp_path / "e2e.yaml"
    path.write_text("seeds: [0]\noverrides: [train.epochs=1, train.progress=false, train.threads=1]\n"
                    "cells:\n  SASRec: [configs/tiny.yaml]\n")
    args = [str(path), "--results-dir", str(tmp_path / "res"), "--output-dir", str(tmp_path / "runs")]
    assert run_table.main(args) == 0
    md = open(tmp_path / "res" / "tables" / "e2e.md").read()
    assert "| SASRec | ours | 1 | " in md


def test_run_table_missing_accelerate_config_fails_up_front(table, tmp_path, capsys):
    args = [table, "--launcher", "accelerate", "--accelerate-config", str(tmp_path / "none.yaml"),
            "--output-dir", str(tmp_path / "runs")]
    assert run_table.main(args) == 2
    assert f"accelerate config {tmp_path / 'none.yaml'} does not exist" in capsys.readouterr().err
    assert run_table.main([*args, "--dry-run"]) == 0  # the dry run still prints the commands, with a note
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("ndcg_se", [None, 0.0101])  # a record from before NDCG had one, and one with it
def test_one_seed_rows_show_the_records_standard_errors(table, tmp_path, ndcg_se):
    t = run_table.load_table(table)
    jobs = run_table.plan(t, cells=["Small"], seeds=[0], results_dir=str(tmp_path / "res"))
    values = {("Small", 0): {"recall@10": 0.1, "ndcg@10": 0.05, "recall@10_se": 0.0212,
                             **({"ndcg@10_se": ndcg_se} if ndcg_se else {})}}
    launch, _ = fake_launcher(jobs, values)
    run_table.execute(jobs, launch=launch, echo=lambda s: None)
    rows = run_table.summarize(t, jobs)
    assert rows[0]["n"] == 1 and rows[0]["recall@10_se"] == 0.0212 and rows[0]["ndcg@10_se"] == ndcg_se
    md = run_table.to_markdown(t, rows)
    ndcg = "0.0500" + (" ± 0.0101" if ndcg_se else "")
    assert f"| Small | ours | 1 | 0.1000 ± 0.0212 | {ndcg} |" in md and "recall's binomial" in md


CELL_SCRIPT = """
import pathlib, signal, subprocess, sys, time
mark = pathlib.Path(sys.argv[1])
if sys.argv[2:] == ["launcher"]:  # like `accelerate launch`: starts the training, dies on SIGTERM, passes nothing on
    sys.exit(subprocess.call([sys.executable, __file__, str(mark)]))
def stop(signum, frame):  # what a training run does: checkpoint (a second here), then exit without a record
    time.sleep(1)
    mark.with_suffix(".stopped").write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
mark.with_suffix(".started").write_text("")
time.sleep(60)
"""


@pytest.mark.parametrize("sent,parallel", [("SIGTERM", 2), ("SIGINT", 2), ("SIGHUP", 2), ("SIGTERM", 1)])
def test_a_signal_to_the_runner_reaches_its_running_cells_and_starts_no_more(table, tmp_path, monkeypatch, sent,
                                                                             parallel):
    import signal
    import subprocess
    import threading

    sent = getattr(signal, sent)
    monkeypatch.setattr(run_table, "_stopped_by", [])
    t = run_table.load_table(table)
    jobs = run_table.plan(t, cells=["Small", "Wide"], results_dir=str(tmp_path / "res"), output_dir=str(tmp_path / "runs"))
    script = tmp_path / "cell.py"
    script.write_text(CELL_SCRIPT)
    marks = [tmp_path / f"cell{i}" for i in range(len(jobs))]
    for i, (job, mark) in enumerate(zip(jobs, marks)):
        job.argv = ["python", str(script), str(mark), *(["launcher"] if i % 2 else [])]  # direct and behind a launcher
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].seed, i))  # seed-major: Small s0, Wide s0 first
    running = [marks[i].with_suffix(".started") for i in order[:parallel]]
    assert parallel == 1 or {i % 2 for i in order[:2]} == {0, 1}
    executing = threading.Event()

    def stop_when_running():
        deadline = time.time() + 30
        while not all(p.exists() for p in running) and time.time() < deadline:
            time.sleep(0.05)
        if executing.is_set():  # never signal pytest itself once execute has returned
            os.kill(os.getpid(), sent)

    before = signal.getsignal(sent)
    stopper = threading.Thread(target=stop_when_running, daemon=True)
    executing.set()
    stopper.start()
    try:
        with run_table.passing_signals_to_cells():
            run_table.execute(jobs, parallel=parallel, echo=lambda s: None)
            executing.clear()
        stopper.join()
    finally:
        executing.clear()
        subprocess.run(["pkill", "-f", str(script)], check=False)  # any cell left sleeping (a failing run)
    assert run_table.stop_signal() == sent
    started = [i for i in order if marks[i].with_suffix(".started").exists()]
    assert started == order[:parallel]  # no cell started after the signal
    for i in started:  # each training process got SIGTERM, behind a launcher too, before execute returned
        assert marks[i].with_suffix(".stopped").read_text() == str(int(signal.SIGTERM))
    assert all(j.status == "pending" for j in jobs)  # stopped or never started: the same command resumes them
    assert signal.getsignal(sent) is before  # the runner's handlers are gone afterwards
