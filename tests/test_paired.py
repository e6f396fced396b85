"""reporting/paired.py: per-user ranks saved by a run, and the paired comparison against hand-computed values."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from config import Config
from reporting import paired, runs
from reporting.metrics import METRICS, metric_per_user
from runfolder.checkpoints import Progress
from tests.conftest import synthetic_frames
from train_model import run_seed

T_975_DF4 = 2.7764451051977987  # Student's t, 97.5% quantile, 4 degrees of freedom (a table's value)


def test_the_comparison_of_five_users_matches_the_hand_computed_values():
    a, b = np.array([1, 1, 1, 1, 1]), np.array([3, 1, 2, 15, 7])
    # HR@10: A hits all, B misses the 4th user: d = 0 0 0 1 0
    hr = paired.paired_stats(metric_per_user(a, "HR@10") - metric_per_user(b, "HR@10"))
    sd = math.sqrt((4 * 0.2**2 + 0.8**2) / 4)
    assert hr.n == 5 and hr.mean == pytest.approx(0.2)
    assert (hr.low, hr.high) == pytest.approx((0.2 - T_975_DF4 * sd / math.sqrt(5), 0.2 + T_975_DF4 * sd / math.sqrt(5)))
    assert hr.p == pytest.approx(1.0)  # one non-zero difference: both signs equally likely
    assert (hr.better, hr.worse) == (1, 0)
    # NDCG@10: d = 1 - 1/log2(rank + 1): 0.5, 0, 1 - 1/log2(3), 1, 1 - 1/3
    d = [0.5, 0.0, 1 - 1 / math.log2(3), 1.0, 2 / 3]
    ndcg = paired.paired_stats(metric_per_user(a, "NDCG@10") - metric_per_user(b, "NDCG@10"))
    assert ndcg.mean == pytest.approx(sum(d) / 5)
    half = T_975_DF4 * np.std(d, ddof=1) / math.sqrt(5)
    assert (ndcg.low, ndcg.high) == pytest.approx((sum(d) / 5 - half, sum(d) / 5 + half))
    # 4 non-zero differences, all positive: exact two-sided p = 2 / 2**4
    assert ndcg.p == pytest.approx(0.125)
    assert (ndcg.better, ndcg.worse) == (4, 0)


def test_identical_models_differ_by_nothing():
    same = paired.paired_stats(np.zeros(7))
    assert (same.mean, same.low, same.high, same.p, same.better, same.worse) == (0.0, 0.0, 0.0, 1.0, 0, 0)


def fabricate_run(folder, model, market, seeds: dict[int, tuple[str, dict[str, list[int]]]],
                  unfinished: tuple[int, ...] = ()):
    """A run folder with config.json, ranks.json (seed -> (candidates sha, stage -> ranks)) and
    results.json, which lists the seeds but the `unfinished` ones."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": model, "target_market": market}))
    for seed, (sha, stages) in seeds.items():
        for stage, ranks in stages.items():
            paired.save_ranks(folder, seed, stage, ranks, {"test": sha, "valid": "v"})
    (folder / "results.json").write_text(json.dumps({"target_market": market, "runs": [
        {"seed": seed} for seed in seeds if seed not in unfinished]}))
    return folder


