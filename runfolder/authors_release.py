"""The authors' released ACMR checkpoints as weights our model loads unchanged.

The authors published one trained checkpoint per target market and stage
(`checkpoint/ACMR_<market>_<stage>.pt` in github.com/laowangzi/ACMR). `locate_checkpoint` finds
one (in $ACMR_AUTHORS_RELEASE, the cache data/authors_checkpoints/, else downloaded there) and
checks it against data/AUTHORS_CHECKPOINTS.sha256; `load_authors_state` loads it into our
`model.ACMR` by a renaming of the keys; `authors_order` and `to_checkpoint_rows` translate our
dataset's item and market ids into the checkpoint's rows. Used to start a run from their weights
(runfolder/initial_weights.py), to score them on our split (tools/authors_weights.py) and to
recommend from them (tools/trained.py).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from config import REPO, STAGES, ConfigError
from data_loader import DataError, Dataset, sha256_of
from model import ACMR
from runfolder.files import DownloadError, WriteError, download_verified

CHECKSUM_FILE = REPO / "data" / "AUTHORS_CHECKPOINTS.sha256"
CACHE_DIR = REPO / "data" / "authors_checkpoints"
RELEASE_ENV = "ACMR_AUTHORS_RELEASE"  # a folder holding released ACMR_<market>_<stage>.pt files
CHECKPOINT_URL = "https://raw.githubusercontent.com/laowangzi/ACMR/main/checkpoint/ACMR_{market}_{stage}.pt"
AUTHORS_NUM_HEADS = 8  # not visible in the weights' shapes; the authors' config (bert_num_heads)

# The source markets of each target, in the order of the authors' logged run (the `src_mkt` line
# at the top of log/<MARKET>.log): the order in which they read the files, which fixes the rows
# of the item and market tables. The target is read last.
SOURCE_ORDER = {
    "ca": ("mx", "de", "in", "jp", "fr", "uk"),
    "de": ("uk", "fr", "ca", "in", "jp", "mx"),
    "fr": ("mx", "ca", "uk", "jp", "in", "de"),
    "in": ("de", "jp", "uk", "fr", "mx", "ca"),
    "jp": ("uk", "ca", "fr", "in", "mx", "de"),
    "mx": ("de", "jp", "ca", "in", "fr", "uk"),
    "uk": ("de", "fr", "ca", "jp", "mx", "in"),
}

# Checkpoint key prefix -> our parameter prefix (model.ACMR); the rest of the key is the same.
KEY_PREFIXES = {
    "bert.embedding.token.": "item_embedding.",  # row 0 padding, then the authors' item order
    "bert.embedding.market_embedding.": "market_embedding.",  # rows in the run's market order
    "bert.embedding.LayerNorm.": "norm.",
    "bert.transformer_blocks.layers.": "encoder.layers.",  # <i>.self_attn.in_proj_weight, ...
    "out.": "score.",  # on concat(user, candidate)
}
# nn.TransformerEncoder's template layer, which it deep-copies into `layers` and never calls
IGNORED_PREFIXES = ("bert.encoder_layer.",)


# ---------------------------------------------------------------- weights

def our_key(key: str) -> str | None:
    """Our parameter name for a checkpoint key, or None for a key that is ignored."""
    if key.startswith(IGNORED_PREFIXES):
        return None
    for theirs, ours in KEY_PREFIXES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    raise DataError(f"checkpoint key {key!r} is neither mapped nor ignored (authors_release.KEY_PREFIXES)")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a released checkpoint, on CPU (they were saved from a GPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def authors_model(state: dict[str, torch.Tensor], dropout_p: float = 0.3, fast_kernels: bool = True) -> ACMR:
    """Our ACMR sized as the checkpoint (its item and market tables keep all their rows, unused
    ones included), with its weights loaded unchanged."""
    items, hidden = state["bert.embedding.token.weight"].shape
    layers = {key.split(".")[3] for key in state if key.startswith("bert.transformer_blocks.layers.")}
    model = ACMR(num_items=items - 1, num_markets=state["bert.embedding.market_embedding.weight"].shape[0],
                 hidden_size=hidden, num_layers=len(layers), num_heads=AUTHORS_NUM_HEADS,
                 ff_size=state["bert.transformer_blocks.layers.0.linear1.weight"].shape[0], dropout_p=dropout_p,
                 fast_kernels=fast_kernels)
    load_authors_state(model, state)
    return model


def renamed_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under our parameter names (our_key), the ignored keys left out."""
    return {name: value for key, value in state.items() if (name := our_key(key)) is not None}


def load_authors_state(model: ACMR, state: dict[str, torch.Tensor]) -> None:
    """Copy the checkpoint's weights into `model` under our names (KEY_PREFIXES). Strict: every
    parameter of ours is filled, with a tensor of its shape, and every key is used or ignored."""
    renamed = renamed_state(state)
    ours = model.state_dict()
    missing, unknown = sorted(set(ours) - set(renamed)), sorted(set(renamed) - set(ours))
    if missing or unknown:
        raise DataError(f"checkpoint does not fit our ACMR: missing {missing}, not ours {unknown}")
    wrong = [f"{name} {tuple(value.shape)} vs ours {tuple(ours[name].shape)}"
             for name, value in renamed.items() if value.shape != ours[name].shape]
    if wrong:
        raise DataError(f"checkpoint does not fit our ACMR: shapes {'; '.join(wrong)}")
    model.load_state_dict(renamed, strict=True)


