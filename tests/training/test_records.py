"""The commit a record names, also where the code was copied without its ``.git``."""
from genrec.training import records


def test_git_commit_outside_a_repository_reads_genrec_commit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repository above
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GENREC_COMMIT", raising=False)
    assert records.git_commit() == "unknown"
    monkeypatch.setenv("GENREC_COMMIT", "abc1234")
    assert records.git_commit() == "abc1234"


def test_git_commit_inside_the_repository_ignores_genrec_commit(monkeypatch):
    monkeypatch.setenv("GENREC_COMMIT", "abc1234")
    sha = records.git_commit()
    assert sha != "abc1234" and len(sha.split("-")[0]) == 40
