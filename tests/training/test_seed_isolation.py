"""The model seed does not depend on whether the semantic-ID artifact was built now or loaded from the cache."""
import pytest
import torch

from genrec.config import load_config
from genrec.training import loop


@pytest.mark.slow
def test_fresh_and_cached_artifacts_train_identical_weights(tmp_path):
    def run(out):
        cfg = load_config(["configs/tiny.yaml", "configs/tiny/decoder.yaml"], [
            f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=5", f"output_dir={tmp_path}/{out}",
            f"results_dir={tmp_path}/results", "train.epochs=1", "train.progress=false", "name=r"])
        record = loop.train(cfg)
        return record, torch.load(f"{tmp_path}/{out}/r/best_model.pt", weights_only=True)

    (fresh, w_fresh), (cached, w_cached) = run("a"), run("b")  # a fits the IDs, b loads them
    assert all(torch.equal(w_fresh[k], w_cached[k]) for k in w_fresh)
    assert fresh["metrics"] == cached["metrics"]


def test_the_id_fit_leaves_the_callers_rng_alone(tmp_path):
    cfg = load_config(["configs/tiny.yaml", "configs/tiny/decoder.yaml"], [
        f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=5"])
    data = loop.load_dataset(cfg.data)
    torch.manual_seed(0)
    loop.build_context(cfg, data)  # fits (draws random numbers inside its own RNG scope)
    a = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(a, torch.rand(3))
