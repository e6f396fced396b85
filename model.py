"""ACMR, the cross-market recommender of Hu, Nakagawa, Cai, Ren and Deng, "Enhancing
cross-market recommendations by addressing negative transfer and leveraging item
co-occurrences" (Information Systems 124, 2024), in plain torch (docs/SPEC.md section 4).

One example is (a user's history items, one candidate item, the user's market). Every token,
history and candidate alike, is `item_embedding[item] + market_embedding[market]`, then
LayerNorm and dropout: the item table is shared by all markets (market-agnostic), the market
vector is market-specific. A bidirectional Transformer encoder (post-norm layers, as
`nn.TransformerEncoderLayer`) reads [history..., candidate], padded keys masked out; the user
vector is the mean of the outputs at the real history positions, the candidate vector the
output at the candidate position, and one linear layer scores their concatenation.

`fast_kernels` (config.py; on by default), chosen when the model is built, runs dropout,
attention and whole layers at evaluation as compiled kernels when the tensors are on the CPU
(speed/cpu_kernels.py): the same function to float rounding, with dropout masks from the
kernels' own seeded generator. Off, or on any other device (each forward checks where its input
is: a model may be moved to a GPU), the torch ops below run: the reference path.

Where this differs from the authors' code (github.com/laowangzi/ACMR): docs/SPEC.md section 9.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines.models import Popularity, build_baseline
from config import Config
from data_loader import Dataset
from speed import cpu_kernels


def dropout(x: torch.Tensor, p: float, training: bool, compiled: bool, relu: bool = False) -> torch.Tensor:
    """Inverted dropout of x, or of relu(x) with `relu`, in training; identity (after the ReLU)
    otherwise. `compiled` (x on the CPU): one compiled pass (cpu_kernels.dropout)."""
    if training and p > 0.0 and compiled:
        return cpu_kernels.dropout(x, p, relu)
    x = F.relu(x) if relu else x
    return F.dropout(x, p, training=True) if training and p > 0.0 else x


def attention(qkv: torch.Tensor, padding: torch.Tensor, num_heads: int, p: float, compiled: bool) -> torch.Tensor:
    """Multi-head attention with dropout p on the probabilities: qkv (B, T, 3H) the queries,
    keys and values from `in_proj`, padding (B, T) True at padded keys; returns the heads'
    outputs side by side (B, T, H), before `out_proj`. `compiled` (qkv on the CPU): one compiled
    pass forward and one backward (cpu_kernels.attention)."""
    if compiled:
        return cpu_kernels.attention(qkv, padding, num_heads, p)
    batch, length, hidden = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    head_size = hidden // num_heads
    query, key, value = qkv.view(batch, length, 3, num_heads, head_size).permute(2, 0, 3, 1, 4)  # (B, heads, T, d)
    bias = torch.zeros(padding.shape, dtype=qkv.dtype, device=qkv.device).masked_fill(padding, float("-inf"))
    scores = query @ key.transpose(-2, -1) / math.sqrt(head_size) + bias[:, None, None, :]  # (B, heads, Tq, Tk)
    probabilities = F.dropout(torch.softmax(scores, dim=-1), p, training=p > 0.0)
    return (probabilities @ value).transpose(1, 2).reshape(batch, length, hidden)


class EncoderLayer(nn.Module):
    """`nn.TransformerEncoderLayer(hidden, heads, ff, dropout, batch_first=True)`: post-norm,
    ReLU, dropout on the attention probabilities, after the attention and inside and after the
    feed-forward block; the same parameters (`self_attn.in_proj_weight`, `linear1`, `norm1`, ...).
    `fast_kernels`: the compiled CPU kernels where they apply."""

    def __init__(self, hidden_size: int, num_heads: int, ff_size: int, dropout_p: float,
                 fast_kernels: bool = True) -> None:
        super().__init__()
        # created in nn.TransformerEncoderLayer's order, so that a seed gives the same initial
        # weights; self_attn holds in_proj and out_proj (its forward is not used)
        self.self_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.linear1 = nn.Linear(hidden_size, ff_size)
        self.linear2 = nn.Linear(ff_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.num_heads = num_heads
        self.p = dropout_p
        self.fast_kernels = fast_kernels

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (B, T, H); padding (B, T) True at padded tokens. Returns (B, T, H). With the
        compiled kernels, evaluation without autograd runs the whole layer at once."""
        compiled = self.fast_kernels and x.device.type == "cpu"
        if compiled and not self.training and not torch.is_grad_enabled():
            return cpu_kernels.encoder_layer_inference(self, x, padding)
        p = self.p if self.training else 0.0
        qkv = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)  # (B, T, 3H)
        attended = attention(qkv, padding, self.num_heads, p, compiled)  # (B, T, H)
        x = self.norm1(x + dropout(self.self_attn.out_proj(attended), p, self.training, compiled))
        hidden = dropout(self.linear1(x), p, self.training, compiled, relu=True)  # (B, T, ff)
        return self.norm2(x + dropout(self.linear2(hidden), p, self.training, compiled))


