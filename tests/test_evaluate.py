"""evaluate: ranks and metrics of scores against hand-computed cases and scikit-learn, tie handling,
the average as the results have always been computed, scoring."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from data_loader import DeviceData, build_dataset
from evaluate import (
    NonFiniteScores,
    mean_and_std,
    positive_rank,
    ranking_metrics,
    score_candidates,
)
from model import ACMR
from reporting.metrics import METRICS


def test_hand_computed_ranks_and_metrics():
    # positive (column 0) ranked 1st, 3rd, 6th and 11th among 11 candidates
    scores = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6, 7, 8, 0, -1],
        [7.0, 9, 8, 1, 2, 3, 4, 5, 6, 0, -1],
        [4.0, 9, 8, 7, 6, 5, 1, 2, 3, 0, -1],
        [-5.0, 9, 8, 7, 6, 5, 1, 2, 3, 0, -1],
    ])
    assert positive_rank(scores).tolist() == [1, 3, 6, 11]
    metrics = ranking_metrics(scores)
    assert metrics["HR@5"] == pytest.approx(2 / 4)
    assert metrics["HR@10"] == pytest.approx(3 / 4)
    assert metrics["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert metrics["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7)) / 4)


def test_the_average_over_users_is_torchs_float64_mean_to_the_last_bit():
    """The stored results were computed by torch from the ranks (the formulas below): the same
    floats, not only close ones. numpy's mean rounds the last bit otherwise on some of these."""
    generator = torch.Generator().manual_seed(0)
    for users in (239, 1000, 4097, 33333):
        scores = torch.randn(users, 100, generator=generator, dtype=torch.float64)
        scores[:, 0] += 2.3  # most positives in the top 10
        rank = positive_rank(scores).double()
        expected = {}
        for k in (5, 10):
            expected[f"HR@{k}"] = (rank <= k).double().mean().item()
        for k in (5, 10):
            expected[f"NDCG@{k}"] = torch.where(rank <= k, 1.0 / torch.log2(rank + 1), 0.0).mean().item()
        assert ranking_metrics(scores) == expected, users


def test_ties_never_favour_the_positive():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert positive_rank(scores).tolist() == [3, 4]
    # a model that scores everything equal gets nothing at k smaller than the candidate count
    constant = torch.zeros(10, 100)
    assert ranking_metrics(constant) == {name: 0.0 for name in METRICS}


def test_a_score_that_is_not_finite_ranks_last_never_first():
    """A diverged model scores NaN; NaN >= x is False, so a NaN positive used to rank first."""
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[nan, 0.5, 0.2], [1.0, nan, 0.0], [nan, nan, nan], [inf, 1.0, 2.0]])
    assert positive_rank(scores).tolist() == [3, 1, 3, 3]
    assert ranking_metrics(torch.full((10, 100), nan)) == {name: 0.0 for name in METRICS}


def test_scoring_a_model_with_weights_that_are_not_finite_stops(frames, small_config):
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    model = ACMR(dataset.num_items, len(dataset.markets))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteScores, match="candidate scores are not finite"):
        score_candidates(model, data, data.valid_candidates, batch_floats=0)


def test_ndcg_matches_scikit_learn_without_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(500, 100, generator=generator, dtype=torch.float64)
    relevance = np.zeros((500, 100))
    relevance[:, 0] = 1
    metrics = ranking_metrics(scores)
    for k in (5, 10):
        assert metrics[f"NDCG@{k}"] == pytest.approx(ndcg_score(relevance, scores.numpy(), k=k))


def test_mean_and_sample_std():
    summary = mean_and_std([0.2, 0.4, 0.9])
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["std"] == pytest.approx(math.sqrt(((0.3 ** 2) + (0.1 ** 2) + (0.4 ** 2)) / 2))
    assert mean_and_std([0.7]) == {"mean": 0.7, "std": None}


def test_grouped_scoring_equals_scoring_each_pair_alone(frames, small_config):
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    torch.manual_seed(0)
    model = ACMR(dataset.num_items, len(dataset.markets)).eval()
    scores = score_candidates(model, data, data.test_candidates, batch_floats=100_000)  # many groups
    users = data.target_users
    with torch.no_grad():
        for row in range(len(users)):
            user = users[row]
            candidates = data.test_candidates[row]
            alone = model(None, data.user_history[user].expand(len(candidates), -1), candidates,
                          data.user_market[user].expand(len(candidates)))
            torch.testing.assert_close(scores[row], alone, rtol=1e-5, atol=1e-5)
    per_device_default = score_candidates(model, data, data.test_candidates, batch_floats=0)
    torch.testing.assert_close(per_device_default, scores, rtol=1e-5, atol=1e-5)
    assert not model.training
