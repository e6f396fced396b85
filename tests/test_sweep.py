"""tools/sweep.py: a plan's grids and a sweep's seeds give the jobs and commands they say; a sweep
writes one report row per model, stops its jobs resumably at the deadline or on SIGTERM, and the
same command resumes and then skips them. On Ray: a grid ends with the results of the same jobs
run directly, a job whose process or Ray worker is killed runs again from its checkpoint to the
same results, a wrong address or a refused client is one line within seconds, and a cluster with
token authentication runs the grid for a client with its token."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from config import Config, ConfigError, parse_overrides
from tests.conftest import REPO
from tools import sweep

TINY = ["--pretrain_epochs=1", "--finetune_epochs=1", "--max_batches_per_epoch=2"]
KILLABLE = ["--pretrain_epochs=2", "--finetune_epochs=2", "--max_batches_per_epoch=10",
            "--num_eval_negatives=19"]  # an epoch's time goes mostly to its 10 training batches


def run_directly(plan_line: str, settings: list[str], log_dir: Path, data_dir: str) -> None:
    """The plan line's jobs as plain `python train_model.py` runs, side by side, into log_dir."""
    jobs = sweep.plan_jobs([plan_line], [*settings, "--num_threads=1", f"--log_dir={log_dir}"])
    outputs = [log_dir.with_name(f"{log_dir.name}-{i}.out") for i in range(len(jobs))]
    processes = [subprocess.Popen([sys.executable, *job.command()[1:]], cwd=REPO, stdout=output.open("w"),
                                  stderr=subprocess.STDOUT, env={**os.environ, "XMREC_DIR": data_dir})
                 for job, output in zip(jobs, outputs)]
    for process, output in zip(processes, outputs):
        assert process.wait(timeout=600) == 0, output.read_text()[-3000:]


