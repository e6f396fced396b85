"""train_model: batching, chunked steps, early stopping on synthetic data."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from data_loader import DeviceData, build_dataset
from model import ACMR
from speed.cuda_graphs import graph_width
from train_model import (
    batch_loss,
    epoch_batches,
    load_optimizer_state,
    make_optimizer,
    train_epoch,
)

REPO = Path(__file__).resolve().parents[1]


def test_every_row_is_in_exactly_one_batch_and_buckets_hold_similar_lengths(small_config):
    lengths = np.random.default_rng(0).integers(1, 51, size=10_000)
    config = dataclasses.replace(small_config, batch_size=1000)
    batches = epoch_batches(np.random.default_rng(1), lengths, config, True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10_000))
    assert max(np.ptp(lengths[b]) for b in batches) <= 6
    order = [int(lengths[b].min()) for b in batches]
    assert order != sorted(order), "bucketed batches are visited in random order"
    plain = epoch_batches(np.random.default_rng(1), lengths, config, False)
    assert sorted(np.concatenate(plain).tolist()) == list(range(10_000))
    assert min(np.ptp(lengths[b]) for b in plain) > 40
    capped = epoch_batches(np.random.default_rng(1), lengths, dataclasses.replace(config, max_batches_per_epoch=3), True)
    assert len(capped) == 3


def test_chunked_steps_give_the_gradient_of_the_whole_batch(frames, small_config):
    """One batch of 512 rows as one chunk and as several (each a forward and backward pass):
    the same loss and, after one SGD step, the same weights."""
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    rows = np.arange(len(dataset.train_user))
    weights, forward_passes = [], []
    for chunk_floats in (10**9, 2 * 10**5):
        config = dataclasses.replace(small_config, dropout=0.0, batch_size=512, train_chunk_floats=chunk_floats,
                                     max_batches_per_epoch=1)
        torch.manual_seed(0)
        model = ACMR(dataset.num_items, len(dataset.markets), dropout_p=0.0)
        calls = []
        model.register_forward_hook(lambda *_: calls.append(1))
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loss = train_epoch(model, optimizer, data, rows, np.random.default_rng(0), config, "test", bucket=True)
        weights.append((loss, [p.detach().clone() for p in model.parameters()]))
        forward_passes.append(len(calls))
    assert forward_passes[0] == 1 and forward_passes[1] >= 3
    (loss_whole, whole), (loss_chunked, chunked) = weights
    assert abs(loss_whole - loss_chunked) < 1e-5
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_padding_a_batch_to_a_graph_width_keeps_its_loss_and_gradient(frames, small_config):
    """CudaGraphSteps pads each batch's histories to a power of two: the same function."""
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    index = torch.nonzero(data.history_length[data.train_user] < 20).squeeze(1)[::3]  # short histories
    longest = int(data.history_length[data.train_user[index]].max())
    torch.manual_seed(0)
    model = ACMR(dataset.num_items, len(dataset.markets), dropout_p=0.0)
    results = []
    for width in (longest, data.user_history.shape[1]):
        model.zero_grad()
        loss = batch_loss(model, data, index, width, small_config)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert longest < data.user_history.shape[1]
    (trimmed_loss, trimmed), (padded_loss, padded) = results
    torch.testing.assert_close(padded_loss, trimmed_loss)
    for a, b in zip(padded, trimmed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert [graph_width(n, 50) for n in (1, 2, 3, 8, 9, 33, 50)] == [1, 2, 4, 8, 16, 50, 50]


def test_an_optimizer_state_from_a_gpu_run_resumes_with_this_devices_flags(small_config):
    """A GPU run's Adam state (fused, capturable) continues on the CPU as a CPU Adam."""
    model = torch.nn.Linear(3, 1)
    gpu_state = make_optimizer(model, small_config, torch.device("cpu")).state_dict()
    gpu_state["param_groups"][0].update(fused=True, capturable=True)
    optimizer = make_optimizer(model, small_config, torch.device("cpu"))
    load_optimizer_state(optimizer, gpu_state)
    assert (optimizer.param_groups[0]["fused"], optimizer.param_groups[0]["capturable"]) == (False, False)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    assert optimizer.state[model.weight]["step"] == 1
