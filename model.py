"""The ACMR model (Hu et al., "Enhancing cross-market recommendations by addressing negative
transfer and leveraging item co-occurrences", Information Systems 124, 2024).

One example is (a user's history items, one candidate item, the user's market). Every token,
history and candidate alike, is `item_embedding[item] + market_embedding[market]`: the item
table is shared by all markets (market-agnostic), the market vector is market-specific.
A bidirectional Transformer encoder reads [history..., candidate]; the user vector is the
mean of the outputs at the real history positions, the candidate vector the output at the
candidate position, and one linear layer scores their concatenation.

Deviations from the authors' code (github.com/laowangzi/ACMR):
- `forward` returns the logit; the authors apply the sigmoid inside the model and train with
  BCELoss. We train with BCEWithLogitsLoss (the same loss, numerically safer) and rank on
  logits, so that a saturated sigmoid cannot create ties at evaluation.
- A batch may be padded only to its longest history instead of always to 50 slots. Padded
  positions are masked as attention keys and left out of the mean, so the output is the same
  (tests/test_model.py checks it); only the cost changes.
"""
from __future__ import annotations

import torch
from torch import nn


class ACMR(nn.Module):
    def __init__(self, num_items: int, num_markets: int, hidden_size: int = 32,
                 num_layers: int = 4, num_heads: int = 8, ff_size: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.market_embedding = nn.Embedding(num_markets, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, ff_size, dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.score = nn.Linear(2 * hidden_size, 1)

    def forward(self, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        """history_items (B, L) item ids, 0 = padding; candidate_item (B,); market_ids (B,).
        Returns the logits (B,)."""
        tokens = torch.cat([history_items, candidate_item[:, None]], dim=1)  # (B, L+1)
        x = self.item_embedding(tokens) + self.market_embedding(market_ids)[:, None, :]
        x = self.dropout(self.norm(x))
        padding = tokens == 0  # (B, L+1)
        x = self.encoder(x, src_key_padding_mask=padding)  # (B, L+1, H)
        in_history = (~padding[:, :-1]).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        user = (x[:, :-1] * in_history).sum(1) / in_history.sum(1).clamp(min=1)  # (B, H)
        candidate = x[:, -1]  # (B, H)
        return self.score(torch.cat([user, candidate], dim=-1)).squeeze(-1)
