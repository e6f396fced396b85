"""tools/tune.py: the search on Ray Tune records every trial and chooses by validation alone; a trial
trains exactly as a run does; the tuned presets are the committed search's choices."""
from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from config import RUN_ONLY_SETTINGS, SELECTION_SETTINGS, Config, ConfigError
from data_loader import build_dataset
from plans.presets import PRESETS, TUNED, TUNED_NAMES, tuned_names
from reporting import report
from runfolder.checkpoints import Progress
from runfolder.migration import upgrade_saved
from tests.conftest import REPO, synthetic_frames
from tools import tune
from train_model import run_seed


def fabricated_objective(settings: dict, frames, checkpoint_dir) -> dict:
    """Validation prefers lr near 1e-3; the `test` number prefers the opposite and must never
    decide (nor be recorded)."""
    score = 1.0 - abs(math.log10(settings["lr"]) + 3)
    return {tune.OBJECTIVE: score, "best_epoch": 1, "epochs": 1, "valid_at_best_epoch": {}, "seconds": 0.0,
            "valid_NDCG@5_curve": [score], "test NDCG@5": -score}


@pytest.mark.slow
def test_the_search_records_every_trial_and_chooses_by_validation_alone(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        search = dict(trials=4, seed=7, base={"num_threads": 1}, objective=fabricated_objective,
                      storage=tmp_path / "ray")
        record = tune.run_search("mlp", "in", tmp_path / "out", **search)
        printed = capsys.readouterr().out.splitlines()
        again = tune.run_search("mlp", "jp", tmp_path / "again", at_once=2, **search)
    finally:
        ray.shutdown()
    for number, trial in enumerate(record["all_trials"], 1):  # a line as each trial starts and as it ends
        name = tune.trial_name("mlp", trial["settings"])
        assert (f"mlp in trial {number} of 4: {trial['sampled']}; its epochs, while it trains: "
                f"{tmp_path / 'out' / 'trials' / tune.UNFINISHED / name / tune.EPOCH_LOG}") in printed
        assert f"mlp in trial {number} of 4: valid NDCG@5 {trial['result'][tune.OBJECTIVE]:.4f} after 1 epochs, 0 s" in printed
    trials = record["all_trials"]
    assert [t["trial"] for t in trials] == list(range(4))
    # seeded draws, numbered in the order drawn, whether one trial runs at a time or two
    assert [(t["sampled"], t["result"]) for t in trials] == [(t["sampled"], t["result"]) for t in again["all_trials"]]
    for trial in trials:
        sampled = trial["sampled"]
        assert 1e-4 <= sampled["lr"] <= 3e-2 and sampled["embedding_size"] in (8, 16, 32, 64)
        assert sampled["mlp_layers"] in tune.LAYERS[1] and sampled["weight_decay"] in tune.COMMON_SPACE["weight_decay"][1]
        assert trial["settings"]["patience_resets"] is True and trial["settings"]["num_threads"] == 1
        assert "test NDCG@5" not in trial["result"]  # the test number is neither used nor kept
    best = max(trials, key=lambda t: 1.0 - abs(math.log10(t["sampled"]["lr"]) + 3))
    assert record["chosen_trial"] == best["trial"] and record["chosen"]["lr"] == best["sampled"]["lr"]
    assert record["chosen"]["model"] == "mlp" and record["chosen"]["embedding_init_std"] == 0.01
    assert json.loads((tmp_path / "out" / "mlp-in.json").read_text()) == record
    chosen = tune.write_tables(tmp_path / "out")
    assert chosen == {"mlp": {"in": record["chosen"]}}
    rows = list(csv.DictReader((tmp_path / "out" / "trials.csv").open()))
    assert len(rows) == 4 and sum(int(r["chosen"]) for r in rows) == 1
    assert any("| mlp | in |" in line for line in report.search_lines(tmp_path / "out"))
    assert report.search_lines.__defaults__ == (tune.SEARCH_DIR,)  # the report reads where tune writes


@pytest.mark.slow
def test_a_trial_that_fails_is_started_again_within_the_search(tmp_path):
    ray = pytest.importorskip("ray")
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def fails_once_per_trial(settings: dict, frames, checkpoint_dir) -> dict:
        first = not (attempts / checkpoint_dir.name).exists()
        (attempts / checkpoint_dir.name).touch()
        if first:  # as a worker that is killed or loses its connection
            raise RuntimeError("the worker is lost")
        return fabricated_objective(settings, frames, checkpoint_dir)

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="error",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        record = tune.run_search("gmf", "in", tmp_path / "out", trials=2, seed=7, base={"num_threads": 1},
                                 objective=fails_once_per_trial, storage=tmp_path / "ray")
    finally:
        ray.shutdown()
    assert len(list(attempts.iterdir())) == 2 and len(record["all_trials"]) == 2
    assert [t["result"] for t in record["all_trials"]] == [
        {k: v for k, v in fabricated_objective(t["settings"], None, None).items() if k in tune.RESULT_KEYS}
        for t in record["all_trials"]]


def test_choosing_reads_validation_only_and_prefers_the_earlier_trial_on_a_tie():
    trials = [{"trial": i, "result": {tune.OBJECTIVE: score, "test NDCG@5": 1.0 - score}}
              for i, score in enumerate([0.2, 0.5, 0.5, 0.1])]
    assert tune.choose(trials)["trial"] == 1


def test_a_trial_gives_the_numbers_of_a_runs_stages(tmp_path):
    """Both share train_model.train_stage; this checks what each puts around it (the generators,
    the data, the stages in turn, each from the previous one's best epoch)."""
    frames = synthetic_frames()
    config = Config(**{**PRESETS["forec"], **tune.fixed_settings("forec"), "patience": 2, "pretrain_epochs": 8,
                       "finetune_epochs": 5}, lr=1e-2, embedding_size=16, mlp_layers="32,16", num_eval_negatives=20,
                    num_train_negatives=2, num_threads=1)
    assert config.stages == "pretrain+finetune" and config.embedding_init_std == 0.01
    trial = tune.validation_run(config, frames, seed=1)
    progress = Progress(seed=1, stage="pretrain")
    run_seed(tmp_path, frames, "in", config, torch.device("cpu"), progress, None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    pretrain = progress.runs[0]["pretrain"]
    assert pretrain["best_epoch"] < pretrain["epochs"]  # fine-tuning starts from an earlier epoch's weights
    assert trial["valid_NDCG@5_curve"] == [round(r["valid"]["NDCG@5"], 6) for r in records]
    finetune = progress.runs[0]["finetune"]
    assert (trial["epochs"], trial["best_epoch"]) == (pretrain["epochs"] + finetune["epochs"],
                                                      finetune["best_epoch"])
    assert trial[tune.OBJECTIVE] == max(r["valid"]["NDCG@5"] for r in records if r["stage"] == "finetune")
    (at_best,) = [r for r in records if (r["stage"], r["epoch"]) == ("finetune", finetune["best_epoch"])]
    assert trial["valid_at_best_epoch"] == at_best["valid"]


def test_a_trial_that_diverges_ends_there_and_one_that_ends_before_its_last_stage_scores_0():
    config = Config(**{**PRESETS["forec"], **tune.fixed_settings("forec")}, lr=1e4, embedding_size=16,
                    mlp_layers="32,16", num_eval_negatives=20, num_train_negatives=2, num_threads=1)
    trial = tune.validation_run(config, synthetic_frames(), seed=1)  # lr=1e4: the loss explodes in epoch 1
    assert trial["valid_NDCG@5_curve"] == [None] and trial["epochs"] == 1
    assert (trial[tune.OBJECTIVE], trial["best_epoch"], trial["valid_at_best_epoch"]) == (0.0, 0, {})


def test_the_cross_market_trials_keep_their_preset_and_train_every_stage_as_ncf():
    gmf_pp = tune.trial_settings("gmf++", "jp", {"lr": 0.01}, {"num_threads": 1})
    assert (gmf_pp["model"], gmf_pp["stages"], gmf_pp["pretrain_epochs"]) == ("gmf", "pretrain", 100)
    forec = tune.trial_settings("forec", "jp", {"lr": 0.01}, {})
    assert (forec["model"], forec.get("stages", "pretrain+finetune"), forec["finetune_epochs"]) == ("nmf", "pretrain+finetune", 100)
    assert tune.trial_settings("gmf", "jp", {}, {})["stages"] == "finetune"  # as before: the target alone
    # the trained presets are what such a trial trains at FOREC's learning rates
    assert PRESETS["forec-trained"] == {**PRESETS["forec"], **tune.CROSS_MARKET_FIXED, "lr": 1e-2}
    assert PRESETS["gmf++-trained"] == {**PRESETS["gmf++"], **tune.CROSS_MARKET_FIXED, "lr": 5e-3}
    assert tune.preset_settings("forec", {**forec, "lr": 0.01, "embedding_size": 8, "weight_decay": 1e-7,
                                          "mlp_layers": "64,32,16,8"}) == {"model": "nmf", **tune.CROSS_MARKET_FIXED,
                                                                           "lr": 0.01}


def test_another_number_of_training_negatives_draws_other_candidates_the_searched_settings_do_not(frames):
    base = Config(num_eval_negatives=20, num_train_negatives=4)
    reference = build_dataset(frames, "in", 0, base)
    fewer = build_dataset(frames, "in", 0, dataclasses.replace(base, num_train_negatives=2))
    assert not np.array_equal(reference.test_candidates, fewer.test_candidates)  # hence not searched
    searched = dataclasses.replace(base, **tune.FIXED, lr=0.02, embedding_size=64, weight_decay=1e-4,
                                   mlp_layers="256,128,64", model="nmf")
    other = build_dataset(frames, "in", 0, searched)
    assert np.array_equal(reference.test_candidates, other.test_candidates)
    assert np.array_equal(reference.valid_candidates, other.valid_candidates)
    for model, market in TUNED:  # each tuned preset scores ACMR's candidates (config.py's defaults)
        tuned = build_dataset(frames, "in", 0, dataclasses.replace(base, **PRESETS[TUNED_NAMES[(model, market)]]))
        assert np.array_equal(reference.test_candidates, tuned.test_candidates)


def test_the_tuned_presets_are_the_committed_choices_and_name_their_runs():
    from reporting import runs

    chosen = json.loads((tune.SEARCH_DIR / "chosen.json").read_text())
    assert {(model, market) for model in chosen for market in chosen[model]} == set(TUNED)
    defaults = dataclasses.asdict(Config())
    for model, market in TUNED:
        name = TUNED_NAMES[(model, market)]
        assert PRESETS[name] == chosen[model][market] and market in name.split("-tuned-")[1].split("+")
        assert all(value != defaults[key] for key, value in PRESETS[name].items())  # else the report misnames it
        run_config = {**defaults, **PRESETS[name], "target_market": market}
        assert runs.best_preset(runs.result_settings(run_config)) == name


def test_each_tuned_preset_is_the_settings_its_committed_runs_ran_with():
    """The tuned presets, built from chosen.json, are exactly (the learning rates to the last digit)
    the settings that results/baselines' runs of them recorded in their config.json, seeds 0-2 on
    each market of the preset."""
    not_experiment = {*RUN_ONLY_SETTINGS, *SELECTION_SETTINGS}
    committed = []  # (market, seed, settings that change results) of each run folder
    for path in sorted((REPO / "results" / "baselines").glob("*/config.json")):
        saved = upgrade_saved(json.loads(path.read_text()))
        committed.append((saved["target_market"], saved["first_seed"],
                          {k: v for k, v in saved.items() if k not in not_experiment}))
    defaults = dataclasses.asdict(Config())
    assert len(TUNED) == 15  # gmf, mlp, nmf, gmf++, forec on in, jp, mx
    for model, market in TUNED:
        preset = {k: v for k, v in {**defaults, **PRESETS[TUNED_NAMES[(model, market)]]}.items()
                  if k not in not_experiment}
        seeds = sorted(seed for other_market, seed, settings in committed if other_market == market and settings == preset)
        assert seeds == [0, 1, 2], f"{TUNED_NAMES[(model, market)]} on {market}: committed seeds {seeds}"


def test_the_fixed_settings_are_those_the_committed_searches_ran_with():
    records = [json.loads(path.read_text()) for path in sorted(tune.SEARCH_DIR.glob("*-*.json"))
               if path.name != "chosen.json"]
    assert {record["model"] for record in records} == {"gmf", "mlp", "nmf", "gmf++", "forec"}
    for record in records:  # in the same order too: a new search writes its records alike
        assert list(record["fixed"].items()) == [*tune.fixed_settings(record["model"]).items(), ("num_threads", 1)]


def test_markets_whose_searches_chose_the_same_settings_share_a_preset():
    names = tuned_names({("mlp", "jp"): {"lr": 0.5}, ("mlp", "mx"): {"lr": 0.5}, ("mlp", "in"): {"lr": 0.25},
                         ("nmf", "jp"): {"lr": 0.5}})
    assert names == {("mlp", "in"): "mlp-tuned-in", ("mlp", "jp"): "mlp-tuned-jp+mx",
                     ("mlp", "mx"): "mlp-tuned-jp+mx", ("nmf", "jp"): "nmf-tuned-jp"}


def test_an_acmr_trial_has_the_baselines_early_stopping_and_searches_acmrs_own_settings():
    settings = tune.trial_settings("acmr", "in", {"lr": 3e-3, "dropout": 0.2, "weight_decay": 0.0}, {"num_threads": 1})
    assert (settings.get("model", "acmr"), settings.get("stages", "pretrain+finetune")) == ("acmr", "pretrain+finetune")
    assert (settings["patience_resets"], settings["patience"]) == (True, tune.FIXED["patience"])
    assert (settings["pretrain_epochs"], settings["finetune_epochs"]) == (50, tune.FIXED["finetune_epochs"])
    assert set(tune.SEARCH_SPACE["acmr"]) == {"lr", "dropout", "weight_decay"}
    chosen = tune.preset_settings("acmr", {**settings, "dropout": 0.3, "weight_decay": 1e-7})
    # the paper's dropout, weight decay and pre-training cap are config.py's defaults: not repeated
    assert chosen == {"patience_resets": True, "patience": 10, "finetune_epochs": 100, "lr": 3e-3}


def test_a_finished_trial_is_taken_from_its_file_and_not_trained_again(tmp_path):
    calls = []

    def objective(settings: dict, frames, checkpoint_dir) -> dict:
        assert checkpoint_dir.is_dir() and checkpoint_dir.parent == tmp_path / tune.UNFINISHED
        calls.append(settings["lr"])
        return {tune.OBJECTIVE: settings["lr"] * 10, "epochs": 3}

    first = tune.trial_settings("acmr", "in", {"lr": 1e-3}, {"num_threads": 1})
    assert tune.finished_or_run("acmr", first, None, objective, tmp_path) == {tune.OBJECTIVE: 1e-2, "epochs": 3}
    again = {**first, "num_threads": 2}  # where and how fast it runs: the same trial
    assert tune.finished_or_run("acmr", again, None, objective, tmp_path) == {tune.OBJECTIVE: 1e-2, "epochs": 3}
    assert calls == [1e-3]
    other = {**first, "lr": 2e-3}
    assert tune.finished_or_run("acmr", other, None, objective, tmp_path)[tune.OBJECTIVE] == 2e-2
    assert calls == [1e-3, 2e-3] and len(list(tmp_path.glob("*.json"))) == 2
    assert not any((tmp_path / tune.UNFINISHED).iterdir())  # a finished trial's checkpoint is deleted


class Stopped(Exception):
    """The process ends here (a kill, the end of a session)."""


@pytest.mark.parametrize("stopped_after", [2, 4, 5])  # saves: pre-training epochs 1-3, the stage's end, fine-tuning
def test_a_trial_stopped_after_a_checkpoint_continues_from_it_to_the_same_result(stopped_after, small_config, frames,
                                                                                 tmp_path, monkeypatch):
    config = dataclasses.replace(small_config, **{**PRESETS["acmr"], **tune.fixed_settings("acmr"),
                                                  "pretrain_epochs": 3, "finetune_epochs": 4, "num_threads": 1,
                                                  "num_layers": 1, "max_history": 10, "batch_size": 512})
    whole = tune.validation_run(config, frames, seed=1)
    saves, save_progress = [], tune.save_progress

    def save_then_stop(*args) -> None:
        save_progress(*args)
        saves.append(1)
        if len(saves) == stopped_after:
            raise Stopped

    monkeypatch.setattr(tune, "save_progress", save_then_stop)
    with pytest.raises(Stopped):
        tune.validation_run(config, frames, seed=1, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    resumed = tune.validation_run(config, frames, seed=1, checkpoint_dir=tmp_path)
    assert whole["epochs"] == 3 + 4 and whole[tune.OBJECTIVE] > 0
    log = (tmp_path / tune.EPOCH_LOG).read_text().splitlines()  # the epoch the stop cut short is logged once
    assert [line.split(":")[0] for line in log] == [f"pretrain epoch {e}" for e in (1, 2, 3)] + [
        f"finetune epoch {e}" for e in (1, 2, 3, 4)]
    assert log[-1].startswith(f"finetune epoch 4: valid NDCG@5 {whole['valid_NDCG@5_curve'][-1]:.4f} (best ")
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in whole.items() if k != "seconds"}


@pytest.mark.parametrize("arg, message", [
    ("--target_market=jp", "--target_market: the markets searched are --markets=M,M"),
    ("--model=mlp", "--model: the models searched are --models=M,M"),
    ("--first_seed=5", "--first_seed: every trial trains and validates on seed 0's split"),
    ("--init_weights=authors:in:pretrain", "--init_weights: every trial starts from a fresh initialisation"),
    ("--resample_train_negatives=true", "--resample_train_negatives: a search trial draws its training negatives once"),
])
def test_settings_the_search_sets_itself_are_refused_before_any_trial(arg, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        tune.main(["--models=gmf", "--markets=in", arg, f"--out={tmp_path / 'search'}"])
    assert str(error.value) == message
    assert not (tmp_path / "search").exists()


def test_data_a_trial_would_fail_on_is_refused_before_any_trial(real_config, tmp_path):
    with pytest.raises(ConfigError, match="^num_eval_negatives=9000: the global pool of in holds"):
        tune.main(["--models=gmf", "--markets=in", "--num_eval_negatives=9000", f"--out={tmp_path / 'search'}"])
    assert not (tmp_path / "search").exists()
