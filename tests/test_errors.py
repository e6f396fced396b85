"""Every bad input stops early with one clear line, and leaves no run folder (nor data/) behind."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from config import ELECTRONICS_MARKETS
from tests.conftest import REPO

CASES = {
    "unknown setting": (["--learning_rate=0.1"], {}, "unknown setting --learning_rate; allowed:"),
    "invalid value": (["--lr=-1"], {}, "lr=-1.0: must be > 0"),
    "not a finite number": (["--lr=nan"], {}, "lr=nan: must be a finite number"),
    "unknown market": (["--target_market=br"], {}, "target_market='br': allowed ca, de, fr, in, jp, mx, uk or all"),
    "cuda without a GPU": (["--device=cuda"], {"CUDA_VISIBLE_DEVICES": ""},  # hidden on a GPU machine too
                           "device=cuda: no CUDA GPU is visible; use --device=auto or cpu"),
    "seed too large for torch": (["--first_seed=99999999999999999999"], {},
                                 "first_seed=99999999999999999999: must be below 2**63"),
    "log dir not writable": (["--log_dir={tmp}/a_file/log"], {}, "log_dir='{tmp}/a_file/log': cannot create a run folder there"),
    "no data, no network": (["--data_dir={tmp}/empty", "--data_url=http://127.0.0.1:9/{{market}}_5core.txt"],
                            {"XMREC_DIR": None}, "could not download http://127.0.0.1:9/ca_5core.txt"),
    "XMREC_DIR missing": (["--data_dir={tmp}/empty"], {"XMREC_DIR": "{tmp}/nowhere"},
                          "XMREC_DIR={tmp}/nowhere: no such folder"),
    "XMREC_DIR without one market": ([], {"XMREC_DIR": "{tmp}/six_markets"},
                                     "{tmp}/six_markets/uk_5core.txt: no such file (XMREC_DIR={tmp}/six_markets; "),
    "corrupt data file": (["--data_dir={tmp}/corrupt"], {}, "{tmp}/corrupt/in_5core.txt: SHA-256 mismatch"),
    "corrupt data file in XMREC_DIR": (["--data_dir={tmp}/empty"], {"XMREC_DIR": "{tmp}/corrupt"},
                                       "{tmp}/corrupt/in_5core.txt: SHA-256 mismatch"),
    "target not among data_markets": (["--data_markets=aa,bb"], {}, "target_market='in': allowed aa, bb or all"),
    "a market file missing": (["--data_markets=in,zz", "--data_dir={tmp}/empty"], {},
                              "{tmp}/empty/zz_5core.txt: no such file (nor is it in XMREC_DIR="),
    "more training negatives than items": (["--num_train_negatives=100"], {}, "num_train_negatives=100: user "),
    "more evaluation negatives than the pool": (["--num_eval_negatives=10000"], {},
                                                "num_eval_negatives=10000: the global pool of in holds 8304 items"),
}


def run_script(script: str, args: list[str], env_changes: dict[str, str | None], real_config, tmp_path):
    """Run a script from another folder than the repository (tmp_path) with the test's folders."""
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "six_markets").mkdir()
    for market in ELECTRONICS_MARKETS:
        shutil.copy(f"{real_config.data_dir}/{market}_5core.txt", tmp_path / "corrupt")
        if market != "uk":
            os.symlink(f"{real_config.data_dir}/{market}_5core.txt", tmp_path / "six_markets" / f"{market}_5core.txt")
    with open(tmp_path / "corrupt" / "in_5core.txt", "a") as f:
        f.write("AXXXX B0000 5.0 2020-01-01\n")  # one line appended: the checksum must catch it
    env = {**os.environ, "XMREC_DIR": real_config.data_dir}
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(tmp=tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(result, message: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message in lines[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, real_config, tmp_path):
    args, env_changes, message = CASES[case]
    log_dir = tmp_path / "log"
    if not any(a.startswith("--log_dir") for a in args):
        args = [*args, f"--log_dir={log_dir}"]
    result = run_script("train_model.py", ["--seeds=1", *args], env_changes, real_config, tmp_path)
    assert_one_error_line(result, message.format(tmp=tmp_path))
    assert "delete" not in result.stderr  # XMREC_DIR is set or the network is out of reach: nothing downloads
    assert not log_dir.exists() or not any(log_dir.iterdir())
    assert not any((tmp_path / "empty").glob("*"))  # no partial download
    assert not (tmp_path / "data").exists()  # data_dir's default is the repository's data/, not ./data


@pytest.mark.parametrize("args, message", [
    (["--seed=-1"], "--seed=-1: must be in 0 .. 2**63-1"),
    (["--export={tmp}/a_file/candidates"], "--export={tmp}/a_file/candidates: cannot create that folder"),
    (["--export={tmp}/out", "--num_eval_negatives=9000"], "num_eval_negatives=9000: the global pool of in holds"),
    (["--export={tmp}/out", "--first_seed=3"], "--first_seed: a run's seeds; the split of one seed is --seed=S"),
])
def test_bad_export_input_is_one_clear_line_and_writes_nothing(args, message, real_config, tmp_path):
    result = run_script("data_loader.py", args, {}, real_config, tmp_path)
    assert_one_error_line(result, message.format(tmp=tmp_path))
    assert not any((tmp_path / "out").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("script, first_library", [("train_model.py", "numba"), ("evaluate.py", "numpy")])
def test_ctrl_c_while_the_libraries_load_exits_130_without_a_traceback(script, first_library, tmp_path):
    (tmp_path / f"{first_library}.py").write_text(  # a library that takes its time to load
        f"import pathlib, time\npathlib.Path({str(tmp_path / 'loading')!r}).touch()\ntime.sleep(120)\n")
    process = subprocess.Popen([sys.executable, script, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    deadline = time.time() + 60
    while not (tmp_path / "loading").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr) == (130, "", "")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_model.py", "evaluate.py"])
def test_help_into_a_pipe_whose_reader_went_away_ends_without_a_traceback(script):
    read, write = os.pipe()
    os.close(read)  # `--help | head -1`, once head has its line
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, stdout=write, stderr=subprocess.PIPE,
                            text=True, timeout=300)
    os.close(write)
    assert (result.returncode, result.stderr) == (141, "")