class Encoder(nn.Module):
    """`num_layers` copies of one layer (so identical at init), as `nn.TransformerEncoder` builds
    them; parameters `layers.<i>.*`."""

    def __init__(self, layer: EncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (B, T, H); padding (B, T) True at padded tokens. Returns (B, T, H)."""
        for layer in self.layers:
            x = layer(x, padding)
        return x


class ACMR(nn.Module):
    """The model. `market_embedding` chooses the market-specific part: "shared" (the paper's: one
    vector per market), "none" (ablation: no market-specific part) or "item" (our extension: one
    vector per (item, market), added to the shared item vector). `fast_kernels`: the compiled
    CPU kernels where they apply (config.fast_kernels), in the embeddings' dropout and in every
    encoder layer; `model.fast_kernels = flag` switches them all on a built model."""

    def __init__(self, num_items: int, num_markets: int, hidden_size: int = 32,
                 num_layers: int = 4, num_heads: int = 8, ff_size: int = 128,
                 dropout_p: float = 0.3, market_embedding: str = "shared", fast_kernels: bool = True) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)  # row 0: padding
        self.num_markets = num_markets
        self.market_embedding_kind = market_embedding
        if market_embedding == "shared":
            self.market_embedding = nn.Embedding(num_markets, hidden_size)
        elif market_embedding == "item":
            self.market_embedding = nn.Embedding((num_items + 1) * num_markets, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.encoder = Encoder(EncoderLayer(hidden_size, num_heads, ff_size, dropout_p, fast_kernels), num_layers)
        self.score = nn.Linear(2 * hidden_size, 1)
        self.p = dropout_p
        self._fast_kernels = fast_kernels

    @property
    def fast_kernels(self) -> bool:
        return self._fast_kernels

    @fast_kernels.setter
    def fast_kernels(self, flag: bool) -> None:
        self._fast_kernels = flag
        for layer in self.encoder.layers:
            layer.fast_kernels = flag

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        """users (B,) (unused: the baselines' signature); history_items (B, L) item ids, 0 =
        padding; candidate_item (B,); market_ids (B,). Returns the logits (B,)."""
        tokens = torch.cat([history_items, candidate_item[:, None]], dim=1)  # (B, L+1)
        x = self.item_embedding(tokens)  # (B, L+1, H)
        if self.market_embedding_kind == "shared":
            x = x + self.market_embedding(market_ids)[:, None, :]
        elif self.market_embedding_kind == "item":
            x = x + self.market_embedding(tokens * self.num_markets + market_ids[:, None])
        x = dropout(self.norm(x), self.p, self.training, self.fast_kernels and x.device.type == "cpu")
        padding = tokens == 0  # (B, L+1)
        x = self.encoder(x, padding)  # (B, L+1, H)
        in_history = (~padding[:, :-1]).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        user_vector = (x[:, :-1] * in_history).sum(1) / in_history.sum(1).clamp(min=1)  # (B, H)
        candidate_vector = x[:, -1]  # (B, H)
        return self.score(torch.cat([user_vector, candidate_vector], dim=-1)).squeeze(-1)  # (B,)


def activation_floats(model: nn.Module, num_sequences: int, num_tokens: int) -> int:
    """Floats of one encoder layer's activations for `num_sequences` sequences of `num_tokens`
    tokens: per token, the feed-forward part's ff_size and the attention's num_heads x
    num_tokens probabilities. The trainer and the evaluator keep it under a budget
    (train_chunk_floats, eval_batch_floats), so that memory stays bounded for long histories.
    The baselines have no encoder: they are budgeted as an ACMR of config.py's default sizes
    (ff 128, 8 heads), which is how their batches have always been split."""
    ff_size, num_heads = 128, 8
    if isinstance(model, ACMR):
        layer = model.encoder.layers[0]
        ff_size, num_heads = layer.linear1.out_features, layer.num_heads
    return num_sequences * num_tokens * (ff_size + num_heads * num_tokens)


def build_model(config: Config, dataset: Dataset) -> nn.Module:
    """The model `config.model` names, sized for `dataset` (a data_loader.Dataset)."""

    num_users, num_items, num_markets = len(dataset.user_names), dataset.num_items, len(dataset.markets)
    if config.model == "acmr":
        return ACMR(num_items, num_markets, config.hidden_size, config.num_layers, config.num_heads,
                    config.ff_size, config.dropout, config.market_embedding, config.fast_kernels)
    if config.model == "popularity":
        target_rows = dataset.target_rows()
        target_positives = dataset.train_item[target_rows][dataset.train_label[target_rows] == 1]
        counts = torch.bincount(torch.as_tensor(target_positives), minlength=num_items + 1)
        return Popularity(counts)
    return build_baseline(config.model, num_users, num_items, config)
