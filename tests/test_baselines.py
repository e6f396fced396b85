"""Baselines and ablations: each learns a planted signal better than popularity on synthetic
data, and runs end to end on the real data."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from config import STAGES, Config
from data_loader import build_dataset, load_markets
from model import build_model
from plans.presets import PRESETS
from reporting.metrics import METRICS
from runfolder.checkpoints import Progress
from tests.conftest import synthetic_frames
from train_model import run_seed


def planted_frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Three markets; each user buys 8-12 items of his taste group (one of 4 groups of 25
    items), every item about equally popular: only personalisation beats popularity."""
    rng = np.random.default_rng(seed)
    frames = {}
    for market in ("ca", "de", "in"):
        rows = []
        for u in range(120):
            group = u % 4
            items = rng.choice(25, size=int(rng.integers(8, 13)), replace=False) + 25 * group
            rows += [(f"U{market}{u}", f"I{i:03d}", 5.0, pd.Timestamp("2018-01-01")) for i in items]
        frames[market] = pd.DataFrame(rows, columns=["userId", "itemId", "rate", "date"])
    return frames


def train_and_test(preset: str, config: Config, tmp_path) -> float:
    config = dataclasses.replace(config, **PRESETS[preset])
    progress = Progress(stage=config.stages.split("+")[0])
    run_seed(tmp_path, planted_frames(), "in", config, torch.device("cpu"), progress, None)
    last_stage = config.stages.split("+")[-1]
    return progress.runs[0][last_stage]["HR@10"]


@pytest.fixture(scope="module")
def planted_config() -> Config:
    return Config(eval_negative_pool="target", num_eval_negatives=49, lr=1e-2, batch_size=256,
                  pretrain_epochs=20, finetune_epochs=20, patience=20, seeds=1, dropout=0.1)


# ACMR learns co-occurrences, not user vectors: a slower learning rate. Its training positives
# must not see themselves in their history here: with the authors' leak
# (history_includes_candidate=True) a few epochs teach it "candidate in history => bought",
# which never holds for a held-out item. 3 epochs a stage were at the edge (HR@10 0.13-0.46 over
# dropout seeds); 6 give 0.92-0.98 at one thread. Fine-tuning alone needs more: 10 (6 give 0.21).
ACMR_SETTINGS = {"lr": 3e-3, "pretrain_epochs": 6, "finetune_epochs": 6, "history_includes_candidate": False}
PLANTED = {"gmf": {}, "mlp": {}, "nmf": {}, "gmf++": {}, "forec": {},
           "acmr": ACMR_SETTINGS, "acmr-no-market-embedding": ACMR_SETTINGS,
           "acmr-item-market-embedding": ACMR_SETTINGS,
           "acmr-no-pretraining": {**ACMR_SETTINGS, "finetune_epochs": 10}}


@pytest.fixture(scope="module")
def popularity_hr10(planted_config, tmp_path_factory) -> float:
    return train_and_test("popularity", planted_config, tmp_path_factory.mktemp("popularity"))


# Only GMF trains in seconds; the other baselines take 20-100 s on one CPU core and ACMR's four
# presets (a transformer, 10-12 epochs) tens of seconds each: `slow` (.ci/run runs them).
@pytest.mark.parametrize("preset", [p if p == "gmf" else pytest.param(p, marks=pytest.mark.slow) for p in PLANTED])
def test_each_model_beats_popularity_on_a_planted_signal(preset, planted_config, popularity_hr10, tmp_path):
    assert popularity_hr10 < 0.35  # ~10 of 50 candidates at random
    config = dataclasses.replace(planted_config, **PLANTED[preset])
    assert train_and_test(preset, config, tmp_path) > popularity_hr10 + 0.2


def test_popularity_scores_target_training_counts(frames, small_config):
    dataset = build_dataset(frames, "in", 0, small_config)
    model = build_model(dataclasses.replace(small_config, model="popularity"), dataset)
    target_positive = (dataset.train_label == 1) & (dataset.user_market[dataset.train_user] == dataset.target_id)
    counts = np.bincount(dataset.train_item[target_positive], minlength=dataset.num_items + 1)
    scores = model(None, None, torch.arange(dataset.num_items + 1), None)
    assert scores.tolist() == counts.tolist() and counts[0] == 0 and counts.max() > 1
    assert not list(model.parameters())


def test_item_market_embedding_gives_each_market_its_own_item_vectors(frames, small_config):
    dataset = build_dataset(frames, "in", 0, small_config)
    model = build_model(dataclasses.replace(small_config, market_embedding="item"), dataset)
    assert model.market_embedding.num_embeddings == (dataset.num_items + 1) * len(dataset.markets)
    model.eval()
    item, markets = 5, len(dataset.markets)
    history, candidate = torch.tensor([[3, 4]]), torch.tensor([item])

    def scores() -> list[float]:
        with torch.no_grad():
            return [model(None, history, candidate, torch.tensor([market])).item() for market in range(markets)]

    before = scores()
    with torch.no_grad():
        model.market_embedding.weight[item * markets + 2] += 1.0  # the candidate's vector in market 2 alone
    after = scores()
    assert after[2] != before[2] and after[:2] == before[:2]
    assert not hasattr(build_model(dataclasses.replace(small_config, market_embedding="none"), dataset),
                       "market_embedding")


