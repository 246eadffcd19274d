import math

import pytest
import torch

from genrec.evaluation.metrics import (MISS, drop_seen_items, list_validity, mask_seen_scores, metrics_from_ranks,
                                      ranks_from_lists, ranks_from_scores, standard_errors)


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


def test_standard_errors_hand_computed():
    """Recall's is binomial; NDCG's is the s.d. (over n) of the per-user gains over sqrt(n)."""
    ranks = torch.tensor([0, 2, 9, 10, MISS])
    se = standard_errors(ranks, [1, 10])
    assert se["recall@10_se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert se["recall@1_se"] == pytest.approx(math.sqrt(0.2 * 0.8 / 5)) == se["ndcg@1_se"]  # one rank: gain = hit
    gains = [1.0, 0.5, 1 / math.log2(11), 0.0, 0.0]
    mean = sum(gains) / 5
    assert se["ndcg@10_se"] == pytest.approx(math.sqrt(sum((g - mean) ** 2 for g in gains) / 5) / math.sqrt(5))


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


def test_mask_seen_scores_hand_checked():
    # items 1..5; user history [0, 2, 4] (0 = padding); target 3
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.5, 0.7, 0.1]])
    history = torch.tensor([[0, 2, 4]])
    target = torch.tensor([3])
    assert ranks_from_scores(scores, target).item() == 3  # 0.9, 0.8, 0.7 are ahead
    masked = mask_seen_scores(scores, history)
    assert ranks_from_scores(masked, target).item() == 1  # only item 1 is ahead once 2 and 4 are out
    assert scores[0, 2] == 0.8  # the input is not modified
    # a target inside the history ranks last under this protocol
    assert ranks_from_scores(masked, torch.tensor([2])).item() == 4  # 0-based: last of 5


def test_drop_seen_items_keeps_order_and_pads():
    items = torch.tensor([[5, 2, 7, 4, 1], [3, 3, 6, 0, 8]])
    history = torch.tensor([[0, 2, 4], [0, 0, 3]])
    assert drop_seen_items(items, history, 3).tolist() == [[5, 7, 1], [6, 0, 8]]
    assert drop_seen_items(items, history, 5).tolist() == [[5, 7, 1, 0, 0], [6, 0, 8, 0, 0]]


def test_seen_filtering_agrees_between_score_and_list_paths():
    torch.manual_seed(1)
    scores = torch.randn(32, 41)
    history = torch.randint(0, 41, (32, 6))
    targets = torch.randint(1, 41, (32,))
    s = scores.clone()
    s[:, 0] = -float("inf")
    top = s.topk(10 + 6, dim=1).indices  # as many extra items as history columns
    from_lists = ranks_from_lists(drop_seen_items(top, history, 10), targets)
    from_scores = ranks_from_scores(mask_seen_scores(scores, history), targets)
    assert metrics_from_ranks(from_lists, [5, 10]) == pytest.approx(metrics_from_ranks(from_scores, [5, 10]))
