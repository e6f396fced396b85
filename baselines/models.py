"""Baselines scored on exactly ACMR's splits and candidates (selected with `--model=...`).

All models share ACMR's call signature `(users, history_items, candidate_item, market_ids)`
and return logits; each uses what it needs.

- Popularity: the candidate's number of interactions in the target market's training data.
- GMF, MLP, NMF (NeuMF: GMF and MLP towers side by side), the neural collaborative filtering
  models of He et al. (WWW 2017) as FOREC (Bonab et al., CIKM 2021) uses them. Their sizes are
  settings: `embedding_size` (user and item embeddings; FOREC's 8 by default), `mlp_layers`
  (the MLP tower over the concatenated embeddings; FOREC's 64 -> 32 -> 16 -> 8 by default) and
  `embedding_init_std` (1 by default, torch's N(0, 1), as FOREC's code; the NCF paper draws
  N(0, 0.01)). NMF concatenates the two towers' last layers.
  Trained on the target market alone (`stages=finetune`) they are GMF/MLP/NMF; on all markets
  (`stages=pretrain`) GMF++/NMF++; NMF pre-trained on all markets and fine-tuned on the target
  (`stages=pretrain+finetune`) is FOREC. Unlike FOREC, fine-tuning updates all parameters
  (FOREC forks the model and fine-tunes it), NMF starts from random weights (NCF and FOREC start
  it from trained GMF and MLP weights), and the user embeddings cover the users of all markets
  (each market's users are distinct users here).

The presets `gmf`, `mlp`, `nmf`, `gmf++`, `nmf++`, `forec` train them with ACMR's optimiser and
early stopping (config.py's defaults), which leaves them near a random ranking: with N(0, 1)
embeddings, the ~45% of a user's evaluation negatives that no target training row holds keep
random vectors whose scores swamp what a few dozen Adam steps at lr 1e-3 learn, and the
authors' 3 non-improving epochs (never reset) end training after 4-6 epochs (results/baselines/
README.md). The presets `<model>-tuned-<market>` hold the settings tools/tune.py chose on validation;
`gmf++-trained` and `forec-trained` train the cross-market models with FOREC's code's settings
and NCF's initialisation and early stopping (not searched).
"""
from __future__ import annotations

import torch
from torch import nn

from config import Config


def init_embeddings(module: nn.Module, std: float) -> None:
    """Redraw the module's own embeddings from N(0, std); std 1 keeps torch's draw (N(0, 1)), so
    that runs from before `embedding_init_std` existed stay the same."""
    if std != 1.0:
        for embedding in (module.user_embedding, module.item_embedding):
            nn.init.normal_(embedding.weight, std=std)


def layer_sizes(text: str) -> tuple[int, ...]:
    """`mlp_layers` ("64,32,16,8") as a tuple of widths."""
    return tuple(int(width) for width in text.split(","))


class Popularity(nn.Module):
    """Scores an item by its interaction count in the target market's training data."""

    def __init__(self, item_counts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("item_counts", item_counts.float())

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        return self.item_counts[candidate_item]


class GMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 8, init_std: float = 1.0) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items + 1, dim)
        init_embeddings(self, init_std)
        self.score = nn.Linear(dim, 1)
        self.out_size = dim

    def tower(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user_embedding(users) * self.item_embedding(items)  # (B, dim)

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        return self.score(self.tower(users, candidate_item)).squeeze(-1)


class MLP(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 8, layers: tuple[int, ...] = (64, 32, 16, 8),
                 init_std: float = 1.0) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items + 1, dim)
        init_embeddings(self, init_std)
        blocks = []
        for size_in, size_out in zip((2 * dim, *layers[:-1]), layers):
            blocks += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.layers = nn.Sequential(*blocks)
        self.score = nn.Linear(layers[-1], 1)
        self.out_size = layers[-1]

    def tower(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=-1)
        return self.layers(pair)  # (B, layers[-1])

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        return self.score(self.tower(users, candidate_item)).squeeze(-1)


class NMF(nn.Module):
    """NeuMF: a GMF tower and an MLP tower with their own embeddings, one output layer."""

    def __init__(self, num_users: int, num_items: int, dim: int = 8, layers: tuple[int, ...] = (64, 32, 16, 8),
                 init_std: float = 1.0) -> None:
        super().__init__()
        self.gmf = GMF(num_users, num_items, dim, init_std)
        self.mlp = MLP(num_users, num_items, dim, layers, init_std)
        self.score = nn.Linear(self.gmf.out_size + self.mlp.out_size, 1)

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        gmf, mlp = self.gmf.tower(users, candidate_item), self.mlp.tower(users, candidate_item)
        both = torch.cat([gmf, mlp], dim=-1)
        return self.score(both).squeeze(-1)


def build_baseline(name: str, num_users: int, num_items: int, config: Config) -> nn.Module:
    """GMF, MLP or NMF (`name`) sized by the settings of `config` (a config.Config)."""
    dim, init_std = config.embedding_size, config.embedding_init_std
    if name == "gmf":
        return GMF(num_users, num_items, dim, init_std)
    model = {"mlp": MLP, "nmf": NMF}[name]
    return model(num_users, num_items, dim, layer_sizes(config.mlp_layers), init_std)