def test_runs_pair_up_only_on_the_same_candidates_and_at_their_last_stage(tmp_path):
    acmr = fabricate_run(tmp_path / "in-1", "acmr", "in", {
        0: ("s0", {"pretrain": [50, 50, 50], "finetune": [1, 1, 1]}),
        1: ("s1", {"pretrain": [50, 50], "finetune": [1, 20]})})
    gmf = fabricate_run(tmp_path / "in-2", "gmf", "in", {
        0: ("s0", {"finetune": [1, 20, 2]}),
        1: ("other candidates", {"finetune": [1, 1]})})
    assert paired.load_ranks(acmr)[0]["finetune"].tolist() == [1, 1, 1]
    models = paired.models_of([acmr, gmf], {"in-1": "acmr", "in-2": "gmf"})
    [(a, b)] = paired.pairs_of(models)
    assert (a.variant, b.variant) == ("acmr", "gmf")
    result = paired.compare(a.ranks, b.ranks)
    seeds, stats = result.seeds, result.stats
    assert seeds == [0]  # seed 1's candidates differ
    assert stats["HR@10"].n == 3 and stats["HR@10"].mean == pytest.approx(1 / 3)  # fine-tuning's ranks
    assert stats["NDCG@10"].mean == pytest.approx((0 + 1 + (1 - 1 / math.log2(3))) / 3)  # B: ranks 1, 20, 2
    lines = paired.comparison_lines(models)
    assert lines[2].startswith("| acmr | gmf | in | 0 | 3 | +0.3333 [")
    assert not any("No ACMR run" in line for line in lines)


def test_a_seed_that_results_json_does_not_list_is_left_out_of_the_pairs(tmp_path):
    """ACMR's seed 1 has ended pre-training only (still fine-tuning, or diverged there): its
    pre-training ranks must not meet GMF's fine-tuned ones."""
    acmr = fabricate_run(tmp_path / "in-1", "acmr", "in", {
        0: ("s0", {"pretrain": [50, 50], "finetune": [1, 1]}), 1: ("s1", {"pretrain": [50, 50]})}, unfinished=(1,))
    gmf = fabricate_run(tmp_path / "in-2", "gmf", "in", {0: ("s0", {"finetune": [1, 20]}),
                                                         1: ("s1", {"finetune": [1, 20]})})
    models = paired.models_of([acmr, gmf], {"in-1": "acmr", "in-2": "gmf"})
    assert sorted(next(m for m in models if m.variant == "acmr").ranks) == [0]
    assert paired.comparison_lines(models)[2].startswith("| acmr | gmf | in | 0 | 2 | +0.5000 [")


def test_a_damaged_ranks_file_is_a_one_line_run_folder_error(tmp_path):
    folder = fabricate_run(tmp_path / "in-1", "acmr", "in", {0: ("s0", {"finetune": [1, 1]})})
    (folder / "ranks.json").write_text('{"format": ')
    with pytest.raises(runs.RunFolderError, match=r"ranks\.json: not valid JSON"):
        paired.load_ranks(folder)
    (folder / "ranks.json").write_text('{"format": "other"}')
    with pytest.raises(runs.RunFolderError, match=r"ranks\.json: not a ranks file of format acmr-ranks/1$"):
        paired.load_ranks(folder)


def test_a_user_is_one_unit_his_differences_averaged_over_the_seeds(tmp_path):
    """Two seeds of three users. HR@10 differences per seed: seed 0: 1 0 0, seed 1: 1 1 -1; per
    user averaged: 1, 0.5, -0.5 (n = 3 users, not 6 user-seeds); per seed: 1/3 and 1/3."""
    a = fabricate_run(tmp_path / "in-a", "acmr", "in", {0: ("s0", {"finetune": [1, 1, 30]}),
                                                          1: ("s1", {"finetune": [2, 3, 40]})})
    b = fabricate_run(tmp_path / "in-b", "gmf", "in", {0: ("s0", {"finetune": [11, 5, 50]}),
                                                         1: ("s1", {"finetune": [12, 60, 4]})})
    result = paired.compare(paired.load_ranks(a), paired.load_ranks(b))
    hr = result.stats["HR@10"]
    d = [1.0, 0.5, -0.5]
    half = 4.302652729911275 * np.std(d, ddof=1) / math.sqrt(3)  # Student's t, 97.5%, 2 degrees of freedom
    assert (hr.n, hr.mean) == (3, pytest.approx(1 / 3))
    assert (hr.low, hr.high) == pytest.approx((1 / 3 - half, 1 / 3 + half))
    assert (hr.better, hr.worse) == (2, 1)
    assert hr.p == pytest.approx(stats.wilcoxon(d).pvalue)  # over the 3 users, not the 6 user-seeds
    assert hr.p != pytest.approx(stats.wilcoxon([1, 0, 0, 1, 1, -1]).pvalue)
    assert result.per_seed["HR@10"] == pytest.approx([1 / 3, 1 / 3])
    line = paired.comparison_lines(paired.models_of([a, b], {"in-a": "acmr", "in-b": "gmf"}))[2]
    assert line.startswith("| acmr | gmf | in | 0,1 | 3 | +0.3333 [")


