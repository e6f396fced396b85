"""Train and evaluate ACMR: for each seed, pre-train on all markets (data_markets), fine-tune on the target.

    python train_model.py                                  # config.py's defaults
    python train_model.py --target_market=jp --seeds=1     # any setting as --key=value
    python train_model.py --resume=log/acmr-in-seed0-20261127-040027  # continue an interrupted run
    python train_model.py --help                           # every setting

Each target market gets a run folder <log_dir>/<label>-<target>-<seeds>-<timestamp>/ (the label:
the preset its settings match, reporting/runs.run_label; e.g. log/acmr-in-seeds0-4-20261127-040027)
with the resolved config, the command, the environment, the log, per-epoch metrics, the results,
each seed's evaluation candidates and kept weights (docs/RUNNING.md lists them).
"""
from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import logging
import math
import shlex
import signal
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __name__ == "__main__":  # Ctrl-C while the libraries below load (seconds): exit 130, no traceback
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from config import (
    RENAMED,
    STAGES,
    Config,
    ConfigError,
    active_stages,
    parse_overrides,
    repository_or_given,
    run_command,
    target_markets,
)
from data_loader import (
    DataError,
    Dataset,
    DeviceData,
    build_dataset,
    check_data,
    export_candidates,
    load_markets,
    resample_train_negatives,
)
from evaluate import (
    NonFiniteScores,
    breakdown,
    evaluate_candidates,
    mean_and_std,
    positive_rank,
    ranking_metrics,
    score_candidates,
)
from model import activation_floats, build_model
from reporting.metrics import METRICS, SELECTION_METRIC
from reporting.paired import save_ranks
from reporting.report import comparison_text
from runfolder.checkpoints import (
    CheckpointError,
    Progress,
    load_checkpoint,
    restore_generators,
    resume_config,
    save_checkpoint,
    save_weights,
)
from runfolder.environment import (
    continue_run_folder,
    locked,
    make_run_dir,
    start_run_folder,
)
from runfolder.files import (
    CHECKPOINT,
    DIVERGED,
    WriteError,
    append_line,
    json_text,
    write_json,
    write_text,
)
from runfolder.initial_weights import check_sources, initialise
from speed.cuda_graphs import CudaGraphSteps
from speed.host import configure_host, resolve_device

log = logging.getLogger("acmr")


# ---------------------------------------------------------------- log

def resume_command(run_dir: Path) -> str:
    return shlex.join(["python", "train_model.py", f"--resume={run_dir}"])


def start_log_file(run_dir: Path) -> logging.Handler:
    """Everything logged goes to the console and to <run_dir>/train.log."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return handler


# ---------------------------------------------------------------- divergence; a run's place among several

class Diverged(RuntimeError):
    """Training produced a loss, weight or score that is not finite, a loss that exploded
    (EXPLODED_LOSS), or a stage in which no epoch's validation NDCG@5 rose above 0, whose result
    would be the weights it began with; the message says where."""


# A training loss (the mean binary cross-entropy per row) above this has exploded: a model that
# scores every row 0.5 (logit 0, as an untrained one nearly does) has ln 2 = 0.69, and 10 ln 2
# means the rows' true labels got a geometric mean probability below 2**-10. Of the 12,233 epochs
# under results/, the highest loss is 0.85 (a first epoch); --lr=100 gives 1e5 and more.
EXPLODED_LOSS = 10 * math.log(2)


def diverged(config: Config, seed: int, stage: str, epoch: int, what: str) -> Diverged:
    return Diverged(f"seed {seed} {stage} epoch {epoch}: {what}: training diverged, most likely because "
                    f"lr={config.lr} is too large. The last good checkpoint is kept, but --resume would "
                    f"diverge the same way (it continues exactly): start a new run with a smaller --lr")


@dataclass
class Turn:
    """The place of a target market's run among those of one command (--target_market=all: 7
    in turn), and the wall time of each seed that the earlier markets finished."""
    number: int = 1
    markets: int = 1
    earlier_seeds: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- training

def epoch_batches(rng: np.random.Generator, row_lengths: np.ndarray, config: Config,
                  bucket: bool) -> list[np.ndarray]:
    """Row indices of each batch of one epoch. With `bucket`, rows are sorted by history length
    (random order among equal lengths) and the batches are visited in random order, so each
    batch is padded to little more than its own rows' lengths; without, a plain shuffle."""
    order = rng.permutation(len(row_lengths))
    if bucket:
        order = order[np.argsort(row_lengths[order], kind="stable")]
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if config.max_batches_per_epoch:
        batches = batches[:config.max_batches_per_epoch]
    return batches