def results_by_job(log_dir: Path) -> dict[tuple[str, int], dict]:
    """(model, seed) -> the seed's results.json entry without its wall time, for each run folder."""
    results = {}
    for folder in log_dir.glob("*-in-seed*"):
        model = json.loads((folder / "config.json").read_text())["model"]
        for run in json.loads((folder / "results.json").read_text())["runs"]:
            results[model, run["seed"]] = {key: value for key, value in run.items() if key != "seconds"}
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "no Ray cluster answers at"),  # nothing listens on port 1
    ("no-such-host.invalid:6379", "no Ray cluster answers at"),
    ("localhost", "expected auto or HOST:PORT"),
    ("auto", "no Ray cluster answers at"),  # RAY_ADDRESS names port 1
])
def test_a_wrong_ray_address_is_one_line_at_once(address, says, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.time()
    with pytest.raises(ConfigError, match=says) as error:
        sweep.main(["--models=popularity", "--markets=in", f"--ray_address={address}", f"--log_dir={tmp_path}"])
    assert time.time() - started < 10 and "\n" not in str(error.value)
    assert str(error.value).startswith(f"--ray_address={address}: ")


def test_the_command_line_says_it_in_one_line_and_exits_1(tmp_path):
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "tools.sweep", "--models=popularity", "--ray_address=127.0.0.1:1",
                             f"--log_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and time.time() - started < 30  # mostly importing torch
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: --ray_address=127.0.0.1:1: no Ray cluster answers at ")


def test_the_status_line_counts_the_grid_and_estimates_the_time_left(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    console = sweep.Console()
    console.started -= 100  # two jobs done in 100 s, four to go: 200 s at that pace
    console.update(done=2, running=1, waiting=3, failed=1, retried=1, ended=True)
    console.update(done=2, running=1, waiting=3, failed=1, retried=1, ended=False)  # printed once a job ends
    assert capsys.readouterr().out == "grid: 2 done, 1 running, 3 waiting, 1 failed, 1 retried, about 3 min left\n"


@pytest.mark.slow
def test_the_grid_on_ray_ends_with_the_results_of_the_jobs_run_directly(real_config, tmp_path, monkeypatch):
    monkeypatch.setenv("XMREC_DIR", real_config.data_dir)
    run_directly("popularity,gmf in 1", TINY, tmp_path / "direct", real_config.data_dir)
    sweep.main(["--models=popularity,gmf", "--markets=in", "--seeds=1", "--jobs=2", *TINY,
                f"--log_dir={tmp_path / 'sweep'}"])
    direct = results_by_job(tmp_path / "direct")
    assert sorted(direct) == [("gmf", 0), ("popularity", 0)]
    assert results_by_job(tmp_path / "sweep") == direct


def read_lines(paths: Iterable[Path]) -> int:
    """Lines in the first of `paths` (0 if none yet)."""
    for path in paths:
        return path.read_text().count("\n")
    return 0


def train_model_process(log_dir: Path) -> tuple[int, int] | None:
    """(pid, parent pid: its Ray worker) of the train_model.py process writing to log_dir."""
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if args[1:2] == [str(REPO / "train_model.py")] and f"--log_dir={log_dir}" in args:
            return int(entry.name), parent
    return None


@pytest.mark.slow
def test_sigterm_stops_a_sweep_started_in_the_background_and_its_jobs_keep_their_checkpoint(real_config, tmp_path):
    """A sweep started with `cmd &` from a script inherits SIGINT ignored, and so would Ray's
    workers and the jobs: a stop must still reach the job, which checkpoints and exits."""
    log_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "tools.sweep", "--models=acmr", "--markets=in", "--cpus_per_job=1", *KILLABLE,
               f"--log_dir={log_dir}"]
    sweep_process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "XMREC_DIR": real_config.data_dir},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 300
    while read_lines(log_dir.glob("*-in-seed*/metrics.jsonl")) < 1 and time.time() < deadline:
        time.sleep(0.2)
    sweep_process.send_signal(signal.SIGTERM)
    output = sweep_process.communicate(timeout=60)[0]
    assert sweep_process.returncode == 130, output
    folder, = log_dir.glob("*-in-seed*")
    assert "interrupted: progress up to the last finished epoch is saved" in (folder / "train.log").read_text()
    assert (folder / "checkpoint.pt").is_file() and not (folder / "results.json").exists()
    assert "the same sweep command continues" in output


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def test_a_job_whose_process_or_ray_worker_is_killed_runs_again_from_its_checkpoint(real_config, tmp_path):
    """The job's train_model.py process is killed (SIGKILL) after its first epoch, then the
    Ray worker of its second attempt after its second; the third attempt resumes in the same
    run folder and ends with the results of an uninterrupted run."""
    log_dir = tmp_path / "sweep"
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "tools.sweep", "--models=acmr", "--markets=in", "--cpus_per_job=1", *KILLABLE,
         f"--log_dir={log_dir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "XMREC_DIR": real_config.data_dir})
    killed, deadline = [], time.time() + 300  # (pid, epochs in metrics.jsonl then) of each kill
    while len(killed) < 2 and time.time() < deadline and sweep_process.poll() is None:
        process, epochs = train_model_process(log_dir), read_lines(log_dir.glob("*-in-seed*/metrics.jsonl"))
        if process and (not killed and epochs >= 1 or killed and process[0] != killed[0][0] and epochs > killed[0][1]):
            assert not list(log_dir.glob("*-in-seed*/results.json"))
            os.kill(process[0] if not killed else process[1], signal.SIGKILL)
            killed.append((process[0], epochs))
        time.sleep(0.2)
    output = sweep_process.communicate(timeout=600)[0]
    assert sweep_process.returncode == 0 and len(killed) == 2, output
    folders = list(log_dir.glob("*-in-seed*"))
    assert len(folders) == 1, output  # resumed twice, never begun again
    assert "lost acmr in seed 0" in output and "(killed by SIGKILL" in output and "(WorkerCrashedError" in output
    for attempt in (2, 3):
        assert f"[attempt {attempt}] resume acmr in seed 0 {' '.join(KILLABLE)} from {folders[0]}" in output
    assert "finished 1 of 1 jobs" in output

    run_directly("acmr in 1", KILLABLE, tmp_path / "direct", real_config.data_dir)
    assert results_by_job(log_dir) == results_by_job(tmp_path / "direct")