# ---------------------------------------------------------------- ids

def authors_order(frames: dict[str, pd.DataFrame], target: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The checkpoint's item and market order for `target`: the market files in the run's order
    (SOURCE_ORDER, then the target), rows in file order; an item's row is 1 + the number of
    distinct items seen before its first appearance. Returns (item names, row 1 first; market
    names, row 0 first). The authors give the ids out while reading the files (utils.ID_Bank);
    here the same order comes from pd.unique, which keeps first appearances in order."""
    markets = (*SOURCE_ORDER[target], target)
    names = pd.unique(np.concatenate([frames[m]["itemId"].to_numpy(dtype=str) for m in markets]))
    return names, markets


def to_checkpoint_rows(dataset: Dataset, frames: dict[str, pd.DataFrame]) -> Dataset:
    """`dataset` with every item id and market id replaced by the checkpoint's row of that item
    and market (0 stays padding), and `item_names` / `markets` in the checkpoint's order."""
    names, markets = authors_order(frames, dataset.target_market)
    ours = dataset.item_names[1:]  # sorted, as build_dataset makes them
    if len(names) != len(ours) or not np.array_equal(np.sort(names), ours):
        raise DataError(f"{dataset.target_market}: the market files give {len(names)} items, our "
                        f"dataset {len(ours)}: not the same item set")
    item_row = np.zeros(len(dataset.item_names), dtype=np.int64)
    item_row[1 + np.searchsorted(ours, names)] = np.arange(1, len(names) + 1)
    market_row = np.array([markets.index(m) for m in dataset.markets])
    return dataclasses.replace(
        dataset, item_names=np.concatenate([[""], names]), markets=markets,
        user_market=market_row[dataset.user_market], user_history=item_row[dataset.user_history],
        train_item=item_row[dataset.train_item], valid_candidates=item_row[dataset.valid_candidates],
        test_candidates=item_row[dataset.test_candidates])


def expected_training_share(target_frame: pd.DataFrame, dataset: Dataset, candidates: np.ndarray) -> float:
    """The expected share of our (user, held-out item) pairs (column 0 of `candidates`) that were
    training positives of the authors' run, whose random split is unknown to us: per user, their
    last two interactions in a random order were held out. An item the user bought k times of
    his n interactions escaped their training data only if all k purchases were those two:
    probability 2/n (k = 1), 2/(n(n-1)) (k = 2), 0 (k > 2)."""
    pairs = pd.MultiIndex.from_arrays([dataset.user_names[dataset.target_users],
                                       dataset.item_names[candidates[:, 0]]])
    n = target_frame.groupby("userId").size().reindex(pairs.get_level_values(0)).to_numpy(dtype=float)
    k = target_frame.groupby(["userId", "itemId"]).size().reindex(pairs).to_numpy()
    held_out = np.select([k == 1, k == 2], [2 / n, 2 / (n * (n - 1))], 0.0)
    return float(1 - held_out.mean())


# ---------------------------------------------------------------- files

def expected_checksums() -> dict[str, str]:
    """file name -> SHA-256, from data/AUTHORS_CHECKPOINTS.sha256 (sha256sum format)."""
    return {name.lstrip("*"): digest for digest, name in
            (line.split() for line in CHECKSUM_FILE.read_text().splitlines() if line.strip())}


def verify_checkpoint(path: Path, name: str) -> None:
    expected, actual = expected_checksums()[name], sha256_of(path)
    if actual != expected:
        raise DataError(f"{path}: SHA-256 mismatch (expected {expected}, got {actual}); not the "
                        f"authors' release of {name}")


def download_checkpoint(url: str, dest: Path) -> None:
    """Download `url` to `dest`, verified against the release's checksum (files.download_verified)."""
    try:
        download_verified(url, dest, expected_checksums()[dest.name], f"the authors' release of {dest.name}")
    except (DownloadError, WriteError) as error:
        raise DataError(f"could not download {url} to {dest}: {error}; or set {RELEASE_ENV} (or "
                        f"--authors_dir) to a folder holding the file") from None


def locate_checkpoint(market: str, stage: str, authors_dir: str | None = None, cache_dir: Path = CACHE_DIR,
                      url: str = CHECKPOINT_URL) -> Path:
    """The verified ACMR_<market>_<stage>.pt: from `authors_dir` (default $ACMR_AUTHORS_RELEASE),
    else `cache_dir`, else downloaded into `cache_dir`."""
    name = f"ACMR_{market}_{stage}.pt"
    if name not in expected_checksums():
        raise ConfigError(f"no released checkpoint {name}; markets {', '.join(SOURCE_ORDER)}, "
                          f"stages {', '.join(STAGES)}")
    folders = [Path(cache_dir)]
    release = authors_dir or os.environ.get(RELEASE_ENV)
    if release:
        if not Path(release).is_dir():
            raise DataError(f"{release}: no such folder (--authors_dir or ${RELEASE_ENV})")
        folders.insert(0, Path(release))
    for folder in folders:
        if (folder / name).is_file():
            verify_checkpoint(folder / name, name)
            return folder / name
    download_checkpoint(url.format(market=market, stage=stage), Path(cache_dir) / name)
    return Path(cache_dir) / name
