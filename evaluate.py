"""Scoring of candidates, and the ranking metrics of the scores (1 positive + sampled negatives).

    python evaluate.py report --log_dir=log             # report of run folders (reporting/report.py)
    python evaluate.py report --docs                    # the documents' generated tables
    python evaluate.py report --docs --check            # only check them (exit 1 if one is out of date)

Each user has one relevant item, its held-out positive, in column 0 of its candidate row.
Its rank is 1 + the number of other candidates scored at least as high: a tie never favours
the positive, and a score that is not finite (a model that diverged) counts as -inf, the worst.
The metrics of a rank (HR@k, NDCG@k) are reporting/metrics.py's.
"""
from __future__ import annotations

import signal
import sys

if __name__ == "__main__":  # Ctrl-C while the libraries below load (seconds): exit 130, no traceback
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

import numpy as np
import torch
from torch import nn

from config import run_command
from data_loader import DeviceData
from model import activation_floats
from reporting import documents, report
from reporting.metrics import metrics_per_user


class NonFiniteScores(ValueError):
    """The model scored a candidate NaN or infinite: it has diverged."""


def positive_rank(scores: torch.Tensor) -> torch.Tensor:
    """scores (users, candidates), positive in column 0 -> its 1-based rank (users,), ties
    counted against it; a NaN or infinite score is -inf (a NaN positive ranks last, not first)."""
    scores = scores.where(torch.isfinite(scores), float("-inf"))
    return 1 + (scores[:, 1:] >= scores[:, :1]).sum(dim=1)


def ranking_metrics(scores: torch.Tensor) -> dict[str, float]:
    """Each metric of reporting/metrics.METRICS, averaged over the users (the rows of `scores`),
    on the CPU. The average is torch's float64 mean, which computed the committed results
    (tests/test_evaluate.py checks it to the last bit): numpy's pairwise sum rounds otherwise."""
    ranks = positive_rank(scores).cpu().numpy()
    return {metric: torch.from_numpy(values).mean().item() for metric, values in metrics_per_user(ranks).items()}


def mean_and_std(values: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return {"mean": float(array.mean()), "std": std}


@torch.inference_mode()
def score_candidates(model: nn.Module, data: DeviceData, candidates: torch.Tensor,
                     batch_floats: int) -> torch.Tensor:
    """Logits of every (target user, candidate) pair: candidates (U, C) -> (U, C), one row per
    user of `data.target_users`. Candidate 0 (padding) scores -inf. Raises NonFiniteScores if
    the model scores a candidate NaN or infinite.

    Users with the same history length are scored together, so no sequence carries padding,
    in forward passes whose layer activations (model.activation_floats) stay under `batch_floats`
    (0 = 4 M on CPU, where passes that fit the caches are faster, 32 M on other devices).
    """
    batch_floats = batch_floats or (4_000_000 if candidates.device.type == "cpu" else 32_000_000)
    was_training = model.training
    model.eval()
    num_candidates = candidates.shape[1]
    users = data.target_users
    lengths = data.history_length[users]
    scores = torch.empty(candidates.shape, device=candidates.device)
    for length in torch.unique(lengths).tolist():
        same_length = torch.nonzero(lengths == length).squeeze(1)
        group_size = max(1, batch_floats // activation_floats(model, num_candidates, length + 1))
        for picked in torch.split(same_length, group_size):
            batch_users = users[picked].repeat_interleave(num_candidates)  # (G*C,)
            logits = model(batch_users, data.user_history[batch_users, :length],
                           candidates[picked].reshape(-1), data.user_market[batch_users])
            scores[picked] = logits.float().reshape(len(picked), num_candidates)
    model.train(was_training)
    padding = candidates == 0  # of full-ranking rows: never ranked
    not_finite = int((~torch.isfinite(scores) & ~padding).sum())
    if not_finite:
        raise NonFiniteScores(f"{not_finite} of {int((~padding).sum())} candidate scores are not finite")
    scores[padding] = float("-inf")
    return scores


def evaluate_candidates(model: nn.Module, data: DeviceData, candidates: torch.Tensor,
                        batch_floats: int) -> dict[str, float]:
    """HR@k / NDCG@k of the model on one candidate set (positive in column 0)."""
    return ranking_metrics(score_candidates(model, data, candidates, batch_floats))


def breakdown(scores: torch.Tensor, groups: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Metrics of the users of each group (a boolean mask over the rows of `scores`), with
    their number; None where a group is empty."""
    return {name: {**ranking_metrics(scores[mask]), "users": int(mask.sum())} if mask.any() else None
            for name, mask in groups.items()}



def main(argv: list[str]) -> None:
    """`report ...` (reporting/report.py) or `report --docs` (reporting/documents.py); Ctrl-C and SIGTERM stop it
    (KeyboardInterrupt), so that a report in progress leaves the previous one whole."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if "-h" in argv or "--help" in argv:  # this module's command line is reporting/report.py's and reporting/documents.py's
        print("\n\n".join(doc.strip() for doc in (__doc__, report.__doc__, documents.__doc__)))
    elif argv[:1] != ["report"]:
        sys.exit(report.USAGE)
    elif argv[1:2] == ["--docs"] and argv[2:] in ([], ["--check"]):
        documents.main(check=argv[2:] == ["--check"])
    else:
        report.main(argv[1:])


if __name__ == "__main__":
    run_command(main, ())  # report and documents say their own errors
