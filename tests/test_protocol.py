"""The protocol switches of docs/SPEC.md section 7 (docs/PROTOCOL.md): each test fails if its switch
does nothing."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import train_model
from data_loader import DeviceData, build_dataset, resample_train_negatives
from evaluate import score_candidates
from model import ACMR
from reporting.paired import load_ranks
from runfolder.checkpoints import Progress
from train_model import run_seed


def target_items(frames, dataset, market="in"):
    return set(np.searchsorted(dataset.item_names, frames[market]["itemId"].unique()))


def test_target_pool_draws_negatives_from_the_target_markets_items(frames, small_config):
    frames = dict(frames)
    target = frames["in"][frames["in"]["itemId"] < "I0150"]
    frames["in"] = target[target.groupby("userId")["userId"].transform("size") >= 3]
    for pool, inside in (("global", False), ("target", True)):
        dataset = build_dataset(frames, "in", 0, dataclasses.replace(small_config, eval_negative_pool=pool))
        negatives = set(dataset.test_candidates[:, 1:].ravel()) | set(dataset.valid_candidates[:, 1:].ravel())
        assert (negatives <= target_items(frames, dataset)) == inside


def test_full_ranking_ranks_every_target_item_the_user_has_not_trained_on(frames, small_config):
    config = dataclasses.replace(small_config, eval_mode="full")
    dataset = build_dataset(frames, "in", 0, config)
    items = target_items(frames, dataset)
    positive = dataset.train_label == 1
    for row, user in enumerate(dataset.target_users):
        trained = set(dataset.train_item[positive & (dataset.train_user == user)])
        candidates = dataset.test_candidates[row]
        negatives = candidates[1:][candidates[1:] > 0]
        assert set(negatives) == items - trained - {candidates[0]}
        assert len(negatives) == len(set(negatives))
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    torch.manual_seed(0)
    scores = score_candidates(ACMR(dataset.num_items, 3).eval(), data, data.test_candidates, 10_000)
    assert torch.isinf(scores[data.test_candidates == 0]).all()
    assert torch.isfinite(scores[data.test_candidates > 0]).all()


def test_temporal_split_holds_out_each_users_latest_interactions(frames, small_config):
    frames = dict(frames)
    frame = frames["in"].copy()
    frame.loc[frame.index[:4], "date"] = frame["date"].max() + np.timedelta64(1, "D")  # a tie
    frames["in"] = frame
    for split, latest in (("temporal", True), ("random", False)):
        dataset = build_dataset(frames, "in", 0, dataclasses.replace(small_config, split=split))
        matches = []
        for row, user in enumerate(dataset.target_users):
            mine = frame[frame["userId"] == dataset.user_names[user]]
            ordered = mine.assign(line=np.arange(len(frame))[frame["userId"] == dataset.user_names[user]])
            ordered = ordered.sort_values(["date", "line"], kind="stable")
            expected = tuple(ordered["itemId"].iloc[-2:])  # (valid, test): ties go by file line
            got = (dataset.item_names[dataset.valid_candidates[row, 0]],
                   dataset.item_names[dataset.test_candidates[row, 0]])
            matches.append(got == expected)
        assert all(matches) == latest


def test_held_out_items_can_be_kept_out_of_each_others_negatives(frames, small_config):
    config = dataclasses.replace(small_config, eval_negative_pool="target", num_eval_negatives=60)

    def crossings(dataset):
        valid_in_test = (dataset.test_candidates[:, 1:] == dataset.valid_candidates[:, :1]).any(axis=1)
        test_in_valid = (dataset.valid_candidates[:, 1:] == dataset.test_candidates[:, :1]).any(axis=1)
        return int(valid_in_test.sum() + test_in_valid.sum())

    assert crossings(build_dataset(frames, "in", 0, config)) > 0
    assert crossings(build_dataset(frames, "in", 0, dataclasses.replace(config, held_out_in_negatives=False))) == 0


def test_resampled_training_negatives_are_new_and_still_valid(frames, small_config):
    dataset = build_dataset(frames, "in", 0, small_config)
    fresh = resample_train_negatives(dataset, np.random.default_rng(9), small_config)
    negative = dataset.train_label == 0
    assert len(fresh) == negative.sum()
    assert (fresh != dataset.train_item[negative]).mean() > 0.9
    positives = set(zip(dataset.train_user[~negative], dataset.train_item[~negative]))
    assert not positives & set(zip(dataset.train_user[negative], fresh))


class SpyModel(ACMR):
    """ACMR that records whether any training row's candidate was inside its history."""
    seen_candidate_in_history: list[bool] = []

    def forward(self, users, history_items, candidate_item, market_ids):
        if self.training:
            SpyModel.seen_candidate_in_history.append(bool((history_items == candidate_item[:, None]).any()))
        return super().forward(users, history_items, candidate_item, market_ids)


