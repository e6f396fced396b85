"""The ACMR model (Hu et al., "Enhancing cross-market recommendations by addressing negative
transfer and leveraging item co-occurrences", Information Systems 124, 2024).

One example is (a user's history items, one candidate item, the user's market). Every token,
history and candidate alike, is `item_embedding[item] + market_embedding[market]`: the item
table is shared by all markets (market-agnostic), the market vector is market-specific.
A bidirectional Transformer encoder reads [history..., candidate]; the user vector is the
mean of the outputs at the real history positions, the candidate vector the output at the
candidate position, and one linear layer scores their concatenation.

Deviations from the authors' code (github.com/laowangzi/ACMR), none of which changes the
function the model computes:
- The encoder is written out here instead of calling `nn.TransformerEncoder`: the same
  post-norm layers (ReLU, dropout on the attention probabilities, after the attention, inside
  and after the feed-forward block), the same parameter names, and, for a given seed, the
  same initial weights (all layers start as copies of one, as `nn.TransformerEncoder` does).
  tests/test_model.py checks outputs and initial weights against `nn.TransformerEncoder`.
  The reason is speed on CPU, where drawing dropout masks dominated a training step: see
  `dropout` below.
- `forward` returns the logit; the authors apply the sigmoid inside the model and train with
  BCELoss. We train with BCEWithLogitsLoss (the same loss, numerically safer) and rank on
  logits, so that a saturated sigmoid cannot create ties at evaluation.
- A batch may be padded only to its longest history instead of always to 50 slots. Padded
  positions are masked as attention keys and left out of the mean, so the output is the same
  (tests/test_model.py checks it); only the cost changes.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange
from torch import nn


@njit(parallel=True, fastmath=True, cache=True)
def _dropout_cpu(x: np.ndarray, seed: int, threshold: int, scale: float, relu: bool,
                 out: np.ndarray, mask: np.ndarray) -> None:
    """out = x * mask, mask = scale or 0 per element (flat arrays; with relu also 0 where
    x <= 0). Elements 2j and 2j + 1 take the low and high 31 bits of SplitMix64's output for
    counter j from `seed`, kept where they are >= threshold: a mask depends on the seed
    alone, not on the number of threads."""
    n, chunks = x.shape[0], 16
    pairs = (n + 1) // 2
    per_chunk = (pairs + chunks - 1) // chunks
    for chunk in prange(chunks):
        for j in range(chunk * per_chunk, min(pairs, (chunk + 1) * per_chunk)):
            z = np.uint64(seed) + np.uint64(j) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            low = scale * ((z & np.uint64(0x7FFFFFFF)) >= np.uint64(threshold))
            high = scale * (((z >> np.uint64(32)) & np.uint64(0x7FFFFFFF)) >= np.uint64(threshold))
            i = 2 * j
            if relu:
                low *= x[i] > 0
                high *= i + 1 < n and x[i + 1] > 0
            mask[i], out[i] = low, x[i] * low
            if i + 1 < n:  # n odd: the last output decides one element
                mask[i + 1], out[i + 1] = high, x[i + 1] * high


class _DropoutCPU(torch.autograd.Function):
    """Dropout (of relu(x) with `relu`) in one pass over x (`_dropout_cpu`); the backward
    multiplies by the saved mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int, relu: bool) -> torch.Tensor:
        x = x.detach().contiguous()
        out, mask = torch.empty_like(x), torch.empty_like(x)
        _dropout_cpu(x.view(-1).numpy(), seed, round(p * 2**31), x.new_tensor(1 / (1 - p)).numpy()[()],
                     relu, out.view(-1).numpy(), mask.view(-1).numpy())
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def dropout(x: torch.Tensor, p: float, training: bool, relu: bool = False) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p);
    with `relu`, of relu(x) (one pass on CPU instead of two).

    On CPU, torch draws one 32-bit random number per element from its Mersenne Twister
    (~9 ns each here) and builds the result in several passes over memory, which made dropout
    half of a training step. Here one compiled pass (`_dropout_cpu`, numba) draws the random
    bits, a counter-based SplitMix64 seeded for each call by one draw of torch's generator (so
    `torch.manual_seed` still fixes every mask and a checkpoint of torch's generator state
    resumes them), and writes the result and the mask. Each 64-bit output decides two
    elements: its two 32-bit halves, each cut to 31 uniform bits, are compared with
    round(p * 2^31), so the drop probability is p to within 5e-10. Other devices use
    `F.dropout`, which is fast there.
    """
    if training and p > 0.0 and x.device.type == "cpu":
        return _DropoutCPU.apply(x, p, int(torch.randint(2**63 - 1, ())), relu)
    x = F.relu(x) if relu else x
    return F.dropout(x, p, training=True) if training and p > 0.0 else x


class EncoderLayer(nn.Module):
    """`nn.TransformerEncoderLayer(hidden, heads, ff, dropout, batch_first=True)`: post-norm,
    ReLU, with the same parameters (`self_attn.in_proj_weight`, `linear1`, `norm1`, ...)."""

    def __init__(self, hidden_size: int, num_heads: int, ff_size: int, dropout_p: float) -> None:
        super().__init__()
        # created in nn.TransformerEncoderLayer's order, so a seed gives the same initial weights
        self.self_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.linear1 = nn.Linear(hidden_size, ff_size)
        self.linear2 = nn.Linear(ff_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.num_heads = num_heads
        self.p = dropout_p

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, H); attention_bias (B, 1, T, 1): 0 for real keys, -inf for padded ones.

        The attention matrix is held keys-first, (B, heads, key, query), with the softmax over
        dim -2: the same numbers, but torch's CPU softmax is ~4x faster over a short
        non-innermost dimension than over a short innermost one (T is ~12 here).
        """
        batch, length, hidden = x.shape
        head_size = hidden // self.num_heads
        qkv = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)
        query, key, value = qkv.view(batch, length, 3, self.num_heads, head_size).permute(2, 0, 3, 1, 4)
        query = query * (1.0 / math.sqrt(head_size))  # scaled here: smaller than the scores
        scores = key @ query.transpose(-2, -1) + attention_bias  # (B, heads, Tk, Tq)
        probabilities = dropout(torch.softmax(scores, dim=-2), self.p, self.training)
        attended = probabilities.transpose(-2, -1) @ value  # (B, heads, Tq, head_size)
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)
        x = self.norm1(x + dropout(self.self_attn.out_proj(attended), self.p, self.training))
        hidden_ff = dropout(self.linear1(x), self.p, self.training, relu=True)
        return self.norm2(x + dropout(self.linear2(hidden_ff), self.p, self.training))


