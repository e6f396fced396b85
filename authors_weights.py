"""The authors' released ACMR weights, scored by our code on our split.

The authors published one trained checkpoint per target market and stage
(`checkpoint/ACMR_<market>_<stage>.pt` in github.com/laowangzi/ACMR). This module loads one into
our `model.ACMR` without changing a weight (`load_authors_state`: a renaming of the keys), and
scores our seed's validation and test candidates with it through the project's evaluation
(`evaluate.score_candidates`), the item and market ids of our dataset translated into the
checkpoint's rows (`authors_order`, `to_checkpoint_rows`):

    python authors_weights.py --target_market=in --stage=finetune --seed=0 [--out=FILE] [--key=value ...]

The checkpoint is looked for in `--authors_dir` (default $ACMR_AUTHORS_RELEASE), then in
`--cache_dir` (default data/authors_checkpoints/), else downloaded there from `--checkpoint_url`;
it is checked against data/AUTHORS_CHECKPOINTS.sha256 before use. Any setting of config.py
applies to our split and candidates (e.g. `--eval_mode=full`); the model's sizes come from the
checkpoint.

Where this differs from the authors' code: their model applies the sigmoid inside and ranks on
probabilities, ours ranks on the logits (the same order, no ties from a saturated sigmoid); their
evaluation re-draws the 50-item subsample of a long history at every pass, ours draws it once per
seed (SPEC.md 3.6). Caution: their checkpoint was trained on a random split of their own, so most
of our held-out items were among its training positives; its numbers here are not a held-out test
(`expected_training_share` estimates how many).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from config import ELECTRONICS_MARKETS, STAGES, Config, ConfigError, market_names, parse_overrides, target_markets
from data_loader import DataError, Dataset, DeviceData, build_dataset, load_markets, sha256_of
from evaluate import METRICS, ranking_metrics, score_candidates
from model import ACMR
from files import DownloadError, WriteError, download_verified, write_json
from host import configure_host, resolve_device

REPO = Path(__file__).resolve().parent
CHECKSUM_FILE = REPO / "data" / "AUTHORS_CHECKPOINTS.sha256"
LOGGED_RUNS = REPO / "data" / "authors_logged_runs.json"
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
    raise DataError(f"checkpoint key {key!r} is neither mapped nor ignored (authors_weights.KEY_PREFIXES)")


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


# ---------------------------------------------------------------- scoring

def score_release(frames: dict[str, pd.DataFrame], target: str, stage: str, seed: int, config: Config,
                  checkpoint: Path, device: torch.device) -> dict[str, object]:
    """Metrics of the checkpoint on our seed's validation and test candidates of `target`, with
    the authors' logged metrics of that stage and the expected overlap of our held-out pairs with
    the checkpoint's training positives."""
    dataset = build_dataset(frames, target, seed, config)
    model = authors_model(read_checkpoint(checkpoint), fast_kernels=config.fast_kernels).to(device)
    data = DeviceData.from_dataset(to_checkpoint_rows(dataset, frames), device)
    logged = json.loads(LOGGED_RUNS.read_text())["markets"][target][stage]
    return {
        "target_market": target, "stage": stage, "seed": seed, "checkpoint": checkpoint.name,
        "sha256": expected_checksums()[checkpoint.name], "device": str(device),
        "settings": dataclasses.asdict(config),
        **{split: ranking_metrics(score_candidates(model, data, getattr(data, f"{split}_candidates"),
                                                   config.eval_batch_floats)) for split in ("valid", "test")},
        "authors_logged": {"test": {m: logged[m] for m in METRICS}, "valid": logged["valid_at_best_epoch"]},
        "expected_share_in_checkpoint_training": {
            split: expected_training_share(frames[target], dataset, getattr(dataset, f"{split}_candidates"))
            for split in ("valid", "test")},
    }


def result_text(result: dict[str, object]) -> str:
    """The result as a small table, our numbers beside the authors' logged ones, and the caution."""
    rows = [("test, our split", result["test"]), ("test, authors' log", result["authors_logged"]["test"]),
            ("valid, our split", result["valid"]), ("valid, authors' log", result["authors_logged"]["valid"])]
    share = result["expected_share_in_checkpoint_training"]["test"]
    return "\n".join([
        f"authors' checkpoint {Path(result['checkpoint']).name} on our seed-{result['seed']} split of "
        f"{result['target_market']} ({result['settings']['eval_mode']} evaluation)",
        f"{'':22s}" + "".join(f"{m:>9s}" for m in METRICS) + "   (authors' log: their split, 1 + 99 sampled)",
        *(f"{title:22s}" + "".join(f"{metrics[m]:9.4f}" for m in METRICS) for title, metrics in rows),
        f"caution: not a held-out test. The checkpoint was trained on a random split of its own, so most "
        f"of our held-out items were among its training positives: {share:.1%} of our test pairs "
        f"(user, held-out item) expected (their split is unknown; each user's item is out of their "
        f"training data only if it was one of their 2 held-out interactions)",
    ])


def main(argv: list[str]) -> None:
    config, extra = parse_overrides(argv, extra={"stage": str, "seed": int, "out": str, "authors_dir": str,
                                                 "cache_dir": str, "checkpoint_url": str})
    if market_names(config) != ELECTRONICS_MARKETS:
        raise ConfigError(f"data_markets={config.data_markets}: the authors' checkpoints were trained on the seven "
                          f"XMarket Electronics markets; leave data_markets at its default, "
                          f"{','.join(ELECTRONICS_MARKETS)}")
    stage = extra.get("stage", "finetune")
    if stage not in STAGES:
        raise ConfigError(f"--stage={stage}: allowed {', '.join(STAGES)}")
    url = extra.get("checkpoint_url", CHECKPOINT_URL)
    if "{market}" not in url or "{stage}" not in url:
        raise ConfigError(f"--checkpoint_url={url}: must contain {{market}} and {{stage}}")
    device = resolve_device(config.device)
    configure_host(config)
    checkpoints = {target: locate_checkpoint(target, stage, extra.get("authors_dir"),
                                             Path(extra.get("cache_dir", CACHE_DIR)), url)
                   for target in target_markets(config)}
    frames = load_markets(config)
    results = {}
    for target, checkpoint in checkpoints.items():
        results[target] = score_release(frames, target, stage, extra.get("seed", 0), config, checkpoint, device)
        print(result_text(results[target]))
    if "out" in extra:
        write_json(Path(extra["out"]), results)
        print(f"wrote {extra['out']}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as error:
        sys.exit(f"error: {error}")
