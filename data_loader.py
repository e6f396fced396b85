"""Cross-market data (XMarket Electronics by default): find or download, verify, read, split,
sample, export.

`load_markets` gives one DataFrame per market; `build_dataset` turns them into the integer
arrays of one (target market, seed): the random leave-one-out split, the static training
negatives, the 1 + 99 evaluation candidates and the padded user histories (docs/SPEC.md, section 3).

    python data_loader.py                                   # per-market statistics
    python data_loader.py --target_market=in --seed=0 --export=DIR   # that seed's candidates
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from config import (
    MAX_INT,
    Config,
    ConfigError,
    market_names,
    parse_overrides,
    repository_or_given,
    run_command,
    target_markets,
)
from runfolder.files import DownloadError, WriteError, download_verified, write_bytes

COLUMNS = ["userId", "itemId", "rate", "date"]
CHECKSUM_FILE = Path(__file__).resolve().parent / "data" / "SHA256SUMS"


class DataError(RuntimeError):
    """Missing, corrupt or malformed data; the message names the file (and line)."""


# ---------------------------------------------------------------- files: find, download, verify

def expected_checksums() -> dict[str, str]:
    """File name -> SHA-256 of the XMarket Electronics release's files, from data/SHA256SUMS
    (sha256sum format)."""
    try:
        text = CHECKSUM_FILE.read_text()
    except OSError as error:
        raise DataError(f"{CHECKSUM_FILE}: cannot be read ({error.strerror}); it holds the SHA-256 of the XMarket "
                        f"Electronics files and belongs to the repository: restore it (git checkout "
                        f"data/SHA256SUMS)") from None
    return {name.lstrip("*"): digest for digest, name in (line.split() for line in text.splitlines() if line.strip())}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, advice: str) -> None:
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if actual != expected:
        raise DataError(f"{path}: SHA-256 mismatch (expected {expected}, got {actual}); the file is corrupt or "
                        f"not the XMarket Electronics release: {advice} (other data: name its files otherwise, "
                        f"see data_file)")


def download(url: str, dest: Path, sha256: str) -> None:
    """Download `url` to `dest`, verified against the release's checksum (files.download_verified)."""
    advice = "put the files in data_dir or set XMREC_DIR to a folder holding them"
    try:
        download_verified(url, dest, sha256, "the XMarket release")
    except DownloadError as error:
        raise DataError(f"could not download {url} to {dest}: {error}; {advice}") from None
    except WriteError as error:
        raise DataError(f"{error}; {advice}") from None


def data_file_name(market: str, config: Config) -> str:
    return config.data_file.replace("{market}", market)


def locate_data_file(market: str, config: Config) -> Path:
    """The file of `market` (data_file): from data_dir, else $XMREC_DIR, else downloaded into
    data_dir (not when XMREC_DIR is set: a file missing there is an error). A file of the
    XMarket Electronics release (named in data/SHA256SUMS) is verified; only those are downloaded."""
    name = data_file_name(market, config)
    data_dir = repository_or_given(config, "data_dir")
    folders = [data_dir]
    xmrec_dir = os.environ.get("XMREC_DIR")
    if xmrec_dir:
        folders.append(Path(xmrec_dir))
        if not folders[-1].is_dir():
            raise DataError(f"XMREC_DIR={xmrec_dir}: no such folder; point it at the folder holding the "
                            f"{config.data_file} files, or unset it")
    sums = expected_checksums()
    url = config.data_url.format(market=market)
    for folder in folders:
        path = folder / name
        if path.is_file():
            if name in sums:
                advice = f"replace it with the release's file ({url})"
                if folder == data_dir and not xmrec_dir:  # else deleting it downloads nothing
                    advice += ", or delete it and the next run downloads that"
                verify_file(path, sums[name], advice)
            return path
    if name not in sums:
        elsewhere = f" (nor is it in XMREC_DIR={xmrec_dir})" if xmrec_dir else ""
        raise DataError(f"{data_dir / name}: no such file{elsewhere}, and only the XMarket Electronics files "
                        f"(data/SHA256SUMS) are downloaded; put market {market}'s file there")
    if xmrec_dir:
        raise DataError(f"{folders[-1] / name}: no such file (XMREC_DIR={xmrec_dir}; nor is it in "
                        f"data_dir={data_dir}); put it there, or unset XMREC_DIR to download the XMarket "
                        f"Electronics files into data_dir")
    download(url, data_dir / name, sums[name])
    return data_dir / name