def test_each_baseline_is_compared_with_popularity_and_its_untuned_self_and_a_missing_acmr_is_said(tmp_path):
    folders = [fabricate_run(tmp_path / f"in-{i}", model, "in", {0: ("s", {"finetune": ranks})})
               for i, (model, ranks) in enumerate([("popularity", [5, 5]), ("gmf", [9, 9]), ("gmf", [1, 1]),
                                                   ("gmf", [2, 2])])]
    names = {"in-0": "popularity", "in-1": "gmf", "in-2": "gmf-tuned-in (patience_resets=True)",
             "in-3": "gmf++-trained (patience_resets=True)"}
    pairs = [(a.variant, b.variant) for a, b in paired.pairs_of(paired.models_of(folders, names))]
    # GMF++ (config.json's model: gmf) is not GMF's untuned self: tuned GMF is not paired with it
    assert sorted(pairs) == [("gmf", "popularity"), ("gmf++-trained (patience_resets=True)", "popularity"),
                             ("gmf-tuned-in (patience_resets=True)", "gmf"),
                             ("gmf-tuned-in (patience_resets=True)", "popularity")]
    lines = paired.comparison_lines(paired.models_of(folders, names))
    assert any("No ACMR run here has per-user ranks" in line for line in lines)
    only = paired.comparison_lines(paired.models_of(folders, names), variant="gmf")
    assert [line.split(" | ")[:2] for line in only[2:] if line.startswith("| ")] == [["| gmf", "popularity"]]


def test_a_run_saves_each_test_users_rank_and_they_give_its_metrics(tmp_path):
    config = Config(model="gmf", stages="finetune", finetune_epochs=2, num_eval_negatives=20, num_train_negatives=2,
                    embedding_init_std=0.01, lr=1e-2)
    progress = Progress(seed=0, stage="finetune")
    run_seed(tmp_path, synthetic_frames(), "in", config, torch.device("cpu"), progress, None)
    saved = paired.load_ranks(tmp_path)[0]
    assert saved["candidates_sha256"] == progress.runs[0]["candidates_sha256"]["test"]
    assert "ranks" not in progress.runs[0]["finetune"]  # results.json keeps the metrics only
    ranks = saved["finetune"]
    assert len(ranks) == 30 and ranks.min() >= 1 and ranks.max() <= 21
    for metric in METRICS:
        assert metric_per_user(ranks, metric).mean() == pytest.approx(progress.runs[0]["finetune"][metric])


def test_two_models_on_the_same_seed_pair_up_end_to_end(tmp_path):
    base = Config(stages="finetune", finetune_epochs=1, num_eval_negatives=20, num_train_negatives=2)
    frames = synthetic_frames()
    folders = []
    for model in ("popularity", "gmf"):
        folder = tmp_path / f"in-{model}"
        folder.mkdir()
        config = dataclasses.replace(base, model=model)
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
        progress = Progress(seed=0, stage="finetune")
        run_seed(folder, frames, "in", config, torch.device("cpu"), progress, None)
        (folder / "results.json").write_text(json.dumps({"target_market": "in", "runs": progress.runs}))
        folders.append(folder)
    models = paired.models_of(folders, {f.name: f.name.removeprefix("in-") for f in folders})
    assert [(a.variant, b.variant) for a, b in paired.pairs_of(models)] == [("gmf", "popularity")]
    assert paired.comparison_lines(models)[2].startswith("| gmf | popularity | in | 0 | 30 |")
