"""Interrupted runs: killed (SIGKILL) at several points or stopped with Ctrl-C, then resumed
with --resume, end with exactly the results of an uninterrupted run."""
from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from config import Config, ConfigError
from runfolder.checkpoints import (
    CheckpointError,
    Progress,
    load_checkpoint,
    resume_config,
    save_checkpoint,
)
from runfolder.environment import continue_run_folder
from tests.conftest import REPO
from train_model import check_candidates, keep_lines

# small batches and 19 evaluation negatives: a run's time goes to starting up, not to the model
SETTINGS = ["--target_market=in", "--seeds=2", "--num_epochs=2", "--max_batches_per_epoch=3", "--batch_size=256",
            "--num_eval_negatives=19", "--num_threads=1"]


def _child(argv: list[str], kill_at: str, data_dir: str) -> None:
    """Runs train_model.main in a fresh interpreter and SIGKILLs itself at `kill_at`."""
    os.environ["XMREC_DIR"] = data_dir
    import train_model

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if kill_at == "mid-epoch":  # the 5th optimizer step: in the 2nd pre-training epoch
        original_step, steps = torch.optim.Adam.step, [0]

        def step(self, *args, **kwargs):
            steps[0] += 1
            if steps[0] == 5:
                die()
            return original_step(self, *args, **kwargs)
        torch.optim.Adam.step = step
    elif kill_at in ("between-stages", "between-seeds"):
        original_save = train_model.save_checkpoint

        def save(run_dir, config, progress, *args, **kwargs):
            original_save(run_dir, config, progress, *args, **kwargs)
            if kill_at == "between-stages" and progress.stage == "finetune" and progress.epoch == 0:
                die()
            if kill_at == "between-seeds" and progress.seed == 1:
                die()
        train_model.save_checkpoint = save
    elif kill_at == "checkpoint-write":  # the 4th checkpoint: half written, then killed
        original_torch_save, saves = torch.save, [0]

        def half_save(payload, path):
            saves[0] += 1
            if saves[0] < 4:
                return original_torch_save(payload, path)
            buffer = io.BytesIO()
            original_torch_save(payload, buffer)
            Path(path).write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            die()
        torch.save = half_save
    train_model.main(argv)


def run_in_child(argv: list[str], kill_at: str, data_dir: str) -> int:
    process = multiprocessing.get_context("spawn").Process(target=_child, args=(argv, kill_at, data_dir))
    process.start()
    process.join(timeout=1200)  # a busy machine: 300 s were once too few
    return process.exitcode