@pytest.mark.parametrize("include", [True, False])
def test_the_candidate_can_be_left_out_of_its_own_history(include, frames, small_config, tmp_path, monkeypatch):
    monkeypatch.setattr(train_model, "build_model", lambda config, dataset: SpyModel(dataset.num_items, 3))
    SpyModel.seen_candidate_in_history = []
    config = dataclasses.replace(small_config, history_includes_candidate=include, pretrain_epochs=1, finetune_epochs=1,
                                 max_batches_per_epoch=1)
    run_seed(tmp_path, frames, "in", config, torch.device("cpu"), Progress(), None)
    assert any(SpyModel.seen_candidate_in_history) == include


def controlled_run(monkeypatch, tmp_path, frames, config, valid_scores):
    """run_seed with training skipped and validation NDCG@5 taken from `valid_scores`."""
    scores = iter(valid_scores)
    monkeypatch.setattr(train_model, "train_epoch", lambda *args, **kwargs: 0.5)
    monkeypatch.setattr(train_model, "evaluate_candidates",
                        lambda *args, **kwargs: {"HR@5": 0, "HR@10": 0, "NDCG@5": next(scores), "NDCG@10": 0})
    progress = Progress()
    run_seed(tmp_path, frames, "in", config, torch.device("cpu"), progress, None)
    return progress.runs[0]


@pytest.mark.parametrize("resets, epochs", [(False, 6), (True, 8)])
def test_the_early_stopping_budget_can_reset_on_improvement(resets, epochs, frames, small_config, tmp_path, monkeypatch):
    config = dataclasses.replace(small_config, patience_resets=resets, patience=3, pretrain_epochs=20, finetune_epochs=20)
    pretrain = [0.1, 0.05, 0.2, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1]
    run = controlled_run(monkeypatch, tmp_path, frames, config, pretrain[:epochs] + [0.5] * 20)
    assert run["pretrain"]["epochs"] == epochs and run["pretrain"]["best_epoch"] == 5
    assert run["finetune"]["best_epoch"] == 1  # the fine-tuning best score starts at 0 again


def test_training_negatives_are_redrawn_every_epoch_when_asked(frames, small_config, tmp_path, monkeypatch):
    trained_on = []  # the training items each epoch trains on
    original = train_model.train_epoch
    monkeypatch.setattr(train_model, "train_epoch",
                        lambda model, optimizer, data, *args, **kwargs:
                        trained_on.append(data.train_item.clone()) or original(model, optimizer, data, *args, **kwargs))
    negative = torch.as_tensor(build_dataset(frames, "in", 0, small_config).train_label == 0)
    for resample in (False, True):
        trained_on.clear()
        config = dataclasses.replace(small_config, resample_train_negatives=resample, pretrain_epochs=2, finetune_epochs=2,
                                     max_batches_per_epoch=1)
        run_seed(tmp_path, frames, "in", config, torch.device("cpu"), Progress(), None)
        assert len(trained_on) == 4  # both epochs of both stages
        for before, after in zip(trained_on, trained_on[1:]):
            assert torch.equal(before[~negative], after[~negative])  # the positives stay
            # every epoch of both stages but the first draws new negatives
            assert torch.equal(before[negative], after[negative]) != resample


def test_results_break_down_repeat_purchases_and_unseen_items(frames, small_config, tmp_path):
    config = dataclasses.replace(small_config, pretrain_epochs=1, finetune_epochs=1, max_batches_per_epoch=1)
    progress = Progress()
    run_seed(tmp_path, frames, "in", config, torch.device("cpu"), progress, None)
    parts = progress.runs[0]["finetune"]["breakdown"]
    ranks = load_ranks(tmp_path)[0]["finetune"]
    dataset = build_dataset(frames, "in", 0, config)
    # the groups by hand: the test item among the user's own target training positives (repeat),
    # or among any target training positive (seen)
    rows = dataset.target_rows()
    positive = rows[dataset.train_label[rows] == 1]
    bought = {(u, i) for u, i in zip(dataset.train_user[positive], dataset.train_item[positive])}
    test_items = dataset.test_candidates[:, 0]
    repeat = np.array([(u, i) in bought for u, i in zip(dataset.target_users, test_items)])
    seen = np.isin(test_items, dataset.train_item[positive])
    assert 0 < repeat.sum() < len(repeat)
    for name, mask in (("repeat_purchase", repeat), ("new_purchase", ~repeat),
                       ("item_seen_in_target_training", seen), ("item_unseen_in_target_training", ~seen)):
        if not mask.any():
            assert parts[name] is None, name
            continue
        assert parts[name]["users"] == mask.sum(), name
        assert parts[name]["HR@10"] == pytest.approx(np.mean(ranks[mask] <= 10)), name
        assert parts[name]["NDCG@5"] == pytest.approx(np.mean(np.where(ranks[mask] <= 5, 1 / np.log2(ranks[mask] + 1), 0))), name