def read_market_file(path: Path) -> pd.DataFrame:
    """Read and validate one market's file: columns userId, itemId (str), rate (float), date."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().split()
        if header != COLUMNS:
            raise DataError(f"{path}:1: header must be {' '.join(COLUMNS)!r}, got {' '.join(header)!r}")
        frame = pd.read_csv(path, sep=" ", skiprows=1, header=None, names=COLUMNS, dtype=str,
                            keep_default_na=False, na_filter=False, engine="c", encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start}): not a market file in the XMarket "
                        f"format") from None
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=COLUMNS)
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        where = f":{line.group(1)}" if line else ""
        raise DataError(f"{path}{where}: malformed line, expected 4 space-separated fields "
                        f"({error})") from None
    if frame.empty:
        raise DataError(f"{path}: no interaction after the header")
    rate = pd.to_numeric(frame["rate"], errors="coerce")
    date = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")
    problems = {
        "expected 4 space-separated fields": (frame == "").any(axis=1).to_numpy(),
        "rating must be a number in [1, 5]": ~rate.between(1.0, 5.0).to_numpy(),
        "date must be YYYY-MM-DD": date.isna().to_numpy(),
    }
    for problem, bad in problems.items():
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}:{row + 2}: {problem}; line is {' '.join(frame.iloc[row])!r}")
    frame["rate"] = rate
    frame["date"] = date
    return frame


def load_markets(config: Config) -> dict[str, pd.DataFrame]:
    """The markets of data_markets, found or downloaded and verified (all of them first), then
    read. Files that the project does not know (not in data/SHA256SUMS) are used with a note."""
    paths = {market: locate_data_file(market, config) for market in market_names(config)}
    sums = expected_checksums()
    unknown = [str(path) for market, path in paths.items() if data_file_name(market, config) not in sums]
    if unknown:
        print(f"note: {', '.join(unknown)}: not files of the XMarket Electronics release (data/SHA256SUMS), "
              f"used without a checksum", file=sys.stderr)
    return {market: read_market_file(path) for market, path in paths.items()}


def check_eval_negatives(frames: dict[str, pd.DataFrame], target_market: str, config: Config) -> None:
    """Raise ConfigError if some user of the target could have fewer allowed items than
    num_eval_negatives (sampled evaluation): the pool without the user's own items of the target."""
    if config.eval_mode != "sampled":
        return
    target = frames[target_market]
    if config.eval_negative_pool == "global":
        pool = pd.concat([frame["itemId"] for frame in frames.values()]).nunique()
    else:
        pool = target["itemId"].nunique()
    most_own = int(target.groupby("userId")["itemId"].nunique().max())
    if config.num_eval_negatives > pool - most_own:
        raise ConfigError(f"num_eval_negatives={config.num_eval_negatives}: the {config.eval_negative_pool} "
                          f"pool of {target_market} holds {pool} items and a user has {most_own} of his own, "
                          f"which are never his negatives; use at most {pool - most_own}")


def check_train_negatives(frames: dict[str, pd.DataFrame], config: Config) -> None:
    """Raise ConfigError if some user could have fewer items outside his own than training
    negatives (train_negatives_per: num_train_negatives x his distinct items or his rows): the
    pool is every market's items. Counted over all his interactions, as his training data are
    for every user but the target's."""
    data = pd.concat([frame[["userId", "itemId"]].assign(market=market) for market, frame in frames.items()])
    pool = data["itemId"].nunique()
    users = data.groupby(["market", "userId"])["itemId"].agg(["nunique", "size"])
    per = users["nunique" if config.train_negatives_per == "distinct_item" else "size"].to_numpy()
    others = pool - users["nunique"].to_numpy()
    short = np.flatnonzero(config.num_train_negatives * per > others)
    if len(short):
        (market, user), first = users.index[short[0]], short[0]
        raise ConfigError(f"num_train_negatives={config.num_train_negatives}: user {user} of {market} has "
                          f"{pool - others[first]} of the {pool} items of all markets and needs "
                          f"{config.num_train_negatives * per[first]} training negatives among the others; use at "
                          f"most {int((others // per).min())}")


