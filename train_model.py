"""Train and evaluate ACMR: for each seed, pre-train on all markets, fine-tune on the target.

    python train_model.py                                  # config.py's defaults
    python train_model.py --target_market=jp --seeds=1     # any setting as --key=value

Each target market gets a run folder <log_dir>/<target>-<timestamp>/ with the resolved
config, the command, the environment, the log, per-epoch metrics, the results and each
seed's evaluation candidates (README.md lists them).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from config import Config, ConfigError, parse_overrides, target_markets
from data_loader import DataError, Dataset, DeviceData, build_dataset, export_candidates, load_markets
from evaluate import METRICS, evaluate_candidates, mean_and_std
from model import ACMR

REPO = Path(__file__).resolve().parent
AUTHORS_RUNS = REPO / "data" / "authors_logged_runs.json"
STAGES = ("pretrain", "finetune")
log = logging.getLogger("acmr")


# ---------------------------------------------------------------- run folder and files

def write_json(path: Path, payload: object) -> None:
    """Write JSON atomically: a crash never leaves a half-written file under the final name."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(temporary, path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is visible; use --device=auto or cpu")
    return torch.device(name)


def environment(device: torch.device) -> dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pandas": pd.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "git_commit": commit,
        "host": platform.node(), "started": datetime.now().isoformat(timespec="seconds"),
    }


