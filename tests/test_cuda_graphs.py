"""cuda_graphs.CudaGraphSteps: training steps replayed as CUDA graphs make the same steps as eager
ones. Needs a GPU (skipped elsewhere; tools/gpu_run.sh runs it first on a GPU machine)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from data_loader import DeviceData, build_dataset
from model import ACMR
from speed.cuda_graphs import CudaGraphSteps
from train_model import batch_loss, make_optimizer, train_epoch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def train(frames, config, graphs: bool, epochs: int = 3):
    device = torch.device("cuda")
    dataset = build_dataset(frames, "in", seed=0, config=config)
    data = DeviceData.from_dataset(dataset, device)
    config = dataclasses.replace(config, cuda_graphs=graphs)
    torch.manual_seed(0)
    model = ACMR(dataset.num_items, len(dataset.markets), dropout_p=config.dropout).to(device)
    optimizer = make_optimizer(model, config, device)
    loss = lambda index, width: batch_loss(model, data, index, width, config)  # noqa: E731
    steps = CudaGraphSteps(model, optimizer, data.user_history.shape[1], data.train_user.device, loss) if graphs else None
    rng, rows = np.random.default_rng(0), np.arange(len(dataset.train_user))
    losses = [train_epoch(model, optimizer, data, rows, rng, config, "test", bucket=True, graph_steps=steps) for _ in range(epochs)]
    return losses, [p.detach().clone() for p in model.parameters()], steps


def test_graph_steps_make_the_eager_steps(frames, small_config):
    """Without dropout (whose masks come in another order), three epochs of replayed graphs
    end where three eager epochs end; batches of several widths got graphs. The losses agree
    closely; the weights less so, as Adam turns rounding differences of near-zero gradients
    (graphs pad to other widths) into steps of up to lr = 1e-3: on an H100 they differed by up
    to 3.1e-3 after these 168 steps, so the tolerance is 1e-2 (a wrong step would move the
    losses far more)."""
    config = dataclasses.replace(small_config, dropout=0.0, batch_size=64)
    eager_losses, eager_weights, _ = train(frames, config, graphs=False)
    graph_losses, graph_weights, steps = train(frames, config, graphs=True)
    assert len({width for _, width in steps.graphs}) >= 2
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-4)
    for graph_weight, eager_weight in zip(graph_weights, eager_weights):
        torch.testing.assert_close(graph_weight, eager_weight, rtol=0.0, atol=1e-2)


def test_graph_steps_with_dropout_lower_the_loss_over_four_epochs(frames, small_config):
    config = dataclasses.replace(small_config, batch_size=64)
    losses, _, steps = train(frames, config, graphs=True, epochs=4)
    assert steps.graphs and losses[-1] < losses[0]
