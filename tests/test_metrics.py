"""reporting/metrics.py: the metric names and cutoffs, and HR@k / NDCG@k of ranks against
hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reporting.metrics import (
    CUTOFFS,
    METRICS,
    SELECTION_METRIC,
    metric_per_user,
    metrics_per_user,
)


def test_metric_names_are_the_papers_and_validation_ndcg_at_5_selects():
    assert CUTOFFS == (5, 10)
    assert METRICS == ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
    assert SELECTION_METRIC == "NDCG@5"


def test_hand_computed_metrics_of_four_ranks():
    ranks = np.array([1, 3, 6, 11])
    per_user = metrics_per_user(ranks)
    assert list(per_user) == list(METRICS)
    assert per_user["HR@5"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert per_user["HR@10"].tolist() == [1.0, 1.0, 1.0, 0.0]
    # 1 / log2(1 + 1) = 1, 1 / log2(3 + 1) = 1/2 exactly, 1 / log2(6 + 1) = 0.3562...
    assert per_user["NDCG@5"].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert per_user["NDCG@10"].tolist() == [1.0, 0.5, pytest.approx(0.3562071871), 0.0]
    assert per_user["HR@5"].mean() == 0.5
    assert per_user["HR@10"].mean() == 0.75
    assert per_user["NDCG@5"].mean() == (1 + 1 / math.log2(4)) / 4 == 0.375
    assert per_user["NDCG@10"].mean() == pytest.approx((1 + 0.5 + 1 / math.log2(7)) / 4)


def test_a_rank_of_k_counts_at_k_and_the_next_does_not():
    ranks = np.array([5, 6, 10, 11])
    assert metric_per_user(ranks, "HR@5").tolist() == [1.0, 0.0, 0.0, 0.0]
    assert metric_per_user(ranks, "NDCG@5").tolist() == [pytest.approx(1 / math.log2(6)), 0.0, 0.0, 0.0]
    assert metric_per_user(ranks, "HR@10").tolist() == [1.0, 1.0, 1.0, 0.0]
    assert metric_per_user(ranks, "NDCG@10")[2] == pytest.approx(1 / math.log2(11))  # 0.2891


def test_ranks_of_several_seeds_keep_their_shape_in_float64():
    ranks = np.array([[1, 2], [20, 3]])  # (seeds, users), as reporting/paired.py passes them
    ndcg = metric_per_user(ranks, "NDCG@10")
    assert ndcg.shape == (2, 2) and ndcg.dtype == np.float64
    assert ndcg.tolist() == [[1.0, pytest.approx(1 / math.log2(3))], [0.0, 0.5]]
    assert metric_per_user(ranks, "HR@10").dtype == np.float64


def test_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'MRR@10'"):
        metric_per_user(np.array([1]), "MRR@10")
