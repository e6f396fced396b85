"""Runs that fail: a diverging run stops with one line and no scores; a full disk leaves no
half-written file and says how to resume; Ctrl-C says where the results are or how to go on."""
from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_model
from config import ELECTRONICS_MARKETS, Config, parse_overrides
from reporting.metrics import METRICS
from tests.conftest import REPO, synthetic_frames

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
    assert result.stderr.strip().endswith(f"; once it can be written (room on the disk, permissions), continue with: "
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


def tiny_run(run_dir: Path, frames: dict, lr: float = 1e-3) -> None:
    """One seed of in on the synthetic markets, 3 batches per epoch and one epoch per stage."""
    config = Config(max_history=50, num_eval_negatives=20, num_train_negatives=2, batch_size=128, lr=lr, seeds=1,
                    pretrain_epochs=1, finetune_epochs=1, max_batches_per_epoch=3)
    train_model.run_seeds(run_dir, frames, config, torch.device("cpu"), checkpoint=None)


def test_a_loss_that_explodes_without_reaching_nan_stops_the_run_as_diverged(frames, tmp_path):
    """lr=1e4: a loss of about 1e8 per row with finite weights used to end as a complete run."""
    with pytest.raises(train_model.Diverged) as error:
        tiny_run(tmp_path, frames, lr=1e4)
    assert re.fullmatch(r"seed 0 pretrain epoch 1: the training loss is [0-9.e+]+ per row, over 10 ln 2 = 6\.93 "
                        r"\(an untrained model has about ln 2 = 0\.69\): training diverged, most likely because "
                        r"lr=10000\.0 is too large\. .*", str(error.value))
    assert float(str(error.value).split("loss is ")[1].split()[0]) > 1000
    assert (tmp_path / "diverged.txt").read_text() == f"{error.value}\n"
    assert not (tmp_path / "results.json").exists()


def test_a_stage_in_which_no_epoch_scores_above_zero_stops_instead_of_reporting_its_starting_weights(
        frames, tmp_path, monkeypatch):
    """Every validation positive ranked below 5th in every epoch: best epoch 0 would report the
    untrained weights as the result after pre-training."""
    monkeypatch.setattr(train_model, "evaluate_candidates", lambda *args: dict.fromkeys(METRICS, 0.0))
    with pytest.raises(train_model.Diverged, match=r"^seed 0 pretrain epoch 1: no epoch's validation NDCG@5 rose "
                                                   r"above 0 \(every validation positive ranked below 5th\), so the "
                                                   r"stage learned nothing: training diverged"):
        tiny_run(tmp_path, frames)
    assert (tmp_path / "diverged.txt").is_file() and not (tmp_path / "results.json").exists()


def test_the_exploded_loss_bound_is_far_above_every_committed_epochs_loss():
    losses = [json.loads(line)["loss"] for path in (REPO / "results").glob("**/metrics.jsonl")
              for line in path.read_text().splitlines()]
    assert len(losses) > 10_000 and max(loss for loss in losses if loss is not None) < train_model.EXPLODED_LOSS / 8


def test_ctrl_c_in_the_final_table_says_where_the_results_are_not_how_to_resume_a_deleted_checkpoint(
        frames, tmp_path, monkeypatch, caplog):
    def interrupt(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_model, "comparison_text", interrupt)
    caplog.set_level(logging.INFO, logger="acmr")
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path, frames)
    assert not (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is True
    assert caplog.messages[-1] == (f"interrupted after the run completed: its results are in "
                                   f"{tmp_path / 'results.json'}; its table: python evaluate.py report {tmp_path}")


def test_ctrl_c_during_all_markets_says_how_to_run_the_markets_not_begun(tmp_path, monkeypatch, caplog):
    """Interrupted in de, the second market: fr, in, jp, mx and uk are named, with the command's
    own settings; de's run gets its place (2 of 7) and the seconds of ca's seed."""
    monkeypatch.setattr(train_model, "load_markets", lambda config: synthetic_frames(markets=ELECTRONICS_MARKETS))
    turns = []

    def run_seeds(run_dir, frames, config, device, checkpoint, turn):
        turns.append((turn.number, turn.markets, list(turn.earlier_seeds)))
        if config.target_market == "de":
            raise KeyboardInterrupt
        return [{"seed": 0, "seconds": 42.0}]
    monkeypatch.setattr(train_model, "run_seeds", run_seeds)
    caplog.set_level(logging.INFO, logger="acmr")
    argv = ["--target_market=all", "--seeds=1", "--num_eval_negatives=20", f"--log_dir={tmp_path}", "--num_threads=1"]
    with pytest.raises(KeyboardInterrupt):
        train_model.start(parse_overrides(argv)[0], argv)
    assert turns == [(1, 7, []), (2, 7, [42.0])]
    assert caplog.messages[-1] == (f"the target markets after de were not begun; run them with: for market in fr in "
                                   f"jp mx uk; do python train_model.py --seeds=1 --num_eval_negatives=20 "
                                   f"--log_dir={tmp_path} --num_threads=1 --target_market=$market || break; done")
    assert train_model.later_markets_command(argv, ["uk"]) == (
        f"python train_model.py --seeds=1 --num_eval_negatives=20 --log_dir={tmp_path} --num_threads=1 "
        f"--target_market=uk")