def train(argv: list[str], data_dir: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "train_model.py", *argv], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "XMREC_DIR": data_dir})
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def outcome(run_dir: Path) -> tuple[list, list]:
    """The results and the per-epoch records without their timings."""
    results = json.loads((run_dir / "results.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        del record["seconds"], record["train_seconds"]
    for run in results["runs"]:
        run.pop("seconds", None)
    return results["runs"], records


@pytest.fixture(scope="module")
def uninterrupted(real_config, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("straight")
    train([*SETTINGS, f"--log_dir={log_dir}"], real_config.data_dir)
    (run_dir,) = log_dir.iterdir()
    return outcome(run_dir)


@pytest.mark.parametrize("kill_at", ["mid-epoch", "between-stages", "checkpoint-write", "between-seeds"])
def test_a_killed_run_resumes_to_the_same_results(kill_at, uninterrupted, real_config, tmp_path):
    exitcode = run_in_child([*SETTINGS, f"--log_dir={tmp_path}"], kill_at, real_config.data_dir)
    assert exitcode == -signal.SIGKILL
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "checkpoint.pt").is_file()
    assert not (run_dir / "results.json").exists() or kill_at == "between-seeds"
    if kill_at == "between-seeds":  # seed 0's results, which must not look like a finished run
        assert json.loads((run_dir / "results.json").read_text())["complete"] is False
    result = train([f"--resume={run_dir}"], real_config.data_dir)
    assert "resuming" in result.stdout
    assert outcome(run_dir) == uninterrupted
    assert "in: seed 1 (2 of 2), finetune epoch 2 of at most 2" in result.stdout  # the whole run's progress
    assert not (run_dir / "checkpoint.pt").exists()
    assert not list(run_dir.glob("*.tmp"))
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True


def test_ctrl_c_saves_prints_the_resume_command_and_resumes(uninterrupted, real_config, tmp_path):
    log_dir = tmp_path / "a log folder"  # the printed command must survive the shell
    process = subprocess.Popen([sys.executable, "train_model.py", *SETTINGS, f"--log_dir={log_dir}"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "XMREC_DIR": real_config.data_dir})
    deadline = time.time() + 600  # interrupt during training, after the first epoch's record
    while not list(log_dir.glob("*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(log_dir.glob("*/metrics.jsonl")), "no epoch finished in 600 s"
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    (run_dir,) = log_dir.iterdir()
    command = stdout.split("continue with: ")[1].splitlines()[0]
    assert shlex.split(command) == ["python", "train_model.py", f"--resume={run_dir}"]
    train(shlex.split(command)[2:], real_config.data_dir)
    assert (run_dir / "command.txt").read_text().splitlines()[-1] == command
    assert outcome(run_dir) == uninterrupted
    environment = json.loads((run_dir / "environment.json").read_text())
    assert len(environment["resumed"]) == 1 and "git_commit" in environment["resumed"][0]


def test_resume_refuses_other_settings_and_broken_checkpoints(real_config, tmp_path):
    exitcode = run_in_child([*SETTINGS, f"--log_dir={tmp_path}"], "between-stages", real_config.data_dir)
    assert exitcode == -signal.SIGKILL
    (run_dir,) = tmp_path.iterdir()
    result = train([f"--resume={run_dir}", "--lr=0.01"], real_config.data_dir, check=False)
    assert result.returncode != 0
    assert "error: --lr=0.01 differs from the run folder's lr=0.001" in result.stderr

    descriptor = os.open(run_dir, os.O_RDONLY)  # another process working in the folder
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    result = train([f"--resume={run_dir}"], real_config.data_dir, check=False)
    os.close(descriptor)
    assert result.returncode != 0 and (run_dir / "checkpoint.pt").is_file()
    assert result.stderr.strip() == (f"error: {run_dir}: another process is working in this run folder; wait "
                                     f"for it to end (or stop it) before resuming it")

    (run_dir / "metrics.jsonl").rename(tmp_path / "metrics.jsonl")  # deleted by mistake
    result = train([f"--resume={run_dir}"], real_config.data_dir, check=False)
    assert result.returncode != 0 and not (run_dir / "metrics.jsonl").exists()
    assert result.stderr.strip() == (f"error: {run_dir / 'metrics.jsonl'}: 0 epoch records, but the checkpoint "
                                     f"follows 2: the file was deleted or cut, and a resume cannot write them "
                                     f"again; put it back, or start a new run")

    checkpoint = run_dir / "checkpoint.pt"
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[:len(good) // 3])
    result = train([f"--resume={run_dir}"], real_config.data_dir, check=False)
    assert "unreadable checkpoint" in result.stderr and "truncated" in result.stderr

    torch.save({"state_dict": {}}, checkpoint)  # someone else's checkpoint
    result = train([f"--resume={run_dir}"], real_config.data_dir, check=False)
    assert "not an ACMR checkpoint" in result.stderr

    result = train([f"--resume={tmp_path / 'nowhere'}"], real_config.data_dir, check=False)
    assert "not a run folder of this program" in result.stderr


def test_a_run_resumed_with_other_paths_resumes_again_to_the_same_results(uninterrupted, real_config,
                                                                           tmp_path):
    """A resume may change where and how fast a run goes (here data_dir); the checkpoint it writes
    then holds that setting, and a second resume must still accept it."""
    assert run_in_child([*SETTINGS, f"--log_dir={tmp_path}"], "between-stages",
                        real_config.data_dir) == -signal.SIGKILL
    (run_dir,) = tmp_path.iterdir()
    assert run_in_child([f"--resume={run_dir}", f"--data_dir={real_config.data_dir}"], "mid-epoch",
                        real_config.data_dir) == -signal.SIGKILL
    train([f"--resume={run_dir}"], real_config.data_dir)
    assert outcome(run_dir) == uninterrupted


def test_a_config_json_with_a_setting_this_version_does_not_know_names_it_and_the_other_version(tmp_path):
    saved = {**dataclasses.asdict(Config()), "future_setting": 1}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError) as error:
        resume_config(tmp_path, Config(), set())
    assert str(error.value) == (f"{tmp_path / 'config.json'}: setting 'future_setting' unknown to this version of "
                                f"the program: the run folder comes from another version (one that has it): "
                                f"resume it with that version")


def test_a_checkpoint_written_with_other_settings_than_config_json_names_the_settings_that_differ(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(Config())))
    save_checkpoint(tmp_path, Config(lr=0.01, patience=5), Progress())
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path, Config())
    assert str(error.value) == (f"{tmp_path / 'checkpoint.pt'}: written by a run with other settings than "
                                f"{tmp_path / 'config.json'} (lr=0.01 in the checkpoint, 0.001 in config.json; "
                                f"patience=5 in the checkpoint, 3 in config.json): one of the two files was "
                                f"changed or replaced")


@pytest.mark.parametrize("results, says", [
    ({"complete": True, "runs": [{"seed": 0}]}, "; this run is complete (see results.json)"),
    ({"complete": False, "runs": [{"seed": 0}]}, "; not a resumable run folder"),  # seed 1's checkpoint lost
    (None, "; not a resumable run folder"),
])
def test_a_folder_without_checkpoint_is_called_complete_only_when_results_json_says_so(results, says, tmp_path):
    if results is not None:
        (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path, Config())
    assert str(error.value) == f"{tmp_path / 'checkpoint.pt'}: no checkpoint{says}"


def test_a_resume_with_its_command_or_environment_file_lost_writes_them_afresh_and_says_so(tmp_path):
    (tmp_path / "environment.json").write_text('{"device": ')  # damaged; command.txt missing
    continue_run_folder(tmp_path, torch.device("cpu"), "python train_model.py --resume=x")
    assert (tmp_path / "command.txt").read_text().splitlines() == [
        "# command.txt was missing or unreadable at this resume; the earlier commands are lost",
        "python train_model.py --resume=x"]
    saved = json.loads((tmp_path / "environment.json").read_text())
    assert saved["lost"] == "environment.json was missing or damaged at a resume"
    assert saved["resumed"][0]["device"] == "cpu"


def test_a_finished_seeds_damaged_candidate_file_is_written_again_on_resume(real_config, tmp_path):
    assert run_in_child([*SETTINGS, f"--log_dir={tmp_path}"], "between-seeds", real_config.data_dir) == -signal.SIGKILL
    (run_dir,) = tmp_path.iterdir()
    candidates = run_dir / "seed0" / "test_candidates.tsv.gz"
    whole = candidates.read_bytes()
    candidates.write_bytes(whole[:len(whole) // 2])  # cut off, as by a full disk or a bad copy
    result = train([f"--resume={run_dir}"], real_config.data_dir)
    assert (f"{run_dir / 'seed0'}: test_candidates.tsv.gz missing or not what results.json records; writing the "
            f"candidates of seed 0 again") in result.stdout
    assert candidates.read_bytes() == whole
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True


def test_candidates_drawn_again_that_differ_from_the_recorded_ones_are_refused(frames, small_config, tmp_path):
    config = dataclasses.replace(small_config, target_market="in")
    runs = [{"seed": 0, "candidates_sha256": {"valid": "0" * 64, "test": "0" * 64}}]  # not what seed 0 draws
    with pytest.raises(CheckpointError) as error:
        check_candidates(tmp_path, frames, config, runs)
    assert str(error.value).startswith(f"{tmp_path / 'seed0'}: the candidates of seed 0 drawn again differ from "
                                       f"those results.json records")


def test_resuming_keeps_the_metrics_lines_up_to_the_checkpoint_and_drops_later_and_half_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')  # killed while appending epoch 4
    keep_lines(path, 3)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n'
    keep_lines(path, 1)  # epochs 2 and 3 came after the checkpoint
    assert path.read_text() == '{"epoch": 1}\n'
