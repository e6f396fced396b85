"""The ranking metrics, from the rank of each user's held-out positive among its candidates.

Each user has one relevant item, its held-out positive; its rank is 1 + the number of other
candidates scored at least as high (evaluate.positive_rank). Per user,

    HR@k   = 1 if rank <= k else 0
    NDCG@k = 1 / log2(rank + 1) if rank <= k else 0    (one relevant item: the ideal DCG is 1)

at the paper's cutoffs k = 5 and 10; a model's metric is their mean over the users
(evaluate.ranking_metrics). Validation SELECTION_METRIC chooses the epoch whose weights a stage
keeps (train_model.py) and the best trial of a search (tools/tune.py).

Torch-free: evaluate.py applies it to the ranks of a model's scores, reporting/paired.py to the
ranks that run folders keep (ranks.json).
"""
from __future__ import annotations

import numpy as np

CUTOFFS = (5, 10)
METRICS = tuple(f"{name}@{k}" for name in ("HR", "NDCG") for k in CUTOFFS)  # HR@5 HR@10 NDCG@5 NDCG@10
SELECTION_METRIC = "NDCG@5"


def metric_per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """HR@k or NDCG@k ("HR@10", ...) of each 1-based rank, in float64, of the shape of `ranks`."""
    name, k = metric.split("@")
    if name not in ("HR", "NDCG"):
        raise ValueError(f"unknown metric {metric!r}: HR@k or NDCG@k")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= int(k)
    if name == "HR":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)


def metrics_per_user(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of METRICS, of each rank."""
    return {metric: metric_per_user(ranks, metric) for metric in METRICS}
