"""Runs that fail: a diverging run stops with one line and no scores; a full disk leaves no
half-written file and says how to resume; files are written whole and as strict JSON."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from config import ELECTRONICS_MARKETS, Config
from files import WriteError, json_text, write_file, write_text
from tests.conftest import REPO
from checkpoints import Progress
from train_model import run_line

TINY = ["--target_market=in", "--seeds=1", "--pretrain_epochs=1", "--finetune_epochs=1",
        "--max_batches_per_epoch=5", "--num_threads=1"]


def train(argv: list[str], data_dir: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train_model.py", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "XMREC_DIR": data_dir}, timeout=900, **kwargs)


def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl's records, read as strict JSON readers read it (no NaN, no Infinity)."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_diverging_run_stops_with_one_line_keeps_its_checkpoint_and_refuses_to_resume(real_config, tmp_path):
    """With a huge learning rate the loss becomes NaN in the first epoch; every score used to be 1.0."""
    result = train([*TINY, "--lr=1e6", f"--log_dir={tmp_path}"], real_config.data_dir)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # after the progress bars
    assert last.startswith("error: seed 0 pretrain epoch 1: the training loss is nan: training diverged, "
                           "most likely because lr=1000000.0 is too large."), result.stderr[-2000:]
    assert "start a new run with a smaller --lr" in last
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "results.json").exists() and (run_dir / "checkpoint.pt").is_file()
    if (run_dir / "metrics.jsonl").exists():
        strict_records(run_dir / "metrics.jsonl")
    result = train([f"--resume={run_dir}"], real_config.data_dir)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {run_dir / 'diverged.txt'}: this run diverged, and a resume continues "
                                     f"exactly, so it would diverge again: start a new run with a smaller --lr (or "
                                     f"delete diverged.txt to resume anyway)")


def limit_file_size() -> None:
    """In the child: files cannot grow past 2 MB, as on a full disk (write fails with EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))


def test_a_full_disk_leaves_no_temporary_file_and_says_how_to_resume(real_config, tmp_path):
    """The first checkpoint with weights (~4 MB) cannot be written; torch.save fails mid-file."""
    result = train([*TINY, f"--log_dir={tmp_path}"], real_config.data_dir, preexec_fn=limit_file_size)
    assert result.returncode == 1
    (run_dir,) = tmp_path.iterdir()
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot write {run_dir / 'checkpoint.pt'}: the write failed (")
    assert result.stderr.strip().endswith(f"; make room on the disk, then continue with: "
                                          f"python train_model.py --resume={run_dir}")
    assert not list(run_dir.rglob("*.tmp"))
    result = train([f"--resume={run_dir}"], real_config.data_dir)  # room again
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True
    assert len(strict_records(run_dir / "metrics.jsonl")) == 2


def test_all_target_markets_end_with_the_table_of_every_market(real_config, tmp_path):
    result = train(["--target_market=all", "--seeds=1", "--model=popularity", "--stages=finetune",
                    f"--log_dir={tmp_path}"], real_config.data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout.split("all target markets:\n")[1]
    assert {line.split()[0] for line in table.splitlines()[3:]} >= {*ELECTRONICS_MARKETS, "average"}


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "old\n")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device \\(\\d+ MB free there\\)"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(WriteError, match="cannot write .*results.json/x.json: File exists"):
        write_text(tmp_path / "results.json" / "x.json", "{}")


def test_json_is_strict_a_number_that_is_not_finite_is_null():
    assert json_text({"loss": float("nan"), "valid": [float("inf"), 0.5]}) == '{"loss": null, "valid": [null, 0.5]}'


def test_the_progress_line_counts_seeds_and_estimates_the_time_left():
    config = Config(seeds=5, first_seed=10)
    progress = Progress(seed=12, stage="finetune", epoch=3, seconds=30.0, runs=[{"seconds": 100.0}, {"seconds": 120.0}])
    assert run_line(config, progress) == ("  in: seed 12 (3 of 5), finetune epoch 3 of at most 50, 4m10s elapsed, "
                                          "about 5m00s left")  # 80 s of this seed, 2 x 110 s
    assert run_line(config, Progress(seed=10, epoch=1, seconds=65.0)).endswith(
        "seed 10 (1 of 5), pretrain epoch 1 of at most 50, 1m05s elapsed, time left: estimated when seed 10 ends")
