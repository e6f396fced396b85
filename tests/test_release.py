"""The project's own release: the fine-tuned weights of seed 0 kept in results/paper's run folders
are that run's model, and rescoring them reproduces the run's committed test metrics exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from config import ELECTRONICS_MARKETS
from data_loader import load_markets
from runfolder.checkpoints import WEIGHTS_FORMAT
from tests.conftest import REPO
from tools.trained import from_weights_file, rescore

RELEASED = sorted((REPO / "results" / "paper").glob("*/seed0_finetune_weights.pt"))


def test_the_release_holds_seed_0_fine_tuned_weights_of_each_of_the_seven_markets():
    markets = sorted(json.loads((path.parent / "config.json").read_text())["target_market"] for path in RELEASED)
    assert markets == sorted(ELECTRONICS_MARKETS)


def test_every_released_weights_file_is_seed_0_fine_tuned_of_the_run_folder_it_sits_in():
    assert RELEASED, "results/paper holds no released weights (seed0_finetune_weights.pt)"
    for path in RELEASED:
        folder_config = json.loads((path.parent / "config.json").read_text())
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert payload["format"] == WEIGHTS_FORMAT
        trained = from_weights_file(path)
        assert (trained.seed, trained.stage) == (0, "finetune")  # what the payload says, not the file name
        assert trained.config.target_market == folder_config["target_market"]
        assert (trained.config.first_seed, trained.config.seeds) == (folder_config["first_seed"], folder_config["seeds"]) == (0, 1)
        logged = json.loads((path.parent / "results.json").read_text())["runs"][0]
        assert trained.best_epoch == logged["finetune"]["best_epoch"]


@pytest.mark.slow
@pytest.mark.parametrize("path", RELEASED, ids=[path.parent.name for path in RELEASED])
def test_rescoring_released_weights_reproduces_the_runs_committed_test_metrics_exactly(path, real_config):
    logged = json.loads((path.parent / "results.json").read_text())["runs"][0]["finetune"]
    ran_on = json.loads((path.parent / "environment.json").read_text())["device"]  # exact on the same device kind
    rescored = rescore(path.parent, seeds=[0], stages=["finetune"], frames=load_markets(real_config),
                       device=torch.device(ran_on))["runs"][0]["finetune"]
    for metric in ("HR@5", "HR@10", "NDCG@5", "NDCG@10"):
        assert rescored[metric] == logged[metric], metric


@pytest.mark.slow  # starts a process
def test_the_readmes_example_loads_the_release_and_prints_a_users_top_10(real_config):
    readme = (REPO / "README.md").read_text()
    example = readme.split("```python\nfrom tools.trained import", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", "from tools.trained import" + example], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "XMREC_DIR": real_config.data_dir})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [int(row[2]) for row in rows] == list(range(1, 11))  # index, user, rank, item, score
    assert {row[1] for row in rows} == {"AF5LCYDTUOE5OISH7WTSYTYKDE3Q"}


@pytest.mark.slow  # starts a process
def test_the_recommendations_docs_running_shows_are_what_the_released_in_model_prints(real_config, tmp_path):
    text = (REPO / "docs" / "RUNNING.md").read_text()
    command = next(line for line in text.splitlines()
                   if line.startswith("python -m tools.trained recommend --run=results/paper/"))
    shown = text.split(command, 1)[1].split("```\n```\n", 1)[1].split("```", 1)[0].splitlines()
    args = [arg for arg in command.split()[3:] if not arg.startswith("--out=")]
    result = subprocess.run([sys.executable, "-m", "tools.trained", *args, f"--out={tmp_path / 'top.json'}",
                             "--num_threads=1"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "XMREC_DIR": real_config.data_dir})
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.splitlines()
    assert printed[:2] == shown[:2]  # the source line and the header
    rows = [line.split() for line in shown[2:] if line != "..." and not line.startswith("wrote ")]
    assert rows, "RUNNING.md shows no recommendation"
    for user, rank, item, score in rows:
        (line,) = [line.split() for line in printed if line.split()[:3] == [user, rank, item]]
        assert float(line[3]) == pytest.approx(float(score), abs=2e-6), line