def batch_loss(model: nn.Module, data: DeviceData, index: torch.Tensor, width: int,
               config: Config) -> torch.Tensor:
    """Summed training loss of the rows `index`, their histories cut to `width` slots (at least
    their longest history: more slots are padding, which the model masks)."""
    users = data.train_user[index]
    history, candidate = data.user_history[users, :width], data.train_item[index]
    if not config.history_includes_candidate:  # a negative is never in the history
        history = history.masked_fill(history == candidate[:, None], 0)
    logits = model(users, history, candidate, data.user_market[users])
    return F.binary_cross_entropy_with_logits(logits, data.train_label[index], reduction="sum")


def make_optimizer(model: nn.Module, config: Config, device: torch.device) -> torch.optim.Optimizer | None:
    """Adam over the trainable parameters (None for a model without any, as popularity); on a
    GPU fused (one kernel per step) and, with CUDA graphs, capturable."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return None
    on_gpu = device.type == "cuda"
    return torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=on_gpu,
                            capturable=on_gpu and config.cuda_graphs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A checkpoint's optimizer state, with this device's implementation flags (a run may
    resume on another device than it started on: fused and capturable are GPU settings)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group.update({key: optimizer.defaults[key] for key in ("fused", "capturable")})


def make_graph_steps(model: nn.Module, optimizer: torch.optim.Optimizer | None, data: DeviceData,
                     config: Config, device: torch.device) -> CudaGraphSteps | None:
    """The CUDA-graph steps of a run on a GPU with `cuda_graphs`; None elsewhere (eager steps)."""
    if optimizer is None or device.type != "cuda" or not config.cuda_graphs:
        return None
    return CudaGraphSteps(model, optimizer, data.user_history.shape[1], data.train_user.device,
                          lambda index, width: batch_loss(model, data, index, width, config))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: DeviceData, rows: np.ndarray,
                rng: np.random.Generator, config: Config, desc: str, *, bucket: bool,
                graph_steps: CudaGraphSteps | None = None) -> float:
    """One pass over the training rows `rows` in batches (epoch_batches, bucketed or not);
    returns the mean loss. With `graph_steps`, each batch is one replayed CUDA graph.

    Otherwise a batch whose layer activations (model.activation_floats) exceed
    `train_chunk_floats` runs as several chunks whose gradients add up to the batch's (the loss
    is the batch mean either way), so the memory of a step stays bounded however long the
    histories are.
    """
    model.train()
    row_lengths = data.history_length[data.train_user[torch.as_tensor(rows)]].cpu().numpy()
    total, count = torch.zeros((), device=data.train_user.device), 0  # no per-batch device sync
    batches = epoch_batches(rng, row_lengths, config, bucket)
    if graph_steps is not None:  # one copy to the GPU per epoch: a copy per batch would wait for the GPU
        batch_rows = torch.as_tensor(rows[np.concatenate(batches)], device=total.device).split(
            [len(batch) for batch in batches])
    for b, batch in enumerate(tqdm(batches, desc=desc, leave=False, mininterval=2.0)):
        count += len(batch)
        if graph_steps is not None:
            total += graph_steps.step(batch_rows[b], int(row_lengths[batch].max()))
            continue
        floats = activation_floats(model, len(batch), int(row_lengths[batch].max()) + 1)
        optimizer.zero_grad(set_to_none=True)
        for chunk in np.array_split(batch, min(len(batch), -(-floats // config.train_chunk_floats))):
            index = torch.as_tensor(rows[chunk], device=data.train_user.device)
            longest = int(row_lengths[chunk].max())  # = history_length[users].max(), known on the host
            loss = batch_loss(model, data, index, longest, config) / len(batch)
            loss.backward()
            total += loss.detach() * len(batch)
        optimizer.step()
    return total.item() / max(count, 1)


# ---------------------------------------------------------------- one stage

@dataclass
class Training:
    """What one seed trains with: its data on the device, the model and its optimizer (one for
    all stages: Adam's state carries over), the generators of batch order and of redrawn
    negatives, the weights of the current stage's best epoch so far, and the CUDA-graph steps
    (None: eager steps)."""
    config: Config
    dataset: Dataset
    data: DeviceData
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    batch_rng: np.random.Generator
    negatives_rng: np.random.Generator
    best_state: dict
    graph_steps: CudaGraphSteps | None = None


def start_training(dataset: Dataset, config: Config, device: torch.device, seed: int,
                   initialise_model: Callable[[nn.Module], None] | None = None) -> Training:
    """A seed's training at its start: torch's generator seeded with the seed, the model built
    (then `initialise_model`, e.g. --init_weights, before the optimizer is made)."""
    torch.manual_seed(seed)
    batch_rng = np.random.default_rng([seed, 1])  # batch order; the split used default_rng(seed)
    negatives_rng = np.random.default_rng([seed, 2])  # resample_train_negatives only
    data = DeviceData.from_dataset(dataset, device)
    model = build_model(config, dataset).to(device)
    if initialise_model is not None:
        initialise_model(model)
    optimizer = make_optimizer(model, config, device)
    return Training(config, dataset, data, model, optimizer, batch_rng, negatives_rng,
                    best_state=copy.deepcopy(model.state_dict()))


def restore_training(training: Training, checkpoint: dict) -> None:
    """A checkpoint's weights, best weights, optimizer state, generators and training items
    (those of the epoch it was saved after): the seed continues exactly."""
    training.model.load_state_dict(checkpoint["model"])
    training.best_state = checkpoint["best_model"]
    if training.optimizer is not None:
        load_optimizer_state(training.optimizer, checkpoint["optimizer"])
    restore_generators(checkpoint["rng"], training.batch_rng, training.negatives_rng)
    training.data.train_item.copy_(checkpoint["train_item"].to(training.data.train_item.device))


def stage_plan(config: Config, dataset: Dataset, stage: str) -> tuple[np.ndarray, int, bool]:
    """A stage's training rows (all markets' or the target's), its epoch cap and whether its
    batches are bucketed by history length."""
    if stage == "pretrain":
        return np.arange(len(dataset.train_user)), config.pretrain_epochs, config.bucket_pretrain_batches
    return dataset.target_rows(), config.finetune_epochs, config.bucket_finetune_batches


def next_stage(progress: Progress, stage: str) -> None:
    """`progress` at the start of `stage`: no epoch yet, and a fresh early-stopping budget."""
    progress.stage, progress.epoch, progress.best_score, progress.best_epoch, progress.non_improving = (
        stage, 0, 0.0, 0, 0)


def redraw_negatives(training: Training) -> None:
    """New training negatives for every positive (resample_train_negatives), in place."""
    device = training.data.train_item.device
    negative_rows = torch.as_tensor(np.flatnonzero(training.dataset.train_label == 0), device=device)
    new_negatives = resample_train_negatives(training.dataset, training.negatives_rng, training.config)
    training.data.train_item[negative_rows] = torch.as_tensor(new_negatives, device=device)


def check_training(training: Training, progress: Progress, epoch: int, loss: float) -> None:
    """Raise Diverged where the epoch's loss is not finite or exploded, or a weight is not finite."""
    config, seed, stage = training.config, progress.seed, progress.stage
    if not math.isfinite(loss):
        raise diverged(config, seed, stage, epoch, f"the training loss is {loss}")
    if loss > EXPLODED_LOSS:
        raise diverged(config, seed, stage, epoch, f"the training loss is {loss:.3g} per row, over "
                       f"10 ln 2 = {EXPLODED_LOSS:.2f} (an untrained model has about ln 2 = 0.69)")
    if not torch.stack([torch.isfinite(p).all() for p in training.model.parameters()]).all():
        raise diverged(config, seed, stage, epoch, "a weight is not finite (a gradient overflowed)")


def validate(training: Training, progress: Progress, epoch: int) -> dict[str, float]:
    """The validation metrics of the model now; Diverged where a score is not finite."""
    try:
        return evaluate_candidates(training.model, training.data, training.data.valid_candidates,
                                   training.config.eval_batch_floats)
    except NonFiniteScores as error:
        raise diverged(training.config, progress.seed, progress.stage, epoch, f"validation: {error}") from None


def train_stage(training: Training, progress: Progress, after_epoch: Callable[[dict], None]) -> None:
    """Stage `progress.stage` of seed `progress.seed` from epoch `progress.epoch` on (0, or where
    a checkpoint left it): epochs of training, each one validated, until the stage's epoch cap
    or `patience` epochs without a better validation NDCG@5. The authors' early stopping: an
    improvement gives the budget back only with patience_resets. Keeps `progress` and
    training.best_state (the best epoch's weights) up to date and hands each epoch's record
    (metrics.jsonl's) to `after_epoch`; ends with the model at the best epoch's weights.

    Raises Diverged where a loss, weight or validation score is not finite, a loss exploded
    (EXPLODED_LOSS), or no epoch's validation NDCG@5 rose above 0 (the stage's result would be
    the weights it began with)."""
    config, model, seed, stage = training.config, training.model, progress.seed, progress.stage
    rows, epoch_cap, bucket = stage_plan(config, training.dataset, stage)
    if progress.epoch == 0:
        log.info(f"seed {seed} {stage}: {len(rows):,} training rows")
    while training.optimizer is not None and progress.epoch < epoch_cap and progress.non_improving < config.patience:
        epoch = progress.epoch + 1
        started = time.perf_counter()
        if config.resample_train_negatives and progress.epochs_trained > 0:
            redraw_negatives(training)
        progress.epochs_trained += 1
        loss = train_epoch(model, training.optimizer, training.data, rows, training.batch_rng, config,
                           desc=f"seed {seed} {stage} epoch {epoch}", bucket=bucket,
                           graph_steps=training.graph_steps)
        train_seconds = time.perf_counter() - started
        check_training(training, progress, epoch, loss)
        valid = validate(training, progress, epoch)
        seconds = time.perf_counter() - started
        progress.epoch, progress.seconds = epoch, progress.seconds + seconds
        if valid[SELECTION_METRIC] > progress.best_score:
            progress.best_score, progress.best_epoch = valid[SELECTION_METRIC], epoch
            training.best_state = copy.deepcopy(model.state_dict())
            if config.patience_resets:
                progress.non_improving = 0
        else:
            progress.non_improving += 1
        after_epoch({"seed": seed, "stage": stage, "epoch": epoch, "loss": loss, "valid": valid,
                     "train_seconds": train_seconds, "seconds": seconds})
    if progress.epoch and not progress.best_epoch:
        raise diverged(config, seed, stage, progress.epoch, "no epoch's validation NDCG@5 rose above 0 (every "
                       "validation positive ranked below 5th), so the stage learned nothing")
    model.load_state_dict(training.best_state)


# ---------------------------------------------------------------- one seed

def run_seed(run_dir: Path, frames: dict[str, pd.DataFrame], target: str, config: Config,
             device: torch.device, progress: Progress, checkpoint: dict | None, turn: Turn | None = None) -> None:
    """SPEC section 5 for seed `progress.seed`: pre-train, test, fine-tune, test; from the
    checkpoint's state when one is given. Checkpoints after every epoch and every stage.
    Updates `progress` in place; the seed's results end up in `progress.runs`."""
    training = seed_training(run_dir, frames, target, config, device, progress, checkpoint)
    stages = active_stages(config)
    for stage in stages[stages.index(progress.stage):]:
        train_stage(training, progress, lambda record: finish_epoch(run_dir, training, progress, record, turn))
        finish_stage(run_dir, training, progress)
        if stage != stages[-1]:  # the next stage starts from these weights with a fresh budget
            next_stage(progress, stages[stages.index(stage) + 1])
            save_progress(run_dir, training, progress)
    progress.runs.append({"seed": progress.seed, **progress.seed_result, "seconds": progress.seconds})


def seed_training(run_dir: Path, frames: dict[str, pd.DataFrame], target: str, config: Config,
                  device: torch.device, progress: Progress, checkpoint: dict | None) -> Training:
    """The seed's split (its evaluation candidates written to the run folder), model and
    optimizer: from --init_weights or fresh, or as the checkpoint left them mid-seed."""
    dataset = build_dataset(frames, target, progress.seed, config)
    if config.eval_mode == "sampled":  # full ranking's candidates are all the target's items
        progress.seed_result["candidates_sha256"] = export_candidates(dataset, run_dir / f"seed{progress.seed}")
    mid_seed = checkpoint is not None and "model" in checkpoint  # else the seed starts afresh
    load_weights = initial_weights(run_dir, frames, dataset, config, progress) if config.init_weights else None
    training = start_training(dataset, config, device, progress.seed, None if mid_seed else load_weights)
    if mid_seed:
        restore_training(training, checkpoint)
    training.graph_steps = make_graph_steps(training.model, training.optimizer, training.data, config, device)
    return training


def initial_weights(run_dir: Path, frames: dict[str, pd.DataFrame], dataset: Dataset, config: Config,
                    progress: Progress) -> Callable[[nn.Module], None]:
    """What loads the seed's --init_weights into its new model and records their source."""
    def load(model: nn.Module) -> None:
        record = initialise(model, config, dataset, frames, progress.seed, run_dir)
        progress.seed_result["init_weights"] = record
        log.info(f"seed {progress.seed}: model initialised from {record['path']}")
    return load


def save_progress(run_dir: Path, training: Training, progress: Progress) -> None:
    """The checkpoint: `progress` and everything the seed needs to continue exactly."""
    save_checkpoint(run_dir, training.config, progress, training.model, training.best_state, training.optimizer,
                    training.batch_rng, training.negatives_rng, training.data.train_item)


def finish_epoch(run_dir: Path, training: Training, progress: Progress, record: dict,
                 turn: Turn | None) -> None:
    """An epoch's log line, its line of metrics.jsonl, then the checkpoint that counts it."""
    log.info(f"seed {record['seed']} {record['stage']:8s} epoch {record['epoch']:2d}  loss {record['loss']:.4f}  valid "
             + "  ".join(f"{k} {v:.4f}" for k, v in record["valid"].items())
             + f"  {record['seconds']:.1f}s" + ("  *best" if progress.best_epoch == record["epoch"] else ""))
    append_line(run_dir / "metrics.jsonl", json_text(record))
    progress.metrics_lines += 1
    save_progress(run_dir, training, progress)
    log.info(run_line(training.config, progress, turn))


def finish_stage(run_dir: Path, training: Training, progress: Progress) -> None:
    """The stage's best weights kept, its test metrics (and each test user's rank) recorded."""
    config, seed, stage = training.config, progress.seed, progress.stage
    save_weights(run_dir, config, seed, stage, progress.best_epoch, training.best_state, training.dataset)
    try:
        test = test_metrics(training.model, training.data, config)
    except NonFiniteScores as error:
        raise diverged(config, seed, stage, progress.best_epoch, f"test: {error}") from None
    save_ranks(run_dir, seed, stage, test.pop("ranks"), progress.seed_result.get("candidates_sha256"))
    progress.seed_result[stage] = {**test, "epochs": progress.epoch, "best_epoch": progress.best_epoch}
    log.info(f"seed {seed} {stage} test  " + "  ".join(f"{k} {test[k]:.4f}" for k in METRICS)
             + f"  (best epoch {progress.best_epoch} of {progress.epoch})")


def test_metrics(model: nn.Module, data: DeviceData, config: Config) -> dict[str, object]:
    """Test metrics of all target users, and of the groups of docs/PROTOCOL.md's break-downs."""
    scores = score_candidates(model, data, data.test_candidates, config.eval_batch_floats)
    groups = {"repeat_purchase": data.test_repeat, "new_purchase": ~data.test_repeat,
              "item_seen_in_target_training": data.test_item_seen,
              "item_unseen_in_target_training": ~data.test_item_seen}
    return {**ranking_metrics(scores), "breakdown": breakdown(scores, groups),
            "ranks": positive_rank(scores).tolist()}  # per test user: ranks.json (reporting/paired.py)


# ---------------------------------------------------------------- results

def summarize(runs: list[dict[str, object]]) -> dict[str, dict[str, dict[str, float | None]]]:
    return {stage: {metric: mean_and_std([run[stage][metric] for run in runs]) for metric in METRICS}
            for stage in STAGES if stage in runs[0]}


def run_line(config: Config, progress: Progress, turn: Turn | None = None) -> str:
    """Where the whole run of a target market stands: market k of M (several in turn), seed i of
    N, stage and epoch, the time spent in epochs, and the time left, estimated from the seeds
    finished so far (the earlier markets' too: every seed pre-trains on all markets alike)."""
    turn = turn or Turn()
    market = config.target_market + (f" (market {turn.number} of {turn.markets})" if turn.markets > 1 else "")
    number = progress.seed - config.first_seed + 1
    cap = config.pretrain_epochs if progress.stage == "pretrain" else config.finetune_epochs
    finished = [run["seconds"] for run in progress.runs]
    line = (f"  {market}: seed {progress.seed} ({number} of {config.seeds}), {progress.stage} "
            f"epoch {progress.epoch} of at most {cap}, {duration(sum(finished) + progress.seconds)} elapsed")
    measured = [*turn.earlier_seeds, *finished]
    if not measured:
        return line + f", time left: estimated when seed {config.first_seed} ends"
    per_seed = sum(measured) / len(measured)
    left = max(per_seed - progress.seconds, 0.0) + per_seed * (config.seeds - number)
    if turn.markets == 1:
        return line + f", about {duration(left)} left"
    later = per_seed * config.seeds * (turn.markets - turn.number)
    return line + (f", about {duration(left)} left for {config.target_market}, {duration(left + later)} for all "
                   f"{turn.markets} markets")


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def run_seeds(run_dir: Path, frames: dict[str, pd.DataFrame], config: Config, device: torch.device,
              checkpoint: dict | None, turn: Turn | None = None) -> list[dict]:
    """All seeds of one target market in its run folder, from the checkpoint of a resumed run or
    from the start; returns results.json's `runs`. results.json is written after every seed
    (`complete` after the last), the checkpoint is deleted at the end. On a failure that leaves a
    checkpoint, says how to resume; after the end (the final table), where the results are."""
    progress = (Progress(**checkpoint["progress"]) if checkpoint
                else Progress(seed=config.first_seed, stage=active_stages(config)[0]))
    handler = start_log_file(run_dir)
    try:
        if checkpoint is None:
            log.info(f"run folder {run_dir}  (target {config.target_market}, {config.seeds} seed(s), device {device})")
        else:
            keep_lines(run_dir / "metrics.jsonl", progress.metrics_lines)
            log.info(f"resuming {run_dir} at seed {progress.seed} {progress.stage} after epoch "
                     f"{progress.epoch}  (device {device})")
        seeds = list(range(config.first_seed, config.first_seed + config.seeds))
        results = {"target_market": config.target_market, "seeds": seeds}
        while progress.seed <= seeds[-1]:
            run_seed(run_dir, frames, config.target_market, config, device, progress, checkpoint, turn)
            checkpoint = None
            results.update(complete=progress.seed == seeds[-1], runs=progress.runs, summary=summarize(progress.runs))
            write_json(run_dir / "results.json", results)  # kept up to date after every seed
            progress = Progress(seed=progress.seed + 1, stage=active_stages(config)[0], runs=progress.runs,
                                metrics_lines=progress.metrics_lines)
            save_checkpoint(run_dir, config, progress)
        (run_dir / CHECKPOINT).unlink()  # the run is complete: results.json is what counts
        log.info(comparison_text([run_dir]))
        log.info(f"results in {run_dir / 'results.json'}")
        return progress.runs
    except Diverged as error:
        write_text(run_dir / DIVERGED, f"{error}\n")
        raise
    except KeyboardInterrupt:
        if not (run_dir / CHECKPOINT).is_file():  # stopped in the final table: nothing is left to resume
            log.info(f"interrupted after the run completed: {completed(run_dir)}")
        else:
            log.info(f"interrupted: progress up to the last finished epoch is saved in {run_dir / CHECKPOINT}; "
                     f"continue with: {resume_command(run_dir)}")
        raise
    except WriteError as error:
        raise WriteError(f"{error}; once it can be written (room on the disk, permissions), continue with: "
                         f"{resume_command(run_dir)}") from None
    except Exception:
        if not (run_dir / CHECKPOINT).is_file():
            log.info(f"stopped by the error below after the run completed: {completed(run_dir)}")
        else:
            log.info(f"stopped by the error below; the run continues from its last checkpoint with: "
                     f"{resume_command(run_dir)}")
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def completed(run_dir: Path) -> str:
    """Where a completed run's results are, and the command that prints its table."""
    return (f"its results are in {run_dir / 'results.json'}; its table: "
            f"{shlex.join(['python', 'evaluate.py', 'report', str(run_dir)])}")


def keep_lines(path: Path, count: int) -> None:
    """metrics.jsonl cut back to its first `count` lines, those of the epochs before the checkpoint
    a run resumes from: the lines of later epochs (which the resumed run writes again) and a
    half line that an interruption left at the end go."""
    if path.exists():
        whole_lines = path.read_text().split("\n")[:-1]  # the last piece is "" or a half line
        write_text(path, "".join(line + "\n" for line in whole_lines[:count]))


def candidates_sha256(path: Path) -> str | None:
    """The SHA-256 of a candidate file's table (export_candidates' sum); None where the file is
    missing or not whole gzip."""
    try:
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return None


def check_candidates(run_dir: Path, frames: dict[str, pd.DataFrame], config: Config, runs: list[dict]) -> None:
    """The candidate files of the seeds that a resumed run has finished (`runs`, as results.json),
    against the SHA-256 that it recorded: a file that is missing or differs is written again from
    its seed's split, which must give the recorded sums (else CheckpointError)."""
    for run in runs:
        recorded = run.get("candidates_sha256")  # none with eval_mode=full
        folder = run_dir / f"seed{run['seed']}"
        damaged = [f"{split}_candidates.tsv.gz" for split, digest in (recorded or {}).items()
                   if candidates_sha256(folder / f"{split}_candidates.tsv.gz") != digest]
        if not damaged:
            continue
        log.info(f"{folder}: {', '.join(damaged)} missing or not what results.json records; writing the "
                 f"candidates of seed {run['seed']} again")
        dataset = build_dataset(frames, config.target_market, run["seed"], config)
        if export_candidates(dataset, folder) != recorded:
            raise CheckpointError(f"{folder}: the candidates of seed {run['seed']} drawn again differ from "
                                  f"those results.json records: this code or data draws other candidates "
                                  f"than the run did; resume it with the version that started it")


def resume(run_dir: Path, overrides: Config, given: set[str], command: str) -> None:
    """Continue the run in `run_dir` from its checkpoint, `given` settings of `overrides` changed."""
    config = resume_config(run_dir, overrides, given)
    with locked(run_dir):
        checkpoint = load_checkpoint(run_dir, config)
        device = resolve_device(config.device)
        configure_host(config)
        frames = load_markets(config)
        check_candidates(run_dir, frames, config, checkpoint["progress"]["runs"])
        continue_run_folder(run_dir, device, command)
        run_seeds(run_dir, frames, config, device, checkpoint)


def start(config: Config, argv: list[str]) -> None:
    """A new run folder per target market (of the command line `argv`), each run in turn; for
    several, all their tables at the end. Ctrl-C in one says how to run the markets not begun."""
    command = shlex.join(["python", "train_model.py", *argv])
    device = resolve_device(config.device)
    configure_host(config)
    frames = load_markets(config)
    targets = target_markets(config)
    check_data(frames, targets, config)  # before any run folder
    check_sources(config, frames)
    run_dirs, turn = [], Turn(markets=len(targets))
    for number, target in enumerate(targets, 1):
        turn.number = number
        target_config = dataclasses.replace(config, target_market=target)
        run_dirs.append(make_run_dir(repository_or_given(config, "log_dir"), target_config))
        try:
            with locked(run_dirs[-1]):
                start_run_folder(run_dirs[-1], target_config, device, command)
                runs = run_seeds(run_dirs[-1], frames, target_config, device, checkpoint=None, turn=turn)
        except KeyboardInterrupt:
            if number < len(targets):
                log.info(f"the target markets after {target} were not begun; run them with: "
                         + later_markets_command(argv, targets[number:]))
            raise
        turn.earlier_seeds += [run["seconds"] for run in runs]
    if len(run_dirs) > 1:
        log.info("all target markets:\n" + comparison_text(run_dirs))


def later_markets_command(argv: list[str], markets: list[str]) -> str:
    """The shell command that runs the command line `argv` on each of `markets` in turn (a loop
    for several, which a Ctrl-C ends)."""
    settings = shlex.join(["python", "train_model.py", *(a for a in argv if not a.startswith("--target_market="))])
    if len(markets) == 1:
        return f"{settings} --target_market={markets[0]}"
    return f"for market in {' '.join(markets)}; do {settings} --target_market=$market || break; done"


def main(argv: list[str]) -> None:
    # Ctrl-C, tools/sweep.py's deadline or a scheduler's SIGTERM stops the run at its last checkpoint,
    # also when it was started in the background, where the shell hands SIGINT over ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    config, extra = parse_overrides(argv, extra={"resume": str})
    if "resume" not in extra:
        start(config, argv)
        return
    given = {arg[2:].split("=", 1)[0] for arg in argv} - {"resume"}
    resume(Path(extra["resume"]), config, {new for key in given for new in RENAMED.get(key, (key,))},
           shlex.join(["python", "train_model.py", *argv]))


if __name__ == "__main__":
    run_command(main, (ConfigError, DataError, CheckpointError, WriteError, Diverged))
