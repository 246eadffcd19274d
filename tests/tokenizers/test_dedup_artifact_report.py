"""Collision digit, the SemanticIds artifact and the build report, checked by hand on tiny examples."""
import math

import pytest
import torch

from genrec.tokenizers.artifact import SemanticIds
from genrec.tokenizers.dedup import add_collision_digit, collision_digits, next_collision_digits
from genrec.tokenizers.report import collision_stats, level_stats, plot_usage, sid_report

RAW = torch.tensor([[0, 1], [2, 3], [0, 1], [0, 1], [2, 3], [1, 1]])  # groups: {0,2,3}, {1,4}, {5}


def test_dedup_digits_in_item_order():
    assert collision_digits(RAW).tolist() == [0, 0, 1, 2, 1, 0]
    codes, size = add_collision_digit(RAW)
    assert size == 3
    assert len(torch.unique(codes, dim=0)) == len(codes)


def test_dedup_random_codes_become_unique():
    raw = torch.randint(0, 3, (500, 3), generator=torch.Generator().manual_seed(0))  # 27 tuples, many repeats
    codes, size = add_collision_digit(raw)
    assert len(torch.unique(codes, dim=0)) == 500
    assert size == int(torch.unique(raw, dim=0, return_counts=True)[1].max())


def test_dedup_no_collisions_gives_size_one():
    codes, size = add_collision_digit(torch.tensor([[0], [1], [2]]))
    assert size == 1 and codes[:, 1].tolist() == [0, 0, 0]


def test_dedup_next_digit_for_new_items():
    codes, _ = add_collision_digit(RAW)
    assert next_collision_digits(codes, torch.tensor([[0, 1], [3, 3], [0, 1]])).tolist() == [3, 0, 4]


def _sids(**kw):
    codes, size = add_collision_digit(RAW)
    return SemanticIds(codes=codes, codebook_sizes=[4, 4, size], dataset="toy", embedding_sha256="ab", tokenizer="rkmeans",
                       tokenizer_config={"num_levels": 2}, **kw)


def test_artifact_save_load_roundtrip(tmp_path):
    sids = _sids()
    sids.save(str(tmp_path / "s.pt"))
    back = SemanticIds.load(str(tmp_path / "s.pt"))
    assert torch.equal(back.codes, sids.codes)
    assert back.codebook_sizes == [4, 4, 3] and back.num_items == 6 and back.num_levels == 3
    assert back.embedding_sha256 == "ab" and back.tokenizer_config == {"num_levels": 2}
    assert (tmp_path / "s.json").is_file()
    assert back.padded()[0].tolist() == [0, 0, 0] and torch.equal(back.padded()[1:], sids.codes)


def test_artifact_add_items_and_overflow():
    sids = _sids()
    new = sids.add_items(torch.tensor([[1, 1], [3, 0]]))
    assert new.tolist() == [[1, 1, 1], [3, 0, 0]] and sids.num_items == 8
    with pytest.raises(ValueError, match="grow=True"):
        sids.add_items(torch.tensor([[0, 1]]))  # would need digit 3, size is 3
    sids.add_items(torch.tensor([[0, 1]]), grow=True)
    assert sids.codebook_sizes[-1] == 4 and len(torch.unique(sids.codes, dim=0)) == sids.num_items


def test_artifact_rejects_codes_outside_codebook():
    with pytest.raises(AssertionError):
        SemanticIds(codes=torch.tensor([[5]]), codebook_sizes=[4])


def test_report_numbers_by_hand(tmp_path):
    stats = level_stats(RAW, [4, 4])
    # level 0: codes 0 (x3), 2 (x2), 1 (x1) -> 3/4 used
    assert stats[0]["used"] == 3 and stats[0]["usage"] == 0.75
    p = [3 / 6, 2 / 6, 1 / 6]
    assert stats[0]["perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    # level 1: codes 1 (x4), 3 (x2)
    assert stats[1]["used"] == 2 and stats[1]["max_count"] == 4
    col = collision_stats(RAW)
    assert col == {"num_items": 6, "unique_ids": 3, "collided_items": 5, "collision_share": 5 / 6, "max_group": 3}
    assert level_stats(torch.arange(4).unsqueeze(1), [4])[0]["perplexity"] == pytest.approx(4.0)
    assert set(sid_report(RAW, [4, 4])) == {"levels", "collisions"}
    plot_usage(RAW, [4, 4], str(tmp_path / "u.png"))
    assert (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"
