"""Every bad input stops early with one clear line, and leaves no run folder behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from config import MARKETS
from tests.conftest import REPO

CASES = {
    "unknown setting": (["--learning_rate=0.1"], {}, "unknown setting --learning_rate; allowed:"),
    "invalid value": (["--lr=-1"], {}, "lr=-1.0: must be > 0"),
    "unknown market": (["--target_market=br"], {}, "target_market='br': allowed ca, de, fr, in, jp, mx, uk or all"),
    "cuda without a GPU": (["--device=cuda"], {}, "device=cuda: no CUDA GPU is visible; use --device=auto or cpu"),
    "log dir not writable": (["--log_dir={tmp}/a_file/log"], {}, "log_dir='{tmp}/a_file/log': cannot create a run folder there"),
    "no data, no network": (["--data_dir={tmp}/empty", "--data_url=http://127.0.0.1:9/{{market}}_5core.txt"],
                            {"XMREC_DIR": None}, "could not download http://127.0.0.1:9/ca_5core.txt"),
    "XMREC_DIR missing": (["--data_dir={tmp}/empty"], {"XMREC_DIR": "{tmp}/nowhere"},
                          "XMREC_DIR={tmp}/nowhere: no such folder"),
    "corrupt data file": (["--data_dir={tmp}/corrupt"], {}, "{tmp}/corrupt/in_5core.txt: SHA-256 mismatch"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, real_config, tmp_path):
    args, env_changes, message = CASES[case]
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "corrupt").mkdir()
    for market in MARKETS:
        shutil.copy(f"{real_config.data_dir}/{market}_5core.txt", tmp_path / "corrupt")
    with open(tmp_path / "corrupt" / "in_5core.txt", "a") as f:
        f.write("AXXXX B0000 5.0 2020-01-01\n")  # one line appended: the checksum must catch it
    env = {**os.environ, "XMREC_DIR": real_config.data_dir}
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(tmp=tmp_path)
    log_dir = tmp_path / "log"
    args = [a.format(tmp=tmp_path) for a in args]
    if not any(a.startswith("--log_dir") for a in args):
        args.append(f"--log_dir={log_dir}")
    result = subprocess.run([sys.executable, "train_model.py", "--seeds=1", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message.format(tmp=tmp_path) in lines[0]
    assert not log_dir.exists() or not any(log_dir.iterdir())
    assert not any((tmp_path / "empty").glob("*"))  # no partial download