def check_target_users(frames: dict[str, pd.DataFrame], target_market: str) -> None:
    """Raise DataError if some user of the target has fewer than 2 interactions there: his last
    two are his validation and test items."""
    counts = frames[target_market]["userId"].value_counts()
    if counts.min() < 2:
        raise DataError(f"{target_market}: every user needs at least 2 interactions (validation and test); "
                        f"user {counts.idxmin()} has {counts.min()}")


def check_data(frames: dict[str, pd.DataFrame], targets: list[str], config: Config) -> None:
    """The checks of the data against the settings that a run would otherwise fail later
    (check_train_negatives, then check_target_users and check_eval_negatives per target):
    run before any run folder, trial or export is made."""
    check_train_negatives(frames, config)
    for target in targets:
        check_target_users(frames, target)
        check_eval_negatives(frames, target, config)


def market_statistics(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Users / items / ratings per market, plus the union of all items."""
    rows = {m: {"users": f["userId"].nunique(), "items": f["itemId"].nunique(), "ratings": len(f)}
            for m, f in frames.items()}
    union_items = pd.concat([f["itemId"] for f in frames.values()]).nunique()
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.loc["all"] = [sum(table["users"]), union_items, sum(table["ratings"])]
    return table


# ---------------------------------------------------------------- one (target, seed): arrays

@dataclass
class Dataset:
    """Everything one (target market, seed) needs, as integer arrays. Item 0 is padding.

    Users are (market, userId) pairs: a user's history is his training items in that market.
    """
    target_market: str
    markets: tuple[str, ...]        # market id -> name
    item_names: np.ndarray          # (num_items + 1,) raw item id; [0] = "" (padding)
    user_names: np.ndarray          # (num_users,) raw user id
    user_market: np.ndarray         # (num_users,) market id of each user
    user_history: np.ndarray        # (num_users, max_history) training items, 0-padded at the end
    history_length: np.ndarray      # (num_users,) number of real items in user_history
    train_user: np.ndarray          # (num_rows,) training rows of all markets: user,
    train_item: np.ndarray          # (num_rows,) candidate item,
    train_label: np.ndarray         # (num_rows,) 1.0 positive / 0.0 sampled negative
    target_users: np.ndarray        # (num_target_users,) the target market's users
    valid_candidates: np.ndarray    # (num_target_users, 1 + negatives) column 0 = held-out item
    test_candidates: np.ndarray     # (num_target_users, 1 + negatives) column 0 = held-out item;
    #                                 in full ranking, rows end in 0-padding
    test_repeat: np.ndarray         # (num_target_users,) the test item is among the user's training items
    test_item_seen: np.ndarray      # (num_target_users,) the test item is in the target's training data

    @property
    def num_items(self) -> int:
        return len(self.item_names) - 1

    @property
    def target_id(self) -> int:
        return self.markets.index(self.target_market)

    def target_rows(self) -> np.ndarray:
        """Indices of the training rows of the target market (the fine-tuning data)."""
        return np.flatnonzero(self.user_market[self.train_user] == self.target_id)


@dataclass
class DeviceData:
    """The integer arrays of a Dataset that training and evaluation use, as torch tensors on
    one device (moved there once per seed)."""
    user_history: torch.Tensor      # (num_users, max_history) long
    history_length: torch.Tensor    # (num_users,) long
    user_market: torch.Tensor       # (num_users,) long
    train_user: torch.Tensor        # (num_rows,) long
    train_item: torch.Tensor        # (num_rows,) long
    train_label: torch.Tensor       # (num_rows,) float
    target_users: torch.Tensor      # (num_target_users,) long
    valid_candidates: torch.Tensor  # (num_target_users, 1 + negatives) long
    test_candidates: torch.Tensor   # (num_target_users, 1 + negatives) long
    test_repeat: torch.Tensor       # (num_target_users,) bool
    test_item_seen: torch.Tensor    # (num_target_users,) bool

    @classmethod
    def from_dataset(cls, dataset: Dataset, device: torch.device) -> DeviceData:
        return cls(**{field: torch.tensor(getattr(dataset, field), device=device)
                      for field in cls.__dataclass_fields__})


def sample_negatives(rng: np.random.Generator, counts: np.ndarray, pool: np.ndarray,
                     excluded_user: np.ndarray, excluded_item: np.ndarray) -> np.ndarray:
    """For each user u, counts[u] distinct items drawn uniformly from `pool` without the
    items paired with u in (excluded_user, excluded_item). Returns (counts.sum(),) items,
    user 0's first, then user 1's, ... Vectorised rejection sampling: a few rounds suffice.
    """
    num_users = len(counts)
    stride = np.int64(max(pool.max(), excluded_item.max(initial=0)) + 1)
    taken = np.unique(excluded_user.astype(np.int64) * stride + excluded_item)
    excluded_in_pool = np.bincount((taken // stride)[np.isin(taken % stride, pool)],
                                   minlength=num_users)
    short = np.flatnonzero(counts > len(pool) - excluded_in_pool)
    if len(short):
        raise ValueError(f"user {short[0]} needs {counts[short[0]]} negatives but only "
                         f"{len(pool) - excluded_in_pool[short[0]]} items of the pool are allowed")
    need = counts.astype(np.int64).copy()
    drawn_users, drawn_items = [], []
    while need.sum() > 0:
        users = np.repeat(np.arange(num_users), need + need // 4 + 1)  # sorted by user
        items = pool[rng.integers(0, len(pool), size=len(users))]
        keys = users * stride + items
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        ok = first & ~np.isin(keys, taken)
        users, items, keys = users[ok], items[ok], keys[ok]
        rank = np.arange(len(users)) - np.searchsorted(users, users)  # position within the user
        keep = rank < need[users]
        drawn_users.append(users[keep])
        drawn_items.append(items[keep])
        taken = np.union1d(taken, keys[keep])
        need -= np.bincount(users[keep], minlength=num_users)
    users = np.concatenate(drawn_users)
    return np.concatenate(drawn_items)[np.argsort(users, kind="stable")]


def build_dataset(frames: dict[str, pd.DataFrame], target_market: str, seed: int,
                  config: Config) -> Dataset:
    """The seeded leave-one-out split and samples of docs/SPEC.md section 3, vectorised, under the
    protocol settings of `config` (docs/PROTOCOL.md)."""
    if target_market not in frames:
        raise ConfigError(f"unknown target market {target_market!r}; allowed: {', '.join(frames)}")
    check_target_users(frames, target_market)
    rng = np.random.default_rng(seed)
    markets = tuple(sorted(frames))
    target_id = markets.index(target_market)
    item_names = np.concatenate([[""], np.unique(np.concatenate(
        [f["itemId"].to_numpy(dtype=str) for f in frames.values()]))])

    # all interactions, each market shuffled (seeded): row order is now the random order
    data = pd.concat([frames[m][["userId", "itemId", "date"]].assign(market=i, line=np.arange(len(frames[m])))
                      for i, m in enumerate(markets)], ignore_index=True)
    data = data.iloc[rng.permutation(len(data))].reset_index(drop=True)
    if config.split == "temporal":  # chronological; same date: the later line of the file is later
        data = data.sort_values(["date", "line"], kind="stable").reset_index(drop=True)
    data["item"] = np.searchsorted(item_names[1:], data["itemId"].to_numpy(dtype=str)) + 1
    data["user"] = data.groupby(["market", "userId"], sort=True).ngroup()
    users = data.drop_duplicates("user").sort_values("user")
    user_market = users["market"].to_numpy()
    user_names = users["userId"].to_numpy(dtype=str)
    num_users = len(users)

    # target: the last two interactions of each user (in row order) are valid and test
    from_end = data.groupby("user").cumcount(ascending=False).to_numpy()
    in_target = data["market"].to_numpy() == target_id
    valid_rows = data[in_target & (from_end == 1)].sort_values("user")
    test_rows = data[in_target & (from_end == 0)].sort_values("user")
    train = data[~(in_target & (from_end <= 1))]
    target_users = test_rows["user"].to_numpy()  # = valid_rows' users: each has 2 or more (check_target_users)
    train_user_pos = train["user"].to_numpy()
    train_item_pos = train["item"].to_numpy()

    # histories: each user's training items (once per purchase, or once per distinct item), at
    # most max_history of them, drawn at random
    entries = train[["user", "item"]] if config.history_repeats else train[["user", "item"]].drop_duplicates()
    entries = entries.iloc[rng.permutation(len(entries))].sort_values("user", kind="stable")
    slot = entries.groupby("user").cumcount().to_numpy()
    keep = slot < config.max_history
    user_history = np.zeros((num_users, config.max_history), dtype=np.int64)
    user_history[entries["user"].to_numpy()[keep], slot[keep]] = entries["item"].to_numpy()[keep]
    history_length = np.bincount(entries["user"].to_numpy()[keep], minlength=num_users)

    # training negatives, from the global item pool
    pool = np.arange(1, len(item_names))
    negative_counts = train_negative_counts(train_user_pos, train_item_pos, num_users, config)
    negative_items = sample_negatives(rng, negative_counts, pool, train_user_pos, train_item_pos)
    negative_users = np.repeat(np.arange(num_users), negative_counts)

    # evaluation candidates: the held-out item, then negatives from the pool that are neither
    # the user's training items nor the held-out item (nor, optionally, the other held-out item)
    target_pool = np.unique(data.loc[in_target, "item"])  # full ranking: always the target's items
    global_pool = config.eval_negative_pool == "global" and config.eval_mode == "sampled"
    eval_pool = pool if global_pool else target_pool
    is_target_row = np.isin(train_user_pos, target_users)
    row_of_user = np.searchsorted(target_users, train_user_pos[is_target_row])
    held_out = {"valid": valid_rows["item"].to_numpy(), "test": test_rows["item"].to_numpy()}
    user_rows = np.arange(len(target_users))
    candidates = {}
    for split, other in (("valid", "test"), ("test", "valid")):
        excluded_user = [row_of_user, user_rows]
        excluded_item = [train_item_pos[is_target_row], held_out[split]]
        if not config.held_out_in_negatives:
            excluded_user.append(user_rows)
            excluded_item.append(held_out[other])
        excluded_user, excluded_item = np.concatenate(excluded_user), np.concatenate(excluded_item)
        if config.eval_mode == "full":
            negatives = all_allowed_items(eval_pool, len(target_users), excluded_user, excluded_item)
        else:
            counts = np.full(len(target_users), config.num_eval_negatives)
            negatives = sample_negatives(rng, counts, eval_pool, excluded_user, excluded_item)
            negatives = negatives.reshape(len(target_users), -1)
        candidates[split] = np.column_stack([held_out[split], negatives])

    target_train_items = np.unique(train_item_pos[is_target_row])
    test_repeat = np.zeros(len(target_users), dtype=bool)
    test_repeat[np.unique(row_of_user[train_item_pos[is_target_row] == held_out["test"][row_of_user]])] = True
    return Dataset(
        target_market=target_market, markets=markets, item_names=item_names,
        user_names=user_names, user_market=user_market,
        user_history=user_history, history_length=history_length,
        train_user=np.concatenate([train_user_pos, negative_users]),
        train_item=np.concatenate([train_item_pos, negative_items]),
        train_label=np.concatenate([np.ones(len(train_user_pos), dtype=np.float32),
                                    np.zeros(len(negative_items), dtype=np.float32)]),
        target_users=target_users,
        valid_candidates=candidates["valid"], test_candidates=candidates["test"],
        test_repeat=test_repeat, test_item_seen=np.isin(held_out["test"], target_train_items))


def train_negative_counts(positive_user: np.ndarray, positive_item: np.ndarray, num_users: int,
                          config: Config) -> np.ndarray:
    """(num_users,) training negatives of each user: num_train_negatives times his number of
    distinct training items (the authors') or of his training rows (`train_negatives_per`)."""
    if config.train_negatives_per == "distinct_item":
        positive_user = np.unique(np.column_stack([positive_user, positive_item]), axis=0)[:, 0]
    return config.num_train_negatives * np.bincount(positive_user, minlength=num_users)


def resample_train_negatives(dataset: Dataset, rng: np.random.Generator, config: Config) -> np.ndarray:
    """New training negatives for the rows of `dataset` that hold negatives, in their order
    (grouped by user, user 0's first: as build_dataset draws them)."""
    positive = dataset.train_label == 1
    users, items = dataset.train_user[positive], dataset.train_item[positive]
    counts = train_negative_counts(users, items, len(dataset.user_names), config)
    return sample_negatives(rng, counts, np.arange(1, dataset.num_items + 1), users, items)


def all_allowed_items(pool: np.ndarray, num_users: int, excluded_user: np.ndarray,
                      excluded_item: np.ndarray) -> np.ndarray:
    """(num_users, most allowed) every pool item not excluded for the user, ascending, then
    0-padding: the candidates of full ranking."""
    allowed = np.ones((num_users, len(pool)), dtype=bool)
    in_pool = np.isin(excluded_item, pool)
    allowed[excluded_user[in_pool], np.searchsorted(pool, excluded_item[in_pool])] = False
    order = np.argsort(~allowed, axis=1, kind="stable")  # allowed items first, in pool order
    width = allowed.sum(axis=1).max()
    items = pool[order[:, :width]]
    items[~np.take_along_axis(allowed, order[:, :width], axis=1)] = 0
    return items


def export_candidates(dataset: Dataset, folder: Path) -> dict[str, str]:
    """Write valid/test candidates as gzipped TSV: user_id, positive, negatives (space separated).

    Returns each split's SHA-256 of the uncompressed table, which results.json records: equal
    sums mean equal candidates, and the run folders need not keep (or commit) the files. The
    files are byte-identical for identical candidates (no time stamp in the gzip header)."""
    sums = {}
    for split, candidates in (("valid", dataset.valid_candidates), ("test", dataset.test_candidates)):
        names = dataset.item_names[candidates]
        table = pd.DataFrame({
            "user_id": dataset.user_names[dataset.target_users],
            "positive": names[:, 0],
            "negatives": [" ".join(row) for row in names[:, 1:]],
        })
        text = table.to_csv(sep="\t", index=False, lineterminator="\n").encode()
        write_bytes(folder / f"{split}_candidates.tsv.gz", gzip.compress(text, mtime=0))
        sums[split] = hashlib.sha256(text).hexdigest()
    return sums


def main(argv: list[str]) -> None:
    config, extra = parse_overrides(argv, extra={"seed": int, "export": str})
    runs_seeds = [arg.split("=", 1)[0] for arg in argv if arg.startswith(("--first_seed=", "--seeds="))]
    if runs_seeds:
        raise ConfigError(f"{runs_seeds[0]}: a run's seeds; the split of one seed is --seed=S")
    seed = extra.get("seed", 0)
    if not 0 <= seed <= MAX_INT:
        raise ConfigError(f"--seed={seed}: must be in 0 .. 2**63-1")
    if "export" in extra:  # before any work: a folder that cannot be made
        try:
            Path(extra["export"]).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"--export={extra['export']}: cannot create that folder "
                              f"({error.strerror}: {error.filename})") from None
    frames = load_markets(config)
    if "export" not in extra:
        print(market_statistics(frames).to_string())
        return
    check_data(frames, target_markets(config), config)
    for target in target_markets(config):
        dataset = build_dataset(frames, target, seed, config)
        folder = Path(extra["export"])
        if config.target_market == "all":
            folder = folder / target
        for split, sha256 in export_candidates(dataset, folder).items():
            print(f"wrote {folder / f'{split}_candidates.tsv.gz'}  (sha256 of the table {sha256})")


if __name__ == "__main__":
    run_command(main, (ConfigError, DataError, WriteError))
