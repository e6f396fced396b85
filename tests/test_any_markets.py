"""Any cross-market data in XMarket's format: markets of other names, number and sizes, through
both stages and the report, with no authors' numbers beside them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, synthetic_frames

SIZES = {"aa": 40, "bb": 25, "cc": 12}  # users per market


def write_markets(folder: Path) -> None:
    """One `<market>_5core.txt` per market of SIZES, in the release's format."""
    folder.mkdir()
    for i, (market, users) in enumerate(SIZES.items()):
        frame = synthetic_frames(seed=i, markets=(market,), users_per_market=users, num_items=1000)[market]
        frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(
            folder / f"{market}_5core.txt", sep=" ", index=False, header=["userId", "itemId", "rate", "date"])


@pytest.mark.slow  # starts processes
def test_a_tiny_run_on_three_other_markets_trains_both_stages_and_reports(tmp_path):
    write_markets(tmp_path / "data")
    log_dir = tmp_path / "log"
    train = subprocess.run(
        [sys.executable, "train_model.py", f"--data_dir={tmp_path / 'data'}", "--data_markets=aa,bb,cc",
         "--target_market=bb", "--seeds=1", "--pretrain_epochs=1", "--finetune_epochs=1",
         "--max_batches_per_epoch=2", "--batch_size=256", "--num_layers=1", "--num_eval_negatives=20",
         "--num_threads=1", f"--log_dir={log_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    files = ", ".join(str(tmp_path / "data" / f"{m}_5core.txt") for m in SIZES)
    notes = [line for line in train.stderr.splitlines() if line.startswith("note: ")]  # besides progress bars
    assert notes == [f"note: {files}: not files of the XMarket Electronics release (data/SHA256SUMS), used "
                     f"without a checksum"]
    no_authors = ("No authors' numbers for the runs on data_markets=aa,bb,cc: the authors logged runs on the "
                  "seven XMarket Electronics markets (ca,de,fr,in,jp,mx,uk) only.")
    assert train.stdout.count(no_authors) == 1 and "nan" not in train.stdout
    (run_dir,) = log_dir.glob("*-bb-seed*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] and set(results["runs"][0]) >= {"pretrain", "finetune"}
    import torch
    saved = torch.load(run_dir / "seed0_finetune_weights.pt", weights_only=True)
    assert saved["markets"] == ["aa", "bb", "cc"]  # market ids sorted by name

    report = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={log_dir}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (log_dir / "report.md").read_text()
    assert text.count(no_authors) == 1 and "nan" not in text
    assert "| bb | after pre-training | 1 |" in text and "| bb | after fine-tuning | 1 |" in text
    assert "Markets without runs: aa, cc." in text

    table = subprocess.run([sys.executable, "-m", "tools.trained", "protocol-table", f"--runs={run_dir}",
                            f"--data_dir={tmp_path / 'data'}", "--num_threads=1"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert table.returncode == 0, table.stderr[-2000:]  # the runs' own markets are read, not config.py's
    rows = [line for line in table.stdout.splitlines() if line.startswith("| bb | ")]
    assert len(rows) == 3 and rows[0].startswith("| bb | 1 + 20 sampled, negatives from all markets (the run's) | ")
