"""Training steps on a GPU replayed as CUDA graphs (the `cuda_graphs` setting; speed only).

train_model.make_graph_steps builds them for a run on a GPU; on a CPU, or with
`--cuda_graphs=false`, training runs eager steps.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn


def graph_width(longest: int, max_width: int) -> int:
    """History slots of a CUDA graph step for a batch whose longest history is `longest`: the
    next power of two, at most `max_width`."""
    return min(max_width, 1 << max(longest - 1, 0).bit_length())


class CudaGraphSteps:
    """Training steps on a GPU replayed as CUDA graphs (`cuda_graphs`, on by default there).

    Eagerly, a step of ACMR is ~900 tiny kernels that one Python process launches at ~12 ms per
    batch of 1024 while the GPU idles (docs/SPEED.md). Captured once as a graph (forward,
    backward and Adam's update), it is one launch. A graph has fixed shapes, so there is one per
    (batch size, history width), the width being the batch's longest history rounded up to a
    power of two (at most the data's width): the extra slots are padding, which the model masks,
    so the function is the one of the trimmed batch. Every batch still makes exactly one
    optimizer step on its own rows: the first batch of a shape runs eagerly (the warm-up that
    capturing needs), the second is captured and replayed, later ones copy their row indices
    into the graph's index tensor and replay it. Unlike the eager path, a batch never runs as
    chunks (`train_chunk_floats` bounds CPU memory; a graph of 1024 x 51 tokens takes ~1.5 GB).
    Dropout draws from torch's CUDA generator, which graphs support, in another order than
    eager steps would: like any change of batch composition, the same function with other masks.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, history_width: int,
                 device: torch.device, batch_loss: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        """`history_width`: the data's history slots (the widest graph); `batch_loss(index,
        width)`: the summed loss of the training rows `index`, their histories cut to `width`
        slots (train_model.batch_loss)."""
        self.model, self.optimizer, self.batch_loss = model, optimizer, batch_loss
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")  # the warm-up steps
        self.max_width = history_width
        self.stream = torch.cuda.Stream(device)  # capture wants warm-up off the main stream
        self.warmed_up: set[tuple[int, int]] = set()
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def step(self, index: torch.Tensor, longest: int) -> torch.Tensor:
        """One optimizer step on the training rows `index` (on the GPU; longest history
        `longest`); returns their summed loss, a device tensor to consume at once (a graph's
        output is overwritten by its next replay)."""
        size = len(index)
        shape = (size, graph_width(longest, self.max_width))
        if shape in self.graphs:
            graph, graph_index, graph_loss = self.graphs[shape]
            graph_index.copy_(index)
            graph.replay()
            return graph_loss * size
        main = torch.cuda.current_stream()
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            self.optimizer.zero_grad(set_to_none=True)
            if shape in self.warmed_up:
                graph, graph_index = torch.cuda.CUDAGraph(), index.clone()
                with torch.cuda.graph(graph):
                    graph_loss = self.batch_loss(graph_index, shape[1]) / size
                    graph_loss.backward()
                    self.optimizer.step()
                self.graphs[shape] = graph, graph_index, graph_loss.detach()  # not its autograd graph
                graph.replay()  # capturing ran nothing
            else:
                graph_loss = self.batch_loss(index, shape[1]) / size
                graph_loss.backward()
                self.optimizer.step()
                self.warmed_up.add(shape)
            loss = graph_loss.detach() * size
        main.wait_stream(self.stream)
        return loss