@pytest.mark.slow
def test_a_cluster_with_token_authentication_refuses_a_client_without_it_and_runs_the_grid_with_it(
        real_config, tmp_path):
    port, token = free_port(), os.urandom(16).hex()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay short
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    base["XMREC_DIR"] = real_config.data_dir
    ray_cli = Path(sys.executable).with_name("ray")  # installed with ray, beside python
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                            env={**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        command = [sys.executable, "-m", "tools.sweep", "--models=popularity", "--markets=in", *TINY,
                   f"--ray_address=127.0.0.1:{port}", f"--log_dir={tmp_path}"]
        started = time.time()
        refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=base)
        assert refused.returncode == 1 and time.time() - started < 30, refused.stderr
        assert refused.stderr.splitlines() == [refused.stderr.strip()]
        assert "requires token authentication (RAY_AUTH_MODE=token) and refused this client" in refused.stderr
        assert not list(tmp_path.glob("*-in-seed*"))  # nothing ran, here or anywhere

        joined = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                env={**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert "finished 1 of 1 jobs" in joined.stdout and len(list(tmp_path.glob("*-in-seed*/results.json"))) == 1
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the cluster's processes
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_first_seed_shifts_the_grids_seeds_so_that_each_jobs_label_and_run_agree():
    jobs = sweep.plan_jobs(["acmr in,jp 2", "gmf in 3-4"], ["--first_seed=5", "--lr=0.01"])
    assert [(job.model, job.market, job.seed) for job in jobs] == [
        ("acmr", "in", 5), ("acmr", "in", 6), ("acmr", "jp", 5), ("acmr", "jp", 6), ("gmf", "in", 8), ("gmf", "in", 9)]
    for job in jobs:
        seeds = [arg for arg in job.command() if arg.startswith(("--first_seed=", "--seeds=", "--target_market="))]
        assert seeds == [f"--target_market={job.market}", f"--first_seed={job.seed}", "--seeds=1"]
        assert job.name == f"{job.model} {job.market} seed {job.seed} --lr=0.01"


@pytest.mark.parametrize("argv, says", [
    (["--target_market=jp"], "--target_market=jp: a sweep's markets are --markets=M1,M2,..."),
    (["--plan=PLAN", "--seeds=3"], "--seeds=3: in a plan, a line's seeds are its third field"),
    (["--first_seed=-1"], "--first_seed=-1: must be an integer >= 0"),
])
def test_a_setting_that_each_job_sets_itself_is_refused_in_one_line(argv, says, tmp_path):
    plan = tmp_path / "plan.txt"
    plan.write_text("acmr in 1\n")
    argv = [arg.replace("PLAN", str(plan)) for arg in argv]
    with pytest.raises(ConfigError) as error:
        sweep.main(["--models=acmr", "--markets=in", f"--log_dir={tmp_path}", "--dry_run=true", *argv])
    assert str(error.value).startswith(says) and "\n" not in str(error.value)


@pytest.mark.parametrize("argv, says", [
    (["--jobs=x"], "jobs=x: expected an integer"),
    (["--deadline_minutes=soon"], "deadline_minutes=soon: expected a number"),
    (["--seeds=0"], "seeds '0': no seed in it"),
    (["--seeds=5-3"], "seeds '5-3': no seed in it"),
    (["--lrr=1", "--redo=true"], "unknown setting --lrr"),
])
def test_a_malformed_sweep_option_or_an_empty_seed_range_is_refused_in_one_line(argv, says, tmp_path):
    with pytest.raises(ConfigError) as error:
        sweep.main(["--models=acmr", "--markets=in", f"--log_dir={tmp_path}", "--dry_run=true", *argv])
    assert str(error.value).startswith(says) and "\n" not in str(error.value)


def test_a_sweep_with_first_seed_skips_the_seeds_it_has_done_and_resumes_the_one_it_began(tmp_path, capsys):
    """Seed 5 has results and seed 6 a checkpoint in the log folder: a rerun of
    `--first_seed=5 --seeds=3` skips 5, resumes 6 and runs 7."""
    for seed, done in ((5, True), (6, False)):
        folder = tmp_path / f"acmr-in-seed{seed}-2026010{seed}-000000"
        folder.mkdir()
        config = dataclasses.asdict(dataclasses.replace(Config(), first_seed=seed, seeds=1, log_dir=str(tmp_path)))
        (folder / "config.json").write_text(json.dumps(config))
        if done:
            (folder / "results.json").write_text(json.dumps({"target_market": "in", "runs": [{"seed": seed}]}))
        else:
            (folder / "checkpoint.pt").write_bytes(b"")
    sweep.main(["--models=acmr", "--markets=in", "--seeds=3", "--first_seed=5", f"--log_dir={tmp_path}",
                "--dry_run=true"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"skip acmr in seed 5: done in {tmp_path / 'acmr-in-seed5-20260105-000000'}"
    resumed = tmp_path / "acmr-in-seed6-20260106-000000"
    assert lines[1].startswith(f"resume acmr in seed 6: python train_model.py --resume={resumed}")
    assert lines[2].startswith("run acmr in seed 7: python train_model.py ")
    assert "--first_seed=7 --seeds=1" in lines[2] and lines[2].count("--first_seed=") == 1
    assert lines[3] == "2 jobs to run"


def test_a_sweep_skips_a_job_whose_training_diverged_and_says_how_to_run_it_afresh(tmp_path, capsys):
    folder = tmp_path / "acmr-in-seed0-20260101-000000"
    folder.mkdir()
    config = dataclasses.asdict(dataclasses.replace(Config(), seeds=1, log_dir=str(tmp_path)))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "checkpoint.pt").write_bytes(b"")
    (folder / "diverged.txt").write_text("seed 0 pretrain epoch 3: loss nan\n")
    sweep.main(["--models=acmr", "--markets=in", "--seeds=2", f"--log_dir={tmp_path}", "--dry_run=true"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"skip acmr in seed 0: its training diverged in {folder} (diverged.txt says where); "
                        f"--redo=true runs it afresh")
    assert lines[1].startswith("run acmr in seed 1: ") and lines[2] == "1 jobs to run"


def test_the_sweep_runs_each_model_and_its_report_has_a_row_for_each(real_config, tmp_path, monkeypatch):
    monkeypatch.setenv("XMREC_DIR", real_config.data_dir)
    sweep.main(["--models=popularity,gmf", "--markets=in", "--seeds=2", "--pretrain_epochs=1", "--finetune_epochs=1",
                "--max_batches_per_epoch=1", f"--log_dir={tmp_path}"])
    report = (tmp_path / "report.md").read_text()
    assert "Every run here has `pretrain_epochs=1 finetune_epochs=1 max_batches_per_epoch=1`" in report
    assert "| popularity | after fine-tuning |" in report and "| gmf | after fine-tuning |" in report
    assert len(list(tmp_path.glob("*-in-seed*"))) == 4  # one folder per (model, seed)


def test_a_plan_lists_grids_in_order_with_their_own_settings(tmp_path):
    plan = tmp_path / "plan.txt"
    plan.write_text("# comment\nacmr in,jp 2  --split=temporal\n\ngmf,nmf mx 3-4 --log_dir=y  # later\n")
    jobs = sweep.plan_jobs(plan.read_text().splitlines(), ["--log_dir=x"])
    assert [(j.model, j.market, j.seed) for j in jobs] == [
        ("acmr", "in", 0), ("acmr", "in", 1), ("acmr", "jp", 0), ("acmr", "jp", 1),
        ("gmf", "mx", 3), ("gmf", "mx", 4), ("nmf", "mx", 3), ("nmf", "mx", 4)]
    assert jobs[0].settings == ["--log_dir=x", "--split=temporal"]
    assert jobs[0].command()[-4:] == ["--first_seed=0", "--seeds=1", "--log_dir=x", "--split=temporal"]
    assert jobs[-1].settings == ["--log_dir=y"]  # the line's own setting replaces the command's
    for bad in ("acmr in", "acmr xx 1", "foo in 1", "acmr in x", "acmr in 1 split=temporal"):
        with pytest.raises(ConfigError):
            sweep.plan_jobs([bad], [])


@pytest.mark.parametrize("plan", sorted((REPO / "plans").glob("*.txt")), ids=lambda path: path.name)
def test_every_committed_plan_gives_jobs_whose_commands_are_valid_settings(plan):
    jobs = sweep.plan_jobs(plan.read_text().splitlines(), [])
    assert jobs, f"{plan.name} plans no job"
    for job in jobs:
        config, _ = parse_overrides(job.command()[2:])
        assert (config.target_market, config.first_seed, config.seeds) == (job.market, job.seed, 1)


def test_the_deadline_interrupts_running_jobs_and_leaves_them_resumable(real_config, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.sweep", "--models=acmr,popularity", "--markets=in", "--seeds=1", "--jobs=2",
         "--deadline_minutes=0.75", "--patience=50", "--max_batches_per_epoch=20", f"--log_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "XMREC_DIR": real_config.data_dir})
    assert result.returncode == 1, result.stderr
    assert "done popularity in seed 0" in result.stdout
    assert "stopped (exit 130) acmr in seed 0" in result.stdout
    assert "not finished: python train_model.py --target_market=in --first_seed=0" in result.stdout
    interrupted = [f for f in tmp_path.glob("*-in-seed*") if not (f / "results.json").exists()]
    assert len(interrupted) == 1 and (interrupted[0] / "checkpoint.pt").is_file()
    assert "| popularity | after fine-tuning |" in (tmp_path / "report.md").read_text()  # the finished job's row


def test_sigterm_stops_the_sweep_and_its_jobs_and_the_same_command_resumes_then_skips(real_config,
                                                                                      tmp_path):
    command = [sys.executable, "-m", "tools.sweep", "--models=acmr", "--markets=in", "--seeds=2", "--jobs=2",
               "--num_epochs=2", "--max_batches_per_epoch=20", "--num_eval_negatives=19", f"--log_dir={tmp_path}"]
    env = {**os.environ, "XMREC_DIR": real_config.data_dir}
    sweep_process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
    deadline = time.time() + 180
    while len(list(tmp_path.glob("*-in-seed*/checkpoint.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    sweep_process.send_signal(signal.SIGTERM)  # the jobs themselves get no signal from us
    stdout, stderr = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 130, stderr
    assert "stopped (exit 130) acmr in seed 0" in stdout and "stopped (exit 130) acmr in seed 1" in stdout
    assert stdout.count("not finished: python train_model.py") == 2
    folders = sorted(tmp_path.glob("*-in-seed*"))
    for run_dir in folders:
        assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "results.json").exists()
        assert "interrupted: progress up to the last finished epoch is saved" in (run_dir / "train.log").read_text()

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("resume acmr in seed") == 2 and "finished 2 of 2 jobs" in again.stdout
    assert sorted(tmp_path.glob("*-in-seed*")) == folders  # no new folder: the same runs, finished
    for run_dir in folders:
        assert (run_dir / "results.json").is_file() and not (run_dir / "checkpoint.pt").exists()

    once_more = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    assert once_more.returncode == 0 and once_more.stdout.count("skip acmr in seed") == 2
    assert "finished 0 of 0 jobs" in once_more.stdout


def test_a_seed_done_in_two_folders_is_skipped_as_done_in_the_one_started_last(tmp_path, capsys):
    """The newer folder's name sorts first (`seed0` < `seeds0-2`): the start time at the end of
    the name, not the name, says which folder is the newest (the one the report counts)."""
    for name, first_seed, seeds in (("acmr-in-seeds0-2-20260101-000000", 0, 3), ("acmr-in-seed0-20260102-000000", 0, 1)):
        folder = tmp_path / name
        folder.mkdir()
        config = dataclasses.replace(Config(), target_market="in", first_seed=first_seed, seeds=seeds, log_dir=str(tmp_path))
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
        (folder / "results.json").write_text(json.dumps({"runs": [{"seed": s} for s in range(first_seed, first_seed + seeds)]}))
    sweep.main(["--models=acmr", "--markets=in", "--seeds=1", f"--log_dir={tmp_path}", "--dry_run=true"])
    assert capsys.readouterr().out.splitlines()[0] == f"skip acmr in seed 0: done in {tmp_path / 'acmr-in-seed0-20260102-000000'}"
