"""genrec predict: the lists of a trained run re-score to its recorded test metrics, for every ranking kind."""
import pytest

from genrec.cli import main
from genrec.config import load_config
from genrec.predict import load_run, metrics_from_file, predict
from genrec.training import loop

MODELS = {  # tiny runs of a score model, the exact-scoring generative model and a beam-search model
    "sasrec": ["configs/tiny.yaml"],
    "parallel": ["configs/tiny.yaml", "configs/tiny/parallel.yaml"],
    "decoder": ["configs/tiny.yaml", "configs/tiny/decoder.yaml"],
    "tiger": ["configs/tiny.yaml", "configs/tiny/tiger.yaml"],
    "pop": ["configs/tiny.yaml", "configs/pop/beauty.yaml"],
}


def _train(tmp_path, kind, *extra):
    cfg = load_config(MODELS[kind], [f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                                     "train.progress=false", "train.epochs=2", "train.eval_every=1",
                                     "eval.valid_max_users=100", *extra])
    return loop.train(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("kind,extra", [("sasrec", ()), ("parallel", ()), ("decoder", ()), ("tiger", ()),
                                        ("pop", ("data.name=tiny", "eval.ks=[5,10,20]")),
                                        ("sasrec", ("eval.exclude_history=true",)),
                                        ("sasrec", ("eval.exclude_history=true", "eval.exclude_scope=window",
                                                    "data.max_history=4"))])
def test_predicted_lists_rescore_to_the_recorded_metrics(tmp_path, kind, extra):
    record = _train(tmp_path, kind, *extra)
    run = load_run(f"{tmp_path}/runs/{record['run_name']}")
    # k = max(eval.ks): a beam-search model searches max(eval.beam_size, k) beams, as in its evaluation
    frame = predict(run, k=10, split="test")
    assert len(frame) == 600 * 10 and frame["user_row"].nunique() == 600
    assert (frame.groupby("user_row")["item"].nunique() == 10).all()  # distinct items per user
    got = metrics_from_file(frame, [5, 10])
    for key, value in got.items():
        assert value == pytest.approx(record["metrics"][key], abs=1e-9), key


@pytest.mark.slow
def test_predict_command_writes_a_file_and_names_bad_input(tmp_path, capsys):
    record = _train(tmp_path, "sasrec")
    run_dir = f"{tmp_path}/runs/{record['run_name']}"
    run = load_run(run_dir)
    users = tmp_path / "users.txt"
    users.write_text(f"{run.data.users[3]}\n{run.data.users[7]}\n")
    out = tmp_path / "recs.csv"
    assert main(["predict", run_dir, "--k", "5", "--users", str(users), "--split", "next", "--out", str(out)]) == 0
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == 10 and set(frame["user_row"]) == {3, 7} and (frame["target"] == 0).all()
    items, _ = run.recommend([run.data.sequences[3]], k=5)
    assert frame[frame["user_row"] == 3]["item"].tolist() == items[0].tolist()
    users.write_text("no-such-user\n")
    assert main(["predict", run_dir, "--users", str(users), "--out", str(out)]) == 2
    assert "not in tiny" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing"), "--out", str(out)]) == 2
