"""A fixed tiny seeded run gives the committed results exactly: what a refactor must keep.

The golden file holds the test metrics of results.json and every metrics.jsonl record (times
left out) of the run below, as it was before the code was restructured. A change that is meant
to change results (a bug fix, a new default) rewrites it, and says so in its commit:

    XMREC_DIR=../shared/xmrec python -m tests.test_identity --write
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, real_data_dir

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_run.json"
TINY_RUN = ["--target_market=in", "--seeds=1", "--first_seed=3", "--pretrain_epochs=2",
            "--finetune_epochs=2", "--max_batches_per_epoch=4", "--num_threads=1"]
TIMES = ("seconds", "train_seconds")


def tiny_run(data_dir: Path, log_dir: Path) -> Path:
    """Run TINY_RUN in a fresh process; returns its run folder."""
    subprocess.run([sys.executable, "train_model.py", *TINY_RUN, f"--data_dir={data_dir}",
                    f"--log_dir={log_dir}"], cwd=REPO, check=True, capture_output=True, text=True)
    (run_dir,) = log_dir.iterdir()
    return run_dir


def tiny_run_outcome(run_dir: Path) -> dict[str, object]:
    """A run folder's results and epoch records without the times."""
    runs = json.loads((run_dir / "results.json").read_text())["runs"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"runs": [{k: v for k, v in run.items() if k not in TIMES} for run in runs],
            "records": [{k: v for k, v in record.items() if k not in TIMES} for record in records]}


def kept(golden: object, outcome: object) -> object:
    """`outcome` cut to the keys that `golden` has (at every depth): fields added since the
    golden file was written are not compared, every value it holds is."""
    if isinstance(golden, dict) and isinstance(outcome, dict):
        return {key: kept(value, outcome.get(key)) for key, value in golden.items()}
    if isinstance(golden, list) and isinstance(outcome, list) and len(golden) == len(outcome):
        return [kept(g, o) for g, o in zip(golden, outcome)]
    return outcome


@pytest.fixture(scope="module")
def tiny_run_dir(real_config, tmp_path_factory) -> Path:
    return tiny_run(Path(real_config.data_dir), tmp_path_factory.mktemp("log"))


@pytest.mark.slow
def test_a_fixed_tiny_seeded_run_gives_the_committed_results_exactly(tiny_run_dir):
    golden = json.loads(GOLDEN.read_text())
    assert kept(golden, tiny_run_outcome(tiny_run_dir)) == golden


@pytest.mark.slow
def test_the_run_folder_keeps_each_stages_best_weights_with_their_id_maps(tiny_run_dir):
    import torch

    from model import ACMR
    from runfolder.checkpoints import WEIGHTS_FORMAT, weights_path

    results = json.loads((tiny_run_dir / "results.json").read_text())["runs"][0]
    for stage in ("pretrain", "finetune"):
        saved = torch.load(weights_path(tiny_run_dir, 3, stage), weights_only=True)
        assert saved["format"] == WEIGHTS_FORMAT and saved["stage"] == stage and saved["seed"] == 3
        assert saved["best_epoch"] == results[stage]["best_epoch"]
        assert saved["markets"] == ["ca", "de", "fr", "in", "jp", "mx", "uk"] and saved["item_ids"][0] == ""
        model = ACMR(len(saved["item_ids"]) - 1, len(saved["markets"]))
        model.load_state_dict(saved["state_dict"])  # every parameter, of the right shape


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with tempfile.TemporaryDirectory() as folder:
        outcome = tiny_run_outcome(tiny_run(real_data_dir(), Path(folder)))
    GOLDEN.write_text(json.dumps(outcome, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
