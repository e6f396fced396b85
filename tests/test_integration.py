"""A tiny end-to-end run on the real XMarket data: its run folder is complete and its candidates are
those data_loader.py exports."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reporting.metrics import METRICS
from tests.conftest import REPO


def run(args: list[str], config) -> subprocess.CompletedProcess:
    env = {**os.environ, "XMREC_DIR": config.data_dir}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tiny_run(real_config, tmp_path_factory):
    """Target `in`, one seed, two epochs per stage of at most 4 batches each."""
    log_dir = tmp_path_factory.mktemp("log")
    args = ["--target_market=in", "--seeds=1", "--num_epochs=2", "--max_batches_per_epoch=4",
            f"--log_dir={log_dir}"]
    result = run(["train_model.py", *args], real_config)
    (run_dir,) = log_dir.iterdir()
    return run_dir, result, args


def test_tiny_run_writes_a_complete_run_folder(tiny_run):
    run_dir, result, args = tiny_run
    assert run_dir.name.startswith("acmr-in-seed0-")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "command.txt", "config.json", "environment.json", "metrics.jsonl", "ranks.json", "results.json",
        "seed0", "seed0_finetune_weights.pt", "seed0_pretrain_weights.pt", "train.log"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["target_market"] == "in" and config["pretrain_epochs"] == config["finetune_epochs"] == 2 and config["lr"] == 1e-3
    assert (run_dir / "command.txt").read_text().strip() == "python train_model.py " + " ".join(args)
    environment = json.loads((run_dir / "environment.json").read_text())
    assert {"python", "torch", "numpy", "pandas", "device", "git_commit"} <= set(environment)
    assert environment["device"] == "cpu"
    log = (run_dir / "train.log").read_text()
    assert "seed 0 pretrain epoch  1" in log and "seed 0 finetune test" in log
    assert "[0.7824]" in log  # the authors' fine-tuned HR@5 for `in`, beside ours
    assert log.strip().splitlines()[-1] in result.stdout


def test_tiny_run_records_each_epoch_and_its_test_metrics_are_those_of_its_saved_ranks(tiny_run):
    run_dir, _, _ = tiny_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (seed_run,) = json.loads((run_dir / "results.json").read_text())["runs"]
    assert [(r["stage"], r["epoch"]) for r in records] == [  # every epoch of each stage, once, in order
        (stage, epoch) for stage in ("pretrain", "finetune") for epoch in range(1, seed_run[stage]["epochs"] + 1)]
    for record in records:
        assert record["seed"] == 0 and record["loss"] > 0 and record["seconds"] > 0
        assert set(record["valid"]) == set(METRICS)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["target_market"] == "in" and results["seeds"] == [0]
    (seed_run,) = results["runs"]
    ranks_json = json.loads((run_dir / "ranks.json").read_text())
    assert seed_run["seconds"] > 0
    for stage in ("pretrain", "finetune"):
        assert set(METRICS) <= set(seed_run[stage])
        assert 1 <= seed_run[stage]["epochs"] <= 2
        ranks = np.array(ranks_json["seeds"]["0"][stage].split(), dtype=int)  # 1-based, of 100 candidates
        assert len(ranks) == 239 and ranks.min() >= 1 and ranks.max() <= 100
        for k in (5, 10):  # by hand: a hit is a rank <= k, worth 1 / log2(rank + 1) in NDCG
            assert seed_run[stage][f"HR@{k}"] == pytest.approx(np.mean(ranks <= k), abs=1e-9)
            ndcg = np.where(ranks <= k, 1 / np.log2(ranks + 1), 0.0).mean()
            assert seed_run[stage][f"NDCG@{k}"] == pytest.approx(ndcg, abs=1e-9)
        for metric in METRICS:
            assert results["summary"][stage][metric] == {"mean": seed_run[stage][metric], "std": None}


def test_tiny_run_candidates_are_those_the_data_loader_exports(tiny_run, real_config, tmp_path):
    run_dir, _, _ = tiny_run
    run(["data_loader.py", "--target_market=in", "--seed=0", f"--export={tmp_path}"], real_config)
    for split in ("valid", "test"):
        ours = pd.read_csv(run_dir / "seed0" / f"{split}_candidates.tsv.gz", sep="\t")
        exported = pd.read_csv(tmp_path / f"{split}_candidates.tsv.gz", sep="\t")
        assert list(ours.columns) == ["user_id", "positive", "negatives"]
        assert len(ours) == 239
        assert (ours["negatives"].str.split(" ").str.len() == 99).all()
        pd.testing.assert_frame_equal(ours, exported)
