import math

import pytest
import torch

from genrec.evaluation.metrics import MISS, list_validity, metrics_from_ranks, ranks_from_lists, ranks_from_scores


def test_metrics_hand_computed():
    # ranks 0, 2, 9, 10, miss
    ranks = torch.tensor([0, 2, 9, 10, MISS])
    m = metrics_from_ranks(ranks, [1, 5, 10])
    assert m["recall@1"] == pytest.approx(1 / 5)
    assert m["recall@5"] == pytest.approx(2 / 5)
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["ndcg@1"] == pytest.approx(1 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 5)  # a hit at rank 3 gives 1/log2(4) = 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 5)


def test_ranks_from_scores_ignores_padding_and_counts_ties_against_target():
    scores = torch.tensor([
        [9.0, 0.1, 0.5, 0.3, 0.2],  # padding column has the top score: ignored
        [0.0, 0.4, 0.4, 0.4, 0.1],  # target 2 ties with items 1 and 3 -> two items ahead
        [0.0, 0.1, 0.2, 0.3, 0.9],  # target 4 is the best
        [0.0, 1.0, 1.0, 1.0, 1.0],  # constant scores: worst rank, never lucky
    ])
    targets = torch.tensor([2, 2, 4, 1])
    assert ranks_from_scores(scores, targets).tolist() == [0, 2, 0, 3]


def test_ranks_from_scores_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.tensor([[0.0, float("nan")]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="expected scores"):
        ranks_from_scores(torch.zeros(2, 3), torch.tensor([1]))


def test_ranks_from_lists_duplicates_and_invalid_ids_are_misses():
    items = torch.tensor([
        [5, 3, 7],
        [0, 0, 7],  # invalid ids keep their slots
        [3, 3, 7],  # a duplicate keeps its slot too
        [1, 2, 3],
    ])
    targets = torch.tensor([3, 7, 7, 9])
    assert ranks_from_lists(items, targets).tolist() == [1, 2, 2, MISS]
    counts = list_validity(items, num_items=8)
    assert counts.tolist() == [[0, 0], [2, 0], [0, 1], [0, 0]]


def test_score_and_list_paths_agree():
    torch.manual_seed(0)
    scores = torch.randn(16, 31)
    targets = torch.randint(1, 31, (16,))
    s = scores.clone()
    s[:, 0] = -float("inf")
    top = s.topk(10, dim=1).indices
    from_lists = metrics_from_ranks(ranks_from_lists(top, targets), [5, 10])
    from_scores = metrics_from_ranks(ranks_from_scores(scores, targets), [5, 10])
    assert from_lists == pytest.approx(from_scores)
