"""A run folder's making: its creation, its lock, and the record of the code and machine that
ran in it (environment.json: versions, device, git commit).

train_model.py creates one per target market (make_run_dir, start_run_folder) and holds its
lock while it trains there (locked); a resumed run adds its own record (continue_run_folder).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from config import REPO, Config, ConfigError, active_stages
from reporting.runs import run_folder_name
from runfolder.checkpoints import CheckpointError, Progress, save_checkpoint
from runfolder.files import write_json, write_text


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The repository's commit, `-dirty` added where tracked files differ from it; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment(device: torch.device) -> dict[str, object]:
    """environment.json's record: the libraries' versions, the device, the threads, the commit."""
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pandas": pd.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(), "git_commit": git_commit(),
        "host": platform.node(), "started": datetime.now().isoformat(timespec="seconds"),
    }


def make_run_dir(log_dir: Path, config: Config) -> Path:
    """A new run folder under `log_dir` named by runs.run_folder_name (preset, target market,
    seeds, start time), e.g. log/acmr-in-seed0-20261202-082431; `-N` after it for the N-th
    folder of the same name started in the same second."""
    name = run_folder_name(dataclasses.asdict(config), datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", *(f"-{i}" for i in range(1, 100))):
            run_dir = log_dir / f"{name}{suffix}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as error:
        raise ConfigError(f"log_dir={str(log_dir)!r}: cannot create a run folder there ({error})") from None
    raise ConfigError(f"log_dir={str(log_dir)!r}: too many run folders named {name}")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock while working in it, so that a second process refuses to: an
    flock(2) on the folder itself, which the kernel releases when the process ends, however."""
    descriptor = os.open(run_dir, os.O_RDONLY)  # not inherited by child processes
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"{run_dir}: another process is working in this run folder; wait for it "
                                  f"to end (or stop it) before resuming it") from None
        yield
    finally:
        os.close(descriptor)


def start_run_folder(run_dir: Path, config: Config, device: torch.device, command: str) -> None:
    """A new run folder's files and first checkpoint (resumable from the start: Ctrl-C in the
    first epoch loses nothing). On failure the folder goes: nothing in it is worth keeping."""
    try:
        write_json(run_dir / "config.json", dataclasses.asdict(config))
        write_text(run_dir / "command.txt", command + "\n")
        write_json(run_dir / "environment.json", environment(device))
        save_checkpoint(run_dir, config, Progress(seed=config.first_seed, stage=active_stages(config)[0]))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def continue_run_folder(run_dir: Path, device: torch.device, command: str) -> None:
    """A resumed run's command and environment, added to the run folder's (a missing or damaged
    file is written afresh, and says so)."""
    try:
        earlier = (run_dir / "command.txt").read_text()
    except (OSError, UnicodeDecodeError):
        earlier = "# command.txt was missing or unreadable at this resume; the earlier commands are lost\n"
    write_text(run_dir / "command.txt", earlier + command + "\n")
    try:
        started = json.loads((run_dir / "environment.json").read_text())  # the code may have changed since
    except (OSError, UnicodeDecodeError, ValueError):
        started = {"lost": "environment.json was missing or damaged at a resume"}
    started.setdefault("resumed", []).append(environment(device))
    write_json(run_dir / "environment.json", started)