@pytest.mark.slow  # two GMF trainings of up to 20 epochs
def test_gmf_with_the_tuned_settings_beats_chance_on_a_planted_signal(planted_config, tmp_path):
    # the settings tools/tune.py chose for mx (plans/presets.py), on the planted data: chance is 10 of 50
    # candidates (HR@10 0.2); the untuned preset (N(0, 1) embeddings, lr 1e-3, 3 epochs without
    # improvement in all) stays at it. (in's and jp's GMF settings, a lower lr with weight decay,
    # stop early here at 1024 rows a batch: 0.37 and 0.35; in's reaches 0.94 at 256.)
    chance = 10 / (1 + planted_config.num_eval_negatives)
    data_side = dataclasses.replace(planted_config, lr=Config.lr, batch_size=Config.batch_size,
                                    pretrain_epochs=Config.pretrain_epochs, finetune_epochs=Config.finetune_epochs,
                                    patience=Config.patience)
    assert train_and_test("gmf-tuned-mx", data_side, tmp_path / "tuned") > chance + 0.5
    assert train_and_test("gmf", data_side, tmp_path / "untuned") < chance + 0.1


def test_the_baselines_sizes_and_initialisation_are_settings(frames, small_config):
    dataset = build_dataset(frames, "in", 0, small_config)
    sized = dataclasses.replace(small_config, model="nmf", embedding_size=16, mlp_layers="48,24", embedding_init_std=0.01)
    model = build_model(sized, dataset)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["gmf.user_embedding.weight"] == (len(dataset.user_names), 16)
    assert shapes["mlp.layers.0.weight"] == (48, 32) and shapes["mlp.layers.2.weight"] == (24, 48)
    assert shapes["score.weight"] == (1, 16 + 24)
    assert model.gmf.item_embedding.weight.std().item() == pytest.approx(0.01, rel=0.1)
    # the defaults build the models of before these settings, draw for draw: FOREC's sizes, torch's N(0, 1)
    torch.manual_seed(0)
    default = build_model(dataclasses.replace(small_config, model="mlp"), dataset)
    torch.manual_seed(0)
    user, item = torch.nn.Embedding(len(dataset.user_names), 8), torch.nn.Embedding(dataset.num_items + 1, 8)
    assert torch.equal(default.user_embedding.weight, user.weight) and torch.equal(default.item_embedding.weight, item.weight)
    assert [tuple(p.shape) for p in default.layers.parameters()][::2] == [(64, 16), (32, 64), (16, 32), (8, 16)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_and_scores_each_of_its_stages_on_the_real_data(preset, real_config, tmp_path):
    short = {"seeds": 1, "pretrain_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 1}
    config = dataclasses.replace(real_config, **{**PRESETS[preset], **short})
    progress = Progress(stage=config.stages.split("+")[0])
    run_seed(tmp_path, real_frames(real_config), "in", config, torch.device("cpu"), progress, None)
    assert [stage for stage in progress.runs[0] if stage in STAGES] == config.stages.split("+")
    for stage in config.stages.split("+"):
        scores = progress.runs[0][stage]
        assert set(METRICS) <= set(scores) and all(math.isfinite(scores[metric]) for metric in METRICS)
        # a user's NDCG@k is at most his hit (1 / log2(rank + 1) <= 1), and a hit in the top 5 is one in the top 10
        assert scores["NDCG@5"] <= scores["HR@5"] <= scores["HR@10"] and scores["NDCG@10"] <= scores["HR@10"]


_frames_cache: dict = {}


def real_frames(config):
    if "frames" not in _frames_cache:
        _frames_cache["frames"] = load_markets(config)
    return _frames_cache["frames"]


def test_forec_after_pre_training_is_nmf_plus_plus(tmp_path):
    """report.tuned_table shows FOREC's results after pre-training as NMF++'s (plans/presets.PRETRAINED_AS):
    the same settings with stages=pretrain train the same model and score the same test metrics."""
    config = Config(num_eval_negatives=20, num_train_negatives=2, pretrain_epochs=3, finetune_epochs=2,
                    embedding_init_std=0.01, lr=1e-2, batch_size=128)
    stage_results = {}
    for preset in ("forec", "nmf++"):
        progress = Progress(stage="pretrain")
        (tmp_path / preset).mkdir()
        run_seed(tmp_path / preset, synthetic_frames(), "in", dataclasses.replace(config, **PRESETS[preset]),
                 torch.device("cpu"), progress, None)
        stage_results[preset] = progress.runs[0]
    assert "finetune" in stage_results["forec"] and "finetune" not in stage_results["nmf++"]
    assert stage_results["forec"]["pretrain"] == stage_results["nmf++"]["pretrain"]
