"""The genrec command: data stats on real Beauty, config errors as exit code 2 with the message."""
import subprocess
import sys

import pytest

from genrec.cli import main


def test_data_stats_beauty_matches_published_counts(data_root, capsys):
    assert main(["data", "stats", "data.name=beauty", f"data.root={data_root}"]) == 0
    out = capsys.readouterr().out
    assert "22,363" in out and "12,101" in out and "198,502" in out


def test_bad_override_exits_2_with_message(capsys):
    assert main(["config", "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.lrr'" in err and "Did you mean 'lr'" in err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "genrec", "config", "data.name=sports"], capture_output=True,
                         text=True, check=True).stdout
    assert "name: sports" in out


def test_missing_data_names_path(tmp_path, capsys):
    assert main(["data", "stats", "data.name=beauty", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "--debug" in err[0]  # one line, no traceback
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        main(["--debug", "data", "stats", "data.name=beauty", f"data.root={tmp_path}"])


def test_bad_values_stop_at_load_with_one_line_and_exit_2(capsys):
    assert main(["train", "--config", "configs/tiny.yaml", "train.batch_size=0", "model.attention=flesh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.batch_size=0 must be > 0" in err[0] and "model.attention='flesh'" in err[0]


def test_a_run_stopped_by_a_signal_exits_with_the_signal_code_and_says_how_to_resume(monkeypatch, capsys):
    import signal

    from genrec import training
    from genrec.training.stop import TrainingStopped

    def stopped(cfg):
        raise TrainingStopped(signal.SIGTERM, 7, "runs/r")

    monkeypatch.setattr(training, "train", stopped)
    assert main(["train", "--config", "configs/tiny.yaml"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["genrec: SIGTERM received: checkpoint written at optimiser step 7 in runs/r; "
                   "the same command resumes the run"]


def test_a_reader_that_goes_away_stops_the_command_quietly():
    """``genrec config ... | head -1``: no BrokenPipeError traceback when the pipe's reader has gone."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "genrec", "config", "--config", "configs/tiny.yaml"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")
@pytest.mark.parametrize("malloc", ["heap", "system"])
def test_compute_commands_restart_once_with_heap_malloc(tmp_path, malloc):
    """``genrec train`` re-executes itself with glibc's freed blocks kept in the heap (the record's device says so,
    the command line is the user's); ``GENREC_MALLOC=system`` keeps glibc's defaults."""
    import json
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["GENREC_MALLOC"] = malloc
    subprocess.run([sys.executable, "-m", "genrec", "train", "--config", "configs/tiny.yaml", "train.epochs=1",
                    "eval.max_users=50", f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                    "name=m", "train.trackers=[]"], env=env, capture_output=True, text=True, check=True)
    record = json.load(open(tmp_path / "results" / "runs" / "tiny" / "m.json"))
    assert ("heap malloc" in record["device"]) == (malloc == "heap")
    assert record["command"].startswith("python -m genrec train --config configs/tiny.yaml")