class Encoder(nn.Module):
    """A stack of identical-at-init layers, as `nn.TransformerEncoder` builds it."""

    def __init__(self, layer: EncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (B, T, H); padding (B, T) True where the token is padding."""
        attention_bias = torch.zeros(padding.shape, dtype=x.dtype, device=x.device)
        attention_bias = attention_bias.masked_fill(padding, float("-inf"))[:, None, :, None]
        for layer in self.layers:
            x = layer(x, attention_bias)
        return x


class ACMR(nn.Module):
    """`market_embedding` chooses the market-specific part: "shared" (the paper's: one vector
    per market), "none" (ablation: no market-specific part) or "item" (our extension: one
    vector per (item, market), added to the shared item vector)."""

    def __init__(self, num_items: int, num_markets: int, hidden_size: int = 32,
                 num_layers: int = 4, num_heads: int = 8, ff_size: int = 128,
                 dropout_p: float = 0.3, market_embedding: str = "shared") -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.num_markets = num_markets
        self.market_embedding_kind = market_embedding
        if market_embedding == "shared":
            self.market_embedding = nn.Embedding(num_markets, hidden_size)
        elif market_embedding == "item":
            self.market_embedding = nn.Embedding((num_items + 1) * num_markets, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.encoder = Encoder(EncoderLayer(hidden_size, num_heads, ff_size, dropout_p), num_layers)
        self.score = nn.Linear(2 * hidden_size, 1)
        self.p = dropout_p

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        """users (B,) (unused by ACMR); history_items (B, L) item ids, 0 = padding;
        candidate_item (B,); market_ids (B,). Returns the logits (B,)."""
        tokens = torch.cat([history_items, candidate_item[:, None]], dim=1)  # (B, L+1)
        x = self.item_embedding(tokens)
        if self.market_embedding_kind == "shared":
            x = x + self.market_embedding(market_ids)[:, None, :]
        elif self.market_embedding_kind == "item":
            x = x + self.market_embedding(tokens * self.num_markets + market_ids[:, None])
        x = dropout(self.norm(x), self.p, self.training)
        padding = tokens == 0  # (B, L+1)
        x = self.encoder(x, padding)  # (B, L+1, H)
        in_history = (~padding[:, :-1]).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        user = (x[:, :-1] * in_history).sum(1) / in_history.sum(1).clamp(min=1)  # (B, H)
        candidate = x[:, -1]  # (B, H)
        return self.score(torch.cat([user, candidate], dim=-1)).squeeze(-1)


def activation_floats(num_sequences: int, num_tokens: int) -> int:
    """Floats of one encoder layer's activations for a batch (feed-forward: 128 per token;
    attention: 8 heads x num_tokens per token), at the default sizes: what the trainer and the
    evaluator keep under a budget so that memory stays bounded for long histories."""
    return num_sequences * num_tokens * (128 + 8 * num_tokens)


def build_model(config, dataset) -> nn.Module:
    """The model `config.model` names, sized for `dataset` (a data_loader.Dataset)."""
    from baselines import GMF, MLP, NMF, Popularity

    num_users, num_items, num_markets = len(dataset.user_names), dataset.num_items, len(dataset.markets)
    if config.model == "acmr":
        return ACMR(num_items, num_markets, config.hidden_size, config.num_layers, config.num_heads,
                    config.ff_size, config.dropout, config.market_embedding)
    if config.model == "popularity":
        target_rows = dataset.target_rows()
        target_positives = dataset.train_item[target_rows][dataset.train_label[target_rows] == 1]
        counts = torch.bincount(torch.as_tensor(target_positives), minlength=num_items + 1)
        return Popularity(counts)
    return {"gmf": GMF, "mlp": MLP, "nmf": NMF}[config.model](num_users, num_items)
