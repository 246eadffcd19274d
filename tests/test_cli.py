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
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        main(["data", "stats", "data.name=beauty", f"data.root={tmp_path}"])
