"""Start each seed's ACMR from given weights instead of a fresh initialisation (config.init_weights).

    --init_weights=log/acmr-in-seeds0-4-20261201-101010/seed0_pretrain_weights.pt    one weights file, every seed
    --init_weights=log/acmr-in-seeds0-4-20261201-101010/seed{seed}_pretrain_weights.pt   each seed its own file
    --init_weights=authors:in:pretrain      the authors' released checkpoint ACMR_in_pretrain.pt

A weights file is one a run folder keeps per seed and stage (checkpoints.save_weights); the
authors' checkpoints are found as runfolder/authors_release.py finds them ($ACMR_AUTHORS_RELEASE, else its
cache, else downloaded and verified). Their item and market rows are translated by raw item id
and market name into this run's dataset, so the weights may list items and markets in another
order, and more of them; an item or market of the dataset that the weights lack is an error.

The model's settings (model, market_embedding, hidden_size, num_layers, num_heads, ff_size) are
the run's own and must match the weights' (an error names both), so that config.json says what
ran. Everything else is a normal run's: the model is built (drawing its fresh initialisation
from the seed's generator, as always), then its weights are replaced, before the optimizer and
the early-stopping state see them. A resumed seed takes its weights from the checkpoint; a seed
that starts (again) reads the source again and refuses it if its SHA-256 differs from the one
the run folder recorded (init_weights.json) when the seed first started.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from config import ELECTRONICS_MARKETS, STAGES, Config, ConfigError
from data_loader import DataError, Dataset
from runfolder import authors_release
from runfolder.checkpoints import WEIGHTS_FORMAT
from runfolder.files import write_json

AUTHORS = "authors:"
ARCHITECTURE = ("model", "market_embedding", "hidden_size", "num_layers", "num_heads", "ff_size")
RECORD_FILE = "init_weights.json"  # in a run folder: each seed's source as it was first read


@dataclass
class Weights:
    """Weights to start from, in our parameter names, with the raw id of each item row and the
    name of each market row (None: a row that names nothing, as the authors' unused rows)."""
    source: str  # config.init_weights
    path: Path
    sha256: str
    state: dict[str, torch.Tensor]
    item_ids: list[str | None]  # row 0: padding
    markets: list[str | None]
    architecture: dict[str, object]  # ARCHITECTURE's settings

    def record(self) -> dict[str, str]:
        return {"source": self.source, "path": str(self.path), "sha256": self.sha256}


def fail(spec: str, message: str) -> ConfigError:
    return ConfigError(f"init_weights={spec}: {message}")


def read_bytes(spec: str, path: Path) -> bytes:
    if path.is_dir():
        raise fail(spec, f"{path} is a folder; name a weights file in it, e.g. {path}/seed{{seed}}_pretrain_weights.pt")
    try:
        return path.read_bytes()
    except OSError as error:
        raise fail(spec, f"cannot read {path} ({error.strerror or error})") from None


def authors_source(spec: str) -> tuple[str, str]:
    """(market, stage) of `authors:<market>:<stage>`."""
    parts = spec[len(AUTHORS):].split(":")
    if len(parts) != 2 or parts[1] not in STAGES:
        raise fail(spec, f"expected authors:<market>:<stage>, stage one of {', '.join(STAGES)}")
    if parts[0] not in ELECTRONICS_MARKETS:
        raise fail(spec, f"no authors' checkpoint of market {parts[0]!r}; markets {', '.join(ELECTRONICS_MARKETS)}")
    return parts[0], parts[1]


def read_authors(spec: str, frames: dict[str, pd.DataFrame]) -> Weights:
    """The authors' released checkpoint of a market and stage, its rows named by the order in
    which their run read the market files (authors_release.authors_order)."""
    market, stage = authors_source(spec)
    try:
        path = authors_release.locate_checkpoint(market, stage)
    except (ConfigError, DataError) as error:
        raise fail(spec, str(error)) from None
    content = read_bytes(spec, path)
    state = load_torch(spec, path, content)
    try:
        state = authors_release.renamed_state(state)
    except (AttributeError, DataError) as error:
        raise fail(spec, f"{path}: not an ACMR checkpoint of the authors ({error})") from None
    names, markets = authors_release.authors_order(frames, market)
    items, hidden = state["item_embedding.weight"].shape
    market_rows = state["market_embedding.weight"].shape[0]
    if items - 1 < len(names) or market_rows < len(markets):
        raise fail(spec, f"{path}: {items - 1} item rows and {market_rows} market rows for the {len(names)} "
                         f"items and {len(markets)} markets of the data: not the data it was trained on")
    layers = {key.split(".")[2] for key in state if key.startswith("encoder.layers.")}
    architecture = {"model": "acmr", "market_embedding": "shared", "hidden_size": hidden, "num_layers": len(layers),
                    "num_heads": authors_release.AUTHORS_NUM_HEADS,
                    "ff_size": state["encoder.layers.0.linear1.weight"].shape[0]}
    return Weights(spec, path.resolve(), hashlib.sha256(content).hexdigest(), state,
                   ["", *names, *[None] * (items - 1 - len(names))],
                   [*markets, *[None] * (market_rows - len(markets))], architecture)


def load_torch(spec: str, path: Path, content: bytes) -> object:
    try:
        with warnings.catch_warnings():  # torch warns about some foreign files before it fails on them
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file: torch raises many kinds
        raise fail(spec, f"{path}: unreadable ({type(error).__name__}): truncated, or not a weights "
                         f"file of this program") from None


def read_weights(spec: str, seed: int, frames: dict[str, pd.DataFrame]) -> Weights:
    """The weights `spec` names for `seed` ({seed} in a path is replaced by it)."""
    if spec.startswith(AUTHORS):
        return read_authors(spec, frames)
    path = Path(spec.replace("{seed}", str(seed))).expanduser()
    content = read_bytes(spec, path)
    saved = load_torch(spec, path, content)
    if not isinstance(saved, dict) or saved.get("format") != WEIGHTS_FORMAT:
        raise fail(spec, f"{path}: not a weights file of format {WEIGHTS_FORMAT} (a run folder's "
                         f"seed<S>_<stage>_weights.pt)")
    return Weights(spec, path.resolve(), hashlib.sha256(content).hexdigest(), saved["state_dict"],
                   list(saved["item_ids"]), list(saved["markets"]),
                   {key: saved["config"].get(key) for key in ARCHITECTURE})


def check_architecture(weights: Weights, config: Config) -> None:
    ours = {key: getattr(config, key) for key in ARCHITECTURE}
    if weights.architecture != ours:
        differ = [key for key in ARCHITECTURE if weights.architecture[key] != ours[key]]
        raise fail(weights.source, f"{weights.path} holds a model of another size: "
                   + ", ".join(f"{key}={weights.architecture[key]}" for key in differ) + "; this run's "
                   + ", ".join(f"{key}={ours[key]}" for key in differ)
                   + " (give the weights' settings, e.g. --" + differ[0] + f"={weights.architecture[differ[0]]})")


def row_indices(weights: Weights, item_names: np.ndarray, markets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each item row and market row of the dataset, its row in the weights."""
    item_row = {name: row for row, name in enumerate(weights.item_ids) if row > 0 and name is not None}
    missing = [name for name in item_names[1:] if name not in item_row]
    if missing:
        raise fail(weights.source, f"{len(missing)} of the dataset's {len(item_names) - 1} items are not in "
                                   f"{weights.path} (e.g. {missing[0]!r}): weights of other data")
    absent = [market for market in markets if market not in weights.markets]
    if absent:
        raise fail(weights.source, f"market(s) {', '.join(absent)} of the dataset are not in {weights.path} "
                                   f"(it has {', '.join(m for m in weights.markets if m is not None)})")
    items = np.array([0, *(item_row[name] for name in item_names[1:])], dtype=np.int64)
    return items, np.array([weights.markets.index(market) for market in markets], dtype=np.int64)


def translated_state(weights: Weights, item_names: np.ndarray, markets: tuple[str, ...],
                     config: Config) -> dict[str, torch.Tensor]:
    """The weights' state with its item and market rows in the dataset's order."""
    items, market_rows = (torch.as_tensor(index) for index in row_indices(weights, item_names, markets))
    state = dict(weights.state)
    tables = ["item_embedding.weight", *(["market_embedding.weight"] if config.market_embedding != "none" else [])]
    if any(name not in state for name in tables):
        raise fail(weights.source, f"{weights.path} has no {' or '.join(tables)}: not an ACMR's weights")
    state["item_embedding.weight"] = state["item_embedding.weight"][items]
    if config.market_embedding == "shared":
        state["market_embedding.weight"] = state["market_embedding.weight"][market_rows]
    elif config.market_embedding == "item":  # row item * num_markets + market
        table = state["market_embedding.weight"]
        table = table.view(len(weights.item_ids), len(weights.markets), table.shape[-1])
        state["market_embedding.weight"] = table[items][:, market_rows].reshape(-1, table.shape[-1])
    return state


def source_weights(config: Config, seed: int, frames: dict[str, pd.DataFrame]) -> Weights:
    """The seed's weights, checked against the run's settings."""
    if config.model != "acmr":
        raise fail(config.init_weights, f"only for model=acmr, not {config.model}")
    weights = read_weights(config.init_weights, seed, frames)
    check_architecture(weights, config)
    return weights


def check_sources(config: Config, frames: dict[str, pd.DataFrame]) -> None:
    """Every seed's weights are there, readable, of the run's model size and cover the data's
    items and markets (build_dataset's: all markets' items): before any run folder is made."""
    if not config.init_weights:
        return
    item_names = np.concatenate([[""], np.unique(np.concatenate([f["itemId"].to_numpy(dtype=str)
                                                                 for f in frames.values()]))])
    per_seed = "{seed}" in config.init_weights and not config.init_weights.startswith(AUTHORS)
    for seed in range(config.first_seed, config.first_seed + (config.seeds if per_seed else 1)):
        weights = source_weights(config, seed, frames)
        row_indices(weights, item_names, tuple(sorted(frames)))


def initialise(model: torch.nn.Module, config: Config, dataset: Dataset, frames: dict[str, pd.DataFrame], seed: int,
               run_dir: Path) -> dict[str, str]:
    """Load the seed's weights into the freshly built `model`, rows translated into `dataset`'s.
    The source's path and SHA-256 are recorded in the run folder when the seed first reads it;
    a later read (the seed started again by a resume) must find the same file. Returns the record."""
    weights = source_weights(config, seed, frames)
    record_file = run_dir / RECORD_FILE
    records = json.loads(record_file.read_text()) if record_file.is_file() else {}
    earlier = records.get(str(seed))
    if earlier is not None and earlier["sha256"] != weights.sha256:
        raise fail(config.init_weights, f"{weights.path} changed since seed {seed} first read it (SHA-256 "
                                        f"{earlier['sha256']}, now {weights.sha256}); a resumed run must "
                                        f"start from the same weights: put the file back, or start a new run")
    state = translated_state(weights, dataset.item_names, dataset.markets, config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise fail(config.init_weights, f"{weights.path} does not fit this run's model: "
                                        f"{' '.join(str(error).split())}") from None
    if earlier is None:
        write_json(record_file, {**records, str(seed): weights.record()})
    return weights.record()
