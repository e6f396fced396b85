"""Time each phase of a training run and its peak memory; print a table and write JSON.

    python -m tools.bench --target_market=uk                      # CPU here, GPU where there is one
    python -m tools.bench --target_market=uk --full_run=true      # also one whole pre-train + fine-tune
    python -m tools.bench --target_market=uk --json=bench.json --baseline_batches=5

Phases: data preparation (read + split + negatives + histories), one pre-training epoch (all
~0.66 M rows, bucketed and trimmed as train_model.py does; on a GPU with CUDA graphs also a
second epoch, which replays the graphs that the first captured), one validation pass on the
target, and optionally a whole (market, seed) run. `--baseline_batches=N` also times N
batches the way the authors' code runs them (nn.TransformerEncoder, every row padded to 50
history slots) and extrapolates to an epoch. Takes the same --key=value settings as
train_model.py: e.g. `--fast_kernels=false` times model.py's plain torch path on CPU instead of
the compiled kernels (speed/cpu_kernels.py).
"""
from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from config import Config, ConfigError, parse_overrides, run_command
from data_loader import DataError, Dataset, DeviceData, build_dataset, load_markets
from evaluate import evaluate_candidates
from model import ACMR, build_model
from runfolder.checkpoints import Progress
from runfolder.environment import environment
from runfolder.files import write_text
from speed.host import configure_host, resolve_device
from train_model import make_graph_steps, make_optimizer, run_seed, train_epoch


class TorchEncoder(nn.Module):
    """nn.TransformerEncoder behind model.Encoder's call signature (for the baseline timing)."""

    def __init__(self, config) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(config.hidden_size, config.num_heads, config.ff_size,
                                           config.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (B, T, H); padding (B, T) True at padded tokens."""
        return self.encoder(x, src_key_padding_mask=padding)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    peak = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def baseline_seconds_per_batch(dataset: Dataset, data: DeviceData, config: Config, device: torch.device,
                               batches: int) -> float:
    """Seconds per training batch the authors' way: nn.TransformerEncoder, torch's dropout, 50
    padded history slots."""
    model = ACMR(dataset.num_items, len(dataset.markets), config.hidden_size, config.num_layers,
                 config.num_heads, config.ff_size, config.dropout, fast_kernels=False).to(device)
    model.encoder = TorchEncoder(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_function = nn.BCEWithLogitsLoss()
    rows = torch.randperm(len(data.train_user), device=device)
    timings = []
    for b in range(batches + 1):  # the first batch warms up
        index = rows[b * config.batch_size:(b + 1) * config.batch_size]
        users = data.train_user[index]
        synchronize(device)
        started = time.perf_counter()
        logits = model(users, data.user_history[users], data.train_item[index], data.user_market[users])
        loss = loss_function(logits, data.train_label[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        synchronize(device)
        timings.append(time.perf_counter() - started)
    return float(np.mean(timings[1:]))


def main(argv: list[str]) -> dict[str, object]:
    config, extra = parse_overrides(argv, extra={"json": str, "full_run": bool,
                                                 "baseline_batches": int})
    target = config.target_market if config.target_market != "all" else "uk"
    device = resolve_device(config.device)
    configure_host(config)
    report: dict[str, object] = {"target_market": target, "environment": environment(device),
                                 "command": " ".join(["python -m tools.bench", *argv])}

    started = time.perf_counter()
    frames = load_markets(config)
    dataset = build_dataset(frames, target, seed=0, config=config)
    report["data_preparation_s"] = time.perf_counter() - started

    torch.manual_seed(0)
    data = DeviceData.from_dataset(dataset, device)
    model = build_model(config, dataset).to(device)
    optimizer = make_optimizer(model, config, device)
    graph_steps = make_graph_steps(model, optimizer, data, config, device)
    rows = np.arange(len(dataset.train_user))
    for epoch in ("pretrain_epoch_s", "pretrain_second_epoch_s")[:2 if graph_steps else 1]:
        synchronize(device)  # the second epoch replays the graphs that the first captured
        started = time.perf_counter()
        train_epoch(model, optimizer, data, rows, np.random.default_rng(0), config, "pretrain epoch",
                    bucket=config.bucket_pretrain_batches, graph_steps=graph_steps)
        synchronize(device)
        report[epoch] = time.perf_counter() - started
    report["pretrain_batches"] = -(-len(rows) // config.batch_size)

    evaluate_candidates(model, data, data.valid_candidates, config.eval_batch_floats)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    evaluate_candidates(model, data, data.valid_candidates, config.eval_batch_floats)
    synchronize(device)
    report["validation_pass_s"] = time.perf_counter() - started

    report.update(peak_memory_mb(device))  # before the baseline, whose 50-slot padding costs more

    if extra.get("baseline_batches"):
        per_batch = baseline_seconds_per_batch(dataset, data, config, device, extra["baseline_batches"])
        report["baseline_s_per_batch"] = per_batch
        report["baseline_epoch_s_extrapolated"] = per_batch * report["pretrain_batches"]

    if extra.get("full_run"):  # data preparation included, as in train_model.py
        with tempfile.TemporaryDirectory() as run_dir:
            progress = Progress()
            started = time.perf_counter()
            run_seed(Path(run_dir), frames, target, config, device, progress, checkpoint=None)
            report["full_run_s"] = time.perf_counter() - started
        report["full_run_epochs"] = {stage: progress.runs[0][stage]["epochs"]
                                     for stage in ("pretrain", "finetune")}

    print(f"\nbenchmark, target {target}, device {device} ({report['environment']['device_name']}), "
          f"{torch.get_num_threads()} threads")
    for key, value in report.items():
        if isinstance(value, float):
            print(f"  {key:32s} {value:10.2f}")
    if "json" in extra:
        write_text(Path(extra["json"]), json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    run_command(main, (ConfigError, DataError))
