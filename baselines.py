"""Baselines scored on exactly ACMR's splits and candidates (selected with `--model=...`).

All models share ACMR's call signature `(users, history_items, candidate_item, market_ids)`
and return logits; each uses what it needs.

- Popularity: the candidate's number of interactions in the target market's training data.
- GMF, MLP, NMF (NeuMF: GMF and MLP towers side by side), the neural collaborative filtering
  models of He et al. (WWW 2017) as FOREC (Bonab et al., CIKM 2021) uses them: GMF with
  8-dimensional embeddings; MLP with 8-dimensional user and item embeddings and layers
  16 -> 64 -> 32 -> 16 -> 8; NMF concatenates the two towers' last layers. These sizes are
  those of FOREC's published configuration as we read it; the optimiser, batch size, negatives,
  early stopping and epochs are ACMR's (config.py), so that only the model differs.
  Trained on the target market alone (`stages=finetune`) they are GMF/MLP/NMF; on all markets
  (`stages=pretrain`) GMF++/NMF++; NMF pre-trained on all markets and fine-tuned on the target
  (`stages=pretrain+finetune`) is FOREC. Unlike FOREC, fine-tuning updates all parameters
  (FOREC forks the model and fine-tunes it), and the user embeddings cover the users of all
  markets (each market's users are distinct users here).
"""
from __future__ import annotations

import torch
from torch import nn


class Popularity(nn.Module):
    """Scores an item by its interaction count in the target market's training data."""

    def __init__(self, item_counts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("item_counts", item_counts.float())

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        return self.item_counts[candidate_item]


class GMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 8) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items + 1, dim)
        self.score = nn.Linear(dim, 1)

    def tower(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user_embedding(users) * self.item_embedding(items)  # (B, dim)

    def forward(self, users, history_items, candidate_item, market_ids):
        return self.score(self.tower(users, candidate_item)).squeeze(-1)


class MLP(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 8,
                 layers: tuple[int, ...] = (16, 64, 32, 16, 8)) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items + 1, dim)
        blocks = []
        for size_in, size_out in zip(layers[:-1], layers[1:]):
            blocks += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.layers = nn.Sequential(*blocks)
        self.score = nn.Linear(layers[-1], 1)

    def tower(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=-1)
        return self.layers(pair)  # (B, layers[-1])

    def forward(self, users, history_items, candidate_item, market_ids):
        return self.score(self.tower(users, candidate_item)).squeeze(-1)


class NMF(nn.Module):
    """NeuMF: a GMF tower and an MLP tower with their own embeddings, one output layer."""

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.gmf = GMF(num_users, num_items)
        self.mlp = MLP(num_users, num_items)
        self.score = nn.Linear(8 + 8, 1)

    def forward(self, users, history_items, candidate_item, market_ids):
        gmf, mlp = self.gmf.tower(users, candidate_item), self.mlp.tower(users, candidate_item)
        both = torch.cat([gmf, mlp], dim=-1)
        return self.score(both).squeeze(-1)