def make_run_dir(log_dir: str, target: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        for suffix in ("", *(f"-{i}" for i in range(1, 100))):
            run_dir = Path(log_dir) / f"{target}-{stamp}{suffix}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as error:
        raise ConfigError(f"log_dir={log_dir!r}: cannot create a run folder there ({error})") from None
    raise ConfigError(f"log_dir={log_dir!r}: too many run folders named {target}-{stamp}")


def start_log_file(run_dir: Path) -> logging.Handler:
    """Everything logged goes to the console and to <run_dir>/train.log."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return handler


# ---------------------------------------------------------------- training

def epoch_batches(rng: np.random.Generator, row_lengths: np.ndarray, config: Config) -> list[np.ndarray]:
    """Row indices of each batch of one epoch. With bucketing, rows are sorted by history length
    (random order among equal lengths) and the batches are visited in random order, so each
    batch is padded to little more than its own rows' lengths; without, a plain shuffle."""
    order = rng.permutation(len(row_lengths))
    if config.bucket_batches:
        order = order[np.argsort(row_lengths[order], kind="stable")]
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    if config.bucket_batches:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if config.max_batches_per_epoch:
        batches = batches[:config.max_batches_per_epoch]
    return batches


def train_epoch(model: ACMR, optimizer: torch.optim.Optimizer, data: DeviceData, rows: np.ndarray,
                rng: np.random.Generator, config: Config, desc: str) -> float:
    """One pass over the training rows `rows`; returns the mean loss."""
    model.train()
    loss_function = nn.BCEWithLogitsLoss()
    row_lengths = data.history_length[data.train_user[torch.as_tensor(rows)]].cpu().numpy()
    total, count = 0.0, 0
    for batch in tqdm(epoch_batches(rng, row_lengths, config), desc=desc, leave=False,
                      mininterval=2.0):
        index = torch.as_tensor(rows[batch], device=data.train_user.device)
        users = data.train_user[index]
        longest = int(data.history_length[users].max())
        logits = model(data.user_history[users, :longest], data.train_item[index],
                       data.user_market[users])
        loss = loss_function(logits, data.train_label[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(count, 1)


def run_stage(stage: str, model: ACMR, optimizer: torch.optim.Optimizer, data: DeviceData,
              rows: np.ndarray, rng: np.random.Generator, config: Config, seed: int,
              metrics_file: Path) -> dict[str, int]:
    """Train until the early-stopping budget is spent, then reload the best weights.

    Authors' early stopping: the best valid NDCG@5 starts at 0, and `patience` non-improving
    epochs end the stage; an improvement does not reset that budget (patience_resets=False).
    """
    best_score, best_epoch, non_improving = 0.0, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    epoch = 0
    for epoch in range(1, config.num_epochs + 1):
        started = time.perf_counter()
        loss = train_epoch(model, optimizer, data, rows, rng, config,
                           desc=f"seed {seed} {stage} epoch {epoch}")
        train_seconds = time.perf_counter() - started
        valid = evaluate_candidates(model, data, data.valid_candidates, config.eval_batch_tokens)
        seconds = time.perf_counter() - started
        if valid["NDCG@5"] > best_score:
            best_score, best_epoch = valid["NDCG@5"], epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            non_improving += 1
        log.info(f"seed {seed} {stage:8s} epoch {epoch:2d}  loss {loss:.4f}  valid "
                 + "  ".join(f"{k} {v:.4f}" for k, v in valid.items())
                 + f"  {seconds:.1f}s" + ("  *best" if best_epoch == epoch else ""))
        record = {"seed": seed, "stage": stage, "epoch": epoch, "loss": loss,
                  "valid": valid, "train_seconds": train_seconds, "seconds": seconds}
        with open(metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        if non_improving >= config.patience:
            break
    model.load_state_dict(best_state)
    return {"epochs": epoch, "best_epoch": best_epoch}


def run_seed(dataset: Dataset, seed: int, config: Config, device: torch.device,
             metrics_file: Path) -> dict[str, object]:
    """SPEC section 5 for one seed: pre-train, test, fine-tune, test."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])  # batch order; the split used default_rng(seed)
    data = DeviceData.from_dataset(dataset, device)
    model = ACMR(dataset.num_items, len(dataset.markets), config.hidden_size, config.num_layers,
                 config.num_heads, config.ff_size, config.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stage_rows = {"pretrain": np.arange(len(dataset.train_user)), "finetune": dataset.target_rows()}
    result: dict[str, object] = {"seed": seed}
    for stage in STAGES:  # the same optimizer carries its Adam state into fine-tuning
        log.info(f"seed {seed} {stage}: {len(stage_rows[stage]):,} training rows")
        epochs = run_stage(stage, model, optimizer, data, stage_rows[stage], rng, config, seed,
                           metrics_file)
        test = evaluate_candidates(model, data, data.test_candidates, config.eval_batch_tokens)
        result[stage] = {**test, **epochs}
        log.info(f"seed {seed} {stage} test  " + "  ".join(f"{k} {test[k]:.4f}" for k in METRICS)
                 + f"  (best epoch {epochs['best_epoch']} of {epochs['epochs']})")
    return result


# ---------------------------------------------------------------- results

def summarize(runs: list[dict[str, object]]) -> dict[str, dict[str, dict[str, float | None]]]:
    return {stage: {metric: mean_and_std([run[stage][metric] for run in runs]) for metric in METRICS}
            for stage in STAGES}


def comparison_table(target: str, summary: dict, num_seeds: int) -> str:
    """Our mean +- std beside the authors' logged run (SPEC section 6), one line per stage."""
    authors = json.loads(AUTHORS_RUNS.read_text())["markets"][target]
    lines = [f"{target}: test metrics, mean +- std over {num_seeds} seed(s); authors' logged run "
             "in brackets",
             f"{'stage':10s}" + "".join(f"{metric:>24s}" for metric in METRICS)]
    for stage in STAGES:
        cells = []
        for metric in METRICS:
            ours = summary[stage][metric]
            std = f"{ours['std']:.4f}" if ours["std"] is not None else "n/a"
            cells.append(f"{ours['mean']:.4f}+-{std} [{authors[stage][metric]:.4f}]")
        lines.append(f"{stage:10s}" + "".join(f"{cell:>24s}" for cell in cells))
    return "\n".join(lines)


def run_target(frames: dict[str, pd.DataFrame], target: str, config: Config, device: torch.device,
               command: str) -> Path:
    """All seeds for one target market, in one run folder; returns the folder."""
    run_dir = make_run_dir(config.log_dir, target)
    handler = start_log_file(run_dir)
    try:
        resolved = {**dataclasses.asdict(config), "target_market": target}
        write_json(run_dir / "config.json", resolved)
        (run_dir / "command.txt").write_text(command + "\n")
        write_json(run_dir / "environment.json", environment(device))
        log.info(f"run folder {run_dir}  (target {target}, {config.seeds} seed(s), device {device})")
        results = {"target_market": target, "seeds": list(range(config.seeds)), "runs": []}
        for seed in range(config.seeds):
            started = time.perf_counter()
            dataset = build_dataset(frames, target, seed, config)
            export_candidates(dataset, run_dir / f"seed{seed}")
            results["runs"].append(run_seed(dataset, seed, config, device, run_dir / "metrics.jsonl"))
            results["runs"][-1]["seconds"] = time.perf_counter() - started
            results["summary"] = summarize(results["runs"])
            write_json(run_dir / "results.json", results)  # kept up to date after every seed
        log.info(comparison_table(target, results["summary"], config.seeds))
        log.info(f"results in {run_dir / 'results.json'}")
    finally:
        log.removeHandler(handler)
        handler.close()
    return run_dir


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    config, _ = parse_overrides(argv)
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    frames = load_markets(config)
    command = shlex.join(["python", "train_model.py", *argv])
    for target in target_markets(config):
        run_target(frames, target, config, device, command)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as error:
        sys.exit(f"error: {error}")
