"""A run folder's checkpoint: everything needed to continue a run exactly, after every epoch.

train_model.py writes one after every epoch and stage (`save_checkpoint`) and continues from it
with `--resume=FOLDER` (`load_checkpoint`, `resume_config`, `restore_generators`).
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from config import RUN_ONLY_SETTINGS, Config, ConfigError
from data_loader import Dataset
from runfolder.files import CHECKPOINT, DIVERGED, write_file
from runfolder.migration import config_from_saved, upgrade_saved

CHECKPOINT_FORMAT = "acmr-checkpoint/1"
WEIGHTS_FORMAT = "acmr-weights/1"


def save_torch(path: Path, payload: object) -> None:
    """torch.save(payload) to `path`, whole or not at all (files.write_file)."""
    write_file(path, lambda temporary: torch.save(payload, temporary))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why."""


@dataclass
class Progress:
    """Where a run stands. Saved with every checkpoint, after every epoch."""
    seed: int = 0
    stage: str = "pretrain"
    epoch: int = 0  # epochs completed in this stage
    best_score: float = 0.0  # the authors' early stopping starts each stage at 0
    best_epoch: int = 0
    non_improving: int = 0
    epochs_trained: int = 0  # in this seed, both stages
    seconds: float = 0.0  # wall time of this seed's epochs (training and validation)
    seed_result: dict = field(default_factory=dict)  # this seed's test metrics so far
    runs: list = field(default_factory=list)  # the finished seeds' results
    metrics_lines: int = 0  # lines of metrics.jsonl that belong to this progress


def save_checkpoint(run_dir: Path, config: Config, progress: Progress, model: nn.Module | None = None,
                    best_state: dict | None = None, optimizer: torch.optim.Optimizer | None = None,
                    batch_rng: np.random.Generator | None = None,
                    negatives_rng: np.random.Generator | None = None,
                    train_item: torch.Tensor | None = None) -> None:
    """Everything needed to continue exactly: weights, optimizer, progress, every generator.
    Written to a temporary file, then renamed: a crash leaves the previous checkpoint intact."""
    payload = {
        "format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(config),
        "progress": dataclasses.asdict(progress),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "batches": batch_rng.bit_generator.state if batch_rng is not None else None,
                "negatives": negatives_rng.bit_generator.state if negatives_rng is not None else None},
    }
    if model is not None:  # mid-seed; the training items change with resample_train_negatives
        payload.update(model=model.state_dict(), best_model=best_state, train_item=train_item.cpu(),
                       optimizer=optimizer.state_dict() if optimizer is not None else None)
    save_torch(run_dir / CHECKPOINT, payload)


def read_torch_file(path: Path, file_format: str, kind: str) -> dict:
    """The payload of a file this program wrote with torch.save (`kind`: checkpoint, weights
    file), on the CPU; one-line CheckpointError if it is unreadable or of another format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file: torch raises many kinds
        raise CheckpointError(f"{path}: unreadable {kind} ({type(error).__name__}): truncated, corrupted or "
                              f"not written by this program") from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise CheckpointError(f"{path}: not an ACMR {kind} of format {file_format}")
    return payload


def weights_path(run_dir: Path, seed: int, stage: str) -> Path:
    """Where a run folder keeps the weights of a seed's stage (its best epoch's)."""
    return run_dir / f"seed{seed}_{stage}_weights.pt"


def save_weights(run_dir: Path, config: Config, seed: int, stage: str, best_epoch: int,
                 state: dict[str, torch.Tensor], dataset: Dataset) -> Path:
    """The kept weights of a seed's stage and what is needed to use them: the settings, the raw
    item id of each item row and the name of each market row (and, for a model with user
    embeddings, the raw (market, user) of each user row). Loadable with weights_only=True."""
    payload = {
        "format": WEIGHTS_FORMAT, "config": dataclasses.asdict(config), "seed": seed, "stage": stage,
        "best_epoch": best_epoch, "target_market": dataset.target_market,
        "state_dict": {key: value.detach().cpu() for key, value in state.items()},
        "item_ids": [str(item) for item in dataset.item_names],  # row 0: padding ("")
        "markets": list(dataset.markets),
    }
    if config.model != "acmr":  # the baselines' user embeddings: one row per (market, user)
        payload["user_ids"] = [str(user) for user in dataset.user_names]
        payload["user_markets"] = [dataset.markets[m] for m in dataset.user_market]
    path = weights_path(run_dir, seed, stage)
    save_torch(path, payload)
    return path


def load_checkpoint(run_dir: Path, config: Config) -> dict:
    """The checkpoint of a run folder to resume with `config` (its config.json's). Refused, with
    one line, if it is missing or unreadable, if the run diverged, if it was written with other
    settings, or if metrics.jsonl lacks records that it follows."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        try:
            complete = json.loads((run_dir / "results.json").read_text()).get("complete") is True
        except (OSError, ValueError, AttributeError):
            complete = False
        raise CheckpointError(f"{path}: no checkpoint" + (
            "; this run is complete (see results.json)" if complete else "; not a resumable run folder"))
    if (run_dir / DIVERGED).is_file():
        raise CheckpointError(f"{run_dir / DIVERGED}: this run diverged, and a resume continues exactly, so it "
                              f"would diverge again: start a new run with a smaller --lr (or delete "
                              f"{DIVERGED} to resume anyway)")
    payload = read_torch_file(path, CHECKPOINT_FORMAT, "checkpoint")
    saved = upgrade_saved(payload["config"])
    differing = [f"{k}={saved.get(k)!r} in the checkpoint, {v!r} in config.json"
                 for k, v in dataclasses.asdict(config).items() if k not in RUN_ONLY_SETTINGS and saved.get(k) != v]
    if differing:
        raise CheckpointError(f"{path}: written by a run with other settings than {run_dir / 'config.json'} "
                              f"({'; '.join(differing)}): one of the two files was changed or replaced")
    metrics = run_dir / "metrics.jsonl"
    records = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    expected = payload["progress"]["metrics_lines"]
    if records < expected:
        raise CheckpointError(f"{metrics}: {records} epoch records, but the checkpoint follows {expected}: the "
                              f"file was deleted or cut, and a resume cannot write them again; put it back, or "
                              f"start a new run")
    return payload


def restore_generators(rng_state: dict, batch_rng: np.random.Generator,
                       negatives_rng: np.random.Generator) -> None:
    torch.set_rng_state(rng_state["torch"])
    random.setstate(rng_state["python"])
    if rng_state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng_state["cuda"])
    batch_rng.bit_generator.state = rng_state["batches"]
    negatives_rng.bit_generator.state = rng_state["negatives"]


def resume_config(run_dir: Path, overrides: Config, given: set[str]) -> Config:
    """The run folder's config; settings given on the command line must agree with it, except
    the ones that say where or how fast to run (config.RUN_ONLY_SETTINGS)."""
    path = run_dir / "config.json"
    try:
        config = config_from_saved(json.loads(path.read_text()))
    except ConfigError as error:  # a setting of another version, or a value that this one refuses
        raise ConfigError(f"{path}: {error}") from None
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"--resume={run_dir}: not a run folder of this program ({error})") from None
    for key in given:
        value = getattr(overrides, key)
        if key in RUN_ONLY_SETTINGS:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise ConfigError(f"--{key}={value} differs from the run folder's {key}="
                              f"{getattr(config, key)}; a resumed run keeps its settings")
    return config
