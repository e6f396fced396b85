"""A trained model to keep, use and share: load it, recommend with it, score it again.

    from tools.trained import load_trained, recommend
    trained = load_trained("log/acmr-in-seeds0-4-20261205-101010")      # seed 0 (the folder's first), its last stage
    print(recommend(trained, ["AF5LCYDTUOE5OISH7WTSYTYKDE3Q"], k=10))  # his top 10 of the target market

`load_trained` reads a run folder's kept weights (`seed<S>_<stage>_weights.pt`, any seed and
stage), a weights file, or the authors' released checkpoint of a market (`authors="in"`, through
runfolder/authors_release.py's mapping), and returns a `Trained`: the model (eval mode, on the CPU), the raw
item id of each item row, the market of each market row, and the settings.

`recommend` gives each user's top-k items of a market (the target by default), scored by the
model, among the items of that market that he has not bought. His history is all his purchases
in that market in the data files (once per purchase, or once per distinct item with
`history_repeats=false`, as the model was trained), in file order; a longer history than
`max_history` is subsampled as in training, `max_history` purchases drawn at random, seeded by
(`seed`, the user id): the same user gets the same history whoever else is asked for. Unlike at
evaluation, nothing is held out: the history includes his latest purchases.

`rescore` scores a run's kept weights again, per seed and stage, without training, on the run's
own settings (the run's test metrics, exactly, on the device kind it ran on) or on another
evaluation protocol: only the settings of EVALUATION_SETTINGS (and where and how fast it runs) may
change; any other changes the split, the histories or the training data that the weights were
trained on (data_loader.build_dataset draws those first, then the evaluation candidates, from
the same generator).

    python -m tools.trained recommend --run=FOLDER --users=U1,U2 [--seed=S] [--stage=STAGE] [--k=10] [--market=M] [--history_seed=0] [--out=FILE.tsv|.json]
    python -m tools.trained recommend --weights=FILE --users=U1 ...
    python -m tools.trained recommend --authors=in [--stage=finetune] [--authors_dir=DIR] --users=U1 ...
    python -m tools.trained rescore --run=FOLDER [--eval_mode=full] [--eval_negative_pool=target] [--seed=S] [--stage=STAGE] [--name=NAME] [--overwrite=true]
    python -m tools.trained protocol-table --runs=FOLDER,FOLDER,... [--seed=0] [--stage=finetune] [--out=FILE.md]

`--users_file=PATH` reads the users one per line; `--history_seed` seeds the subsample of a
history longer than max_history; `--authors_dir` is the folder of the authors' checkpoints
(default: runfolder/authors_release.py's search). `rescore` writes `<run>/rescored/<name>.json`
(name: the changed settings, e.g. `eval_mode=full`, or `own`); it refuses to replace an earlier
one unless `--overwrite=true`. `protocol-table` rescores each run's seed-0 fine-tuned weights
(`--seed`, `--stage`) under runs.PROTOCOL_RESCORINGS (reusing earlier rescorings) and prints
the markdown table of runs.protocol_table (reporting/documents.py's block `protocol-rescored` renders it
from the committed runs).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from torch import nn

from config import (
    RUN_ONLY_SETTINGS,
    STAGES,
    Config,
    ConfigError,
    parse_overrides,
    run_command,
)
from data_loader import (
    DataError,
    DeviceData,
    build_dataset,
    check_eval_negatives,
    load_markets,
)
from evaluate import evaluate_candidates, score_candidates
from model import build_model
from reporting.metrics import METRICS
from reporting.runs import (
    PROTOCOL_RESCORINGS,
    RESCORED,
    RunFolderError,
    protocol_table,
    read_json,
)
from runfolder.authors_release import (
    authors_model,
    authors_order,
    locate_checkpoint,
    read_checkpoint,
)
from runfolder.checkpoints import (
    WEIGHTS_FORMAT,
    CheckpointError,
    read_torch_file,
    weights_path,
)
from runfolder.environment import environment
from runfolder.files import WriteError, write_json, write_text
from runfolder.migration import config_from_saved
from speed.host import configure_host, resolve_device
from train_model import test_metrics

EVALUATION_SETTINGS = ("eval_negative_pool", "eval_mode", "num_eval_negatives", "held_out_in_negatives")
WEIGHTS_NAME = re.compile(r"seed(\d+)_(\w+?)_weights\.pt")


@dataclass
class Trained:
    """A trained model and what is needed to use it."""
    model: nn.Module              # eval mode, on the CPU
    config: Config                # the settings it was trained with (the authors': ours, sized as theirs)
    item_ids: np.ndarray          # raw item id of each item row; row 0 = "" (padding)
    markets: tuple[str, ...]      # market name of each market row
    target_market: str
    stage: str
    seed: int | None              # None for the authors' weights
    source: str                   # the file it came from
    best_epoch: int | None = None           # the epoch whose weights these are (None: the authors')
    user_ids: np.ndarray | None = None      # the baselines: raw user id of each user row
    user_markets: np.ndarray | None = None  # and its market


# ---------------------------------------------------------------- loading

def kept_weights(run_dir: Path) -> list[tuple[int, str]]:
    """The (seed, stage) of each weights file a run folder keeps, by seed, stages in order."""
    found = [(int(m[1]), m[2]) for p in run_dir.glob("seed*_weights.pt") if (m := WEIGHTS_NAME.fullmatch(p.name))]
    return sorted(found, key=lambda pair: (pair[0], STAGES.index(pair[1]) if pair[1] in STAGES else 9))


def resolve_weights(run_dir: Path, seed: int | None = None, stage: str | None = None) -> Path:
    """The weights file of a run folder's seed and stage: by default its first seed and, of that
    seed, its last stage."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    kept = kept_weights(run_dir)
    if not kept:
        raise CheckpointError(f"{run_dir}: keeps no weights (seed<S>_<stage>_weights.pt): not a run folder, "
                              f"or one written before runs kept their weights")
    seed = kept[0][0] if seed is None else seed
    stages = [s for k, s in kept if k == seed]
    stage = (stages[-1] if stages else "finetune") if stage is None else stage
    if (seed, stage) not in kept:
        raise CheckpointError(f"{run_dir}: no weights of seed {seed} {stage}; it keeps "
                              + ", ".join(f"seed {k} {s}" for k, s in kept))
    return weights_path(run_dir, seed, stage)


def read_weights(path: Path) -> dict:
    """A weights file's payload (checkpoints.save_weights), checked; one-line CheckpointError if
    it is missing, unreadable or not one."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    return read_torch_file(path, WEIGHTS_FORMAT, "weights file")


def empty_model(config: Config, num_items: int, markets: Sequence[str], num_users: int) -> nn.Module:
    """model.build_model's model of `config`, sized for these rows, before its weights are loaded."""
    sizes = SimpleNamespace(num_items=num_items, markets=tuple(markets), user_names=np.zeros(num_users),
                            target_rows=lambda: np.zeros(0, dtype=np.int64), train_item=np.zeros(0, dtype=np.int64),
                            train_label=np.zeros(0))  # popularity: zero counts until loaded
    return build_model(config, sizes)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, config: Config) -> None:
    """The weights into `model`, strictly; a file of another model size or kind is one line."""
    ours = model.state_dict()
    missing, unknown = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or unknown:
        raise CheckpointError(f"{path}: weights of another model than its settings' {config.model} "
                              f"(missing {missing[:3]}, unknown {unknown[:3]})")
    wrong = [f"{name} {tuple(value.shape)}, the settings give {tuple(ours[name].shape)}"
             for name, value in state.items() if value.shape != ours[name].shape]
    if wrong:
        raise CheckpointError(f"{path}: weights of another model size than its settings (hidden_size="
                              f"{config.hidden_size}, num_layers={config.num_layers}, ...): {wrong[0]}")
    model.load_state_dict(state, strict=True)


def from_weights_file(path: Path) -> Trained:
    payload = read_weights(path)
    try:
        config = config_from_saved(payload["config"])
        item_ids, markets = np.asarray(payload["item_ids"], dtype=str), tuple(payload["markets"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: a weights file without usable settings or id maps ({error})") from None
    users = payload.get("user_ids")
    model = empty_model(config, len(item_ids) - 1, markets, len(users) if users is not None else 0)
    load_state(model, payload["state_dict"], path, config)
    return Trained(model=model.eval(), config=config, item_ids=item_ids, markets=markets,
                   target_market=payload["target_market"], stage=payload["stage"], seed=payload["seed"],
                   source=str(path), best_epoch=payload.get("best_epoch"),
                   user_ids=None if users is None else np.asarray(users, dtype=str),
                   user_markets=None if users is None else np.asarray(payload["user_markets"], dtype=str))


def from_authors(market: str, stage: str, frames: dict[str, pd.DataFrame] | None, config: Config,
                 authors_dir: str | None = None) -> Trained:
    """The authors' released checkpoint of `market` and `stage` (runfolder/authors_release.py): its rows are
    the authors' item and market order (authors_order), which needs the data files."""
    path = locate_checkpoint(market, stage, authors_dir)
    model = authors_model(read_checkpoint(path), config.dropout, config.fast_kernels)
    frames = load_markets(config) if frames is None else frames
    names, markets = authors_order(frames, market)
    layer = model.encoder.layers[0]
    sized = dataclasses.replace(config, target_market=market, hidden_size=model.norm.normalized_shape[0],
                                num_layers=len(model.encoder.layers), num_heads=layer.num_heads,
                                ff_size=layer.linear1.out_features)
    return Trained(model=model.eval(), config=sized, item_ids=np.concatenate([[""], names]), markets=tuple(markets),
                   target_market=market, stage=stage, seed=None, source=str(path))


def load_trained(source: str | Path | None = None, *, seed: int | None = None, stage: str | None = None,
                 authors: str | None = None, frames: dict[str, pd.DataFrame] | None = None,
                 config: Config | None = None, authors_dir: str | None = None) -> Trained:
    """A trained model, from a run folder (`seed`: default its first; `stage`: default that seed's
    last), a weights file (`source` ending in .pt), or the authors' released checkpoint of the
    market `authors` (`stage`: default finetune; `frames` or `config`'s data give its item order).
    Raises CheckpointError (missing, unreadable, another model size) or ConfigError, one line."""
    if authors is not None:
        if source is not None:
            raise ConfigError("give a run folder, a weights file or authors=MARKET, not two of them")
        stage = stage or "finetune"
        if stage not in STAGES:
            raise ConfigError(f"stage={stage}: allowed {', '.join(STAGES)}")
        return from_authors(authors, stage, frames, config or Config(), authors_dir)
    if source is None:
        raise ConfigError("give a run folder, a weights file or authors=MARKET")
    path = Path(source)
    if path.suffix == ".pt" and not path.is_dir():
        if seed is not None or stage is not None:
            raise ConfigError(f"{path}: a weights file holds one seed and stage; seed and stage select "
                              f"among a run folder's")
        return from_weights_file(path)
    return from_weights_file(resolve_weights(path, seed, stage))


# ---------------------------------------------------------------- recommending

class UserRows(nn.Module):
    """A baseline scored through evaluate.score_candidates: its users are rows of `rows`."""

    def __init__(self, model: nn.Module, rows: torch.Tensor) -> None:
        super().__init__()
        self.model, self.rows = model, rows

    def forward(self, users: torch.Tensor, history_items: torch.Tensor, candidate_item: torch.Tensor,
                market_ids: torch.Tensor) -> torch.Tensor:
        return self.model(self.rows[users], history_items, candidate_item, market_ids)


def item_rows(trained: Trained, items: np.ndarray, market: str) -> np.ndarray:
    """The model's rows of raw item ids; an item it has no row for is a DataError."""
    index = pd.Index(trained.item_ids[1:]).get_indexer(items)
    if (index < 0).any():
        raise DataError(f"item {items[index < 0][0]} of market {market} has no row in {trained.source}: "
                        f"the data files are not those it was trained on")
    return index + 1


def histories(trained: Trained, frame: pd.DataFrame, users: list[str], market: str,
              seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Each user's history (users x max_history rows, 0-padded), its length, and the rows of
    everything he bought in `market` (see the module's docstring)."""
    rows = frame[frame["userId"].isin(users)]
    unknown = sorted(set(users) - set(rows["userId"]))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown user {unknown[0]!r}{more}: no purchase in market {market}")
    config = trained.config
    entries = rows if config.history_repeats else rows.drop_duplicates(["userId", "itemId"])
    items = item_rows(trained, entries["itemId"].to_numpy(dtype=str), market)
    by_user = pd.Series(np.arange(len(entries))).groupby(entries["userId"].to_numpy()).apply(np.asarray)
    bought = pd.Series(item_rows(trained, rows["itemId"].to_numpy(dtype=str), market)).groupby(
        rows["userId"].to_numpy()).apply(np.unique)
    history = np.zeros((len(users), config.max_history), dtype=np.int64)
    length = np.zeros(len(users), dtype=np.int64)
    for u, user in enumerate(users):
        own = items[by_user[user]]
        if len(own) > config.max_history:
            rng = np.random.default_rng([seed, zlib.crc32(user.encode())])
            own = own[np.sort(rng.choice(len(own), config.max_history, replace=False))]
        history[u, :len(own)], length[u] = own, len(own)
    return history, length, [bought[user] for user in users]


def recommend(trained: Trained, users: Sequence[str], k: int = 10, market: str | None = None,
              frames: dict[str, pd.DataFrame] | None = None, seed: int = 0,
              batch_floats: int | None = None) -> pd.DataFrame:
    """Each user's top `k` items of `market` (default: the model's target market) that he has not
    bought there, best first: a table of user, rank, item (raw id) and score (the model's logit).
    The model scores users x candidate items in forward passes under a memory budget
    (evaluate.score_candidates; `batch_floats`, default the settings' eval_batch_floats). A user
    with fewer than k items left gets them all."""
    market = market or trained.target_market
    if market not in trained.markets:
        raise ConfigError(f"unknown market {market!r}: the model knows {', '.join(trained.markets)}")
    if k < 1:
        raise ConfigError(f"k={k}: must be >= 1")
    if seed < 0:
        raise ConfigError(f"history seed {seed}: must be >= 0 (--history_seed)")
    users = list(dict.fromkeys(str(user) for user in users))  # each once, in the order given
    if not users:
        raise ConfigError("no user given")
    frames = load_markets(trained.config) if frames is None else frames
    if market not in frames:
        raise ConfigError(f"unknown market {market!r}: the data hold {', '.join(frames)}")
    frame = frames[market]
    history, length, bought = histories(trained, frame, users, market, seed)
    market_items = np.unique(item_rows(trained, frame["itemId"].unique().astype(str), market))
    candidates = np.tile(market_items, (len(users), 1))
    for u, own in enumerate(bought):  # bought items become padding, which scores -inf
        candidates[u, np.searchsorted(market_items, own)] = 0
    model, local = trained.model, torch.arange(len(users))
    if trained.user_ids is not None:  # a baseline: each user's own embedding row
        model = UserRows(model, torch.as_tensor(baseline_rows(trained, users, market)))
    data = SimpleNamespace(target_users=local, history_length=torch.as_tensor(length),
                           user_history=torch.as_tensor(history),
                           user_market=torch.full((len(users),), trained.markets.index(market)))
    budget = trained.config.eval_batch_floats if batch_floats is None else batch_floats
    scores = score_candidates(model, data, torch.as_tensor(candidates), budget)
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    table = pd.DataFrame({"user": np.repeat(users, top.indices.shape[1]),
                          "rank": np.tile(np.arange(1, top.indices.shape[1] + 1), len(users)),
                          "item": trained.item_ids[np.take_along_axis(candidates, top.indices.numpy(), 1)].ravel(),
                          "score": top.values.numpy().ravel()})
    return table[np.isfinite(table["score"])].reset_index(drop=True)  # not the bought items (-inf)


def baseline_rows(trained: Trained, users: list[str], market: str) -> np.ndarray:
    """The user embedding row of each (market, user) of a baseline's weights."""
    index = pd.MultiIndex.from_arrays([trained.user_markets, trained.user_ids]).get_indexer(
        pd.MultiIndex.from_arrays([[market] * len(users), users]))
    if (index < 0).any():
        raise ConfigError(f"unknown user {users[int(np.flatnonzero(index < 0)[0])]!r}: no embedding row of "
                          f"market {market} in {trained.source}")
    return index


def write_recommendations(table: pd.DataFrame, path: Path) -> None:
    """The table as TSV (columns user, rank, item, score), or as JSON ({user: [{item, score}, ...]})
    when the name ends in .json; written whole or not at all (files.write_file)."""
    if path.suffix == ".json":
        write_json(path, {user: group[["item", "score"]].to_dict("records")
                          for user, group in table.groupby("user", sort=False)})
    else:
        write_text(path, table.to_csv(sep="\t", index=False, lineterminator="\n"))


# ---------------------------------------------------------------- rescoring

def rescoring_config(saved: Config, changes: dict[str, object]) -> Config:
    """The weights' settings with `changes`, which may only be EVALUATION_SETTINGS or where and
    how fast it runs: any other would change the split, the histories or the training data."""
    refused = [key for key, value in changes.items()
               if key not in (*EVALUATION_SETTINGS, *RUN_ONLY_SETTINGS) and value != getattr(saved, key)]
    if refused:
        key = refused[0]
        raise ConfigError(f"--{key}={changes[key]}: the weights were trained with {key}={getattr(saved, key)}; "
                          f"rescoring keeps the split, histories and training data, so only "
                          f"{', '.join(EVALUATION_SETTINGS)} (and where it runs) may change")
    return dataclasses.replace(saved, **changes)


def rescoring_name(saved: Config, changes: dict[str, object]) -> str:
    """`own`, or the changed evaluation settings as key=value joined by `+`."""
    changed = [f"{key}={value}" for key, value in changes.items()
               if key in EVALUATION_SETTINGS and value != getattr(saved, key)]
    return "+".join(changed) or "own"


def rescore(run_dir: Path, changes: dict[str, object] | None = None, seeds: Sequence[int] | None = None,
            stages: Sequence[str] | None = None, frames: dict[str, pd.DataFrame] | None = None,
            device: torch.device | None = None) -> dict[str, object]:
    """Validation and test metrics (with train_model.test_metrics' break-downs) of a run folder's
    kept weights of each seed and stage (default: all it keeps), on the seed's split rebuilt with
    the weights' settings and `changes` (rescoring_config). Without changes, on the device kind the
    run used and its eval_batch_floats, the test metrics are results.json's, exactly."""
    changes = dict(changes or {})
    kept = [(s, st) for s, st in kept_weights(run_dir) if (seeds is None or s in seeds)
            and (stages is None or st in stages)]
    if not kept:
        resolve_weights(run_dir, seeds[0] if seeds else None, stages[0] if stages else None)  # says why
    runs, settings = [], None
    for seed in dict.fromkeys(s for s, _ in kept):
        dataset = None
        run = {"seed": seed}
        for _, stage in [pair for pair in kept if pair[0] == seed]:
            path = weights_path(run_dir, seed, stage)
            trained = from_weights_file(path)
            config = rescoring_config(trained.config, changes)
            settings = dataclasses.asdict(config)
            device = device or resolve_device(config.device)
            if dataset is None:
                frames = load_markets(config) if frames is None else frames
                check_eval_negatives(frames, trained.target_market, config)
                dataset = build_dataset(frames, trained.target_market, seed, config)
                data = DeviceData.from_dataset(dataset, device)
            if not np.array_equal(dataset.item_names, trained.item_ids) or tuple(dataset.markets) != trained.markets:
                raise DataError(f"{path}: the data files give other items or markets than the weights' rows: "
                                f"not the data the run was trained on")
            model = trained.model.to(device)
            test = test_metrics(model, data, config)
            test.pop("ranks")
            run[stage] = {**test, "valid": evaluate_candidates(model, data, data.valid_candidates,
                                                               config.eval_batch_floats),
                          "best_epoch": trained.best_epoch}
        runs.append(run)
    return {"run": str(run_dir), "target_market": trained.target_market,
            "changed": {key: value for key, value in changes.items() if key in EVALUATION_SETTINGS},
            "settings": settings, "environment": environment(device), "runs": runs}


def rescore_run(run_dir: Path, changes: dict[str, object] | None = None, name: str | None = None,
                overwrite: bool = False, **options: object) -> tuple[Path, dict[str, object]]:
    """`rescore`, written to <run>/rescored/<name>.json (name: rescoring_name). An earlier file of
    that name is refused, unless `overwrite`."""
    changes = dict(changes or {})
    saved = from_weights_file(resolve_weights(Path(run_dir))).config
    rescoring_config(saved, changes)  # refuse before any work
    name = name or rescoring_name(saved, changes)
    if not re.fullmatch(r"[\w.=+,-]+", name):
        raise ConfigError(f"--name={name}: letters, digits and . = + , - _ only")
    path = Path(run_dir) / RESCORED / f"{name}.json"
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists (an earlier rescoring); --overwrite=true replaces it, --name=NAME "
                          f"writes another")
    result = rescore(Path(run_dir), changes, **options)
    write_json(path, result)
    return path, result


# ---------------------------------------------------------------- the protocol table

def protocol_rescorings(run_dirs: Sequence[Path], seed: int = 0, stage: str = "finetune",
                        frames: dict[str, pd.DataFrame] | None = None, where: dict[str, object] | None = None,
                        say: Callable[[str], object] = print) -> list[str]:
    """Rescore each run's kept `seed` `stage` weights under PROTOCOL_RESCORINGS, then their
    protocol_table. An earlier rescoring of that name is used if it holds that seed and stage of
    that protocol, and refused otherwise (never replaced). `where`: the run-only settings of every
    rescoring (data_dir, device, ...); the data files are read once per data set the runs were
    trained on (their data_file and data_markets), unless `frames` are given."""
    where = dict(where or {})
    todo = []
    for run_dir in map(Path, run_dirs):  # everything checked before any work
        resolve_weights(run_dir, seed, stage)
        for name, changes in PROTOCOL_RESCORINGS.items():
            path = run_dir / RESCORED / f"{name}.json"
            if not path.is_file():
                todo.append((run_dir, name, changes))
                continue
            earlier = read_json(path)
            if earlier.get("changed") != changes or not any(r["seed"] == seed and stage in r for r in earlier["runs"]):
                raise ConfigError(f"{path}: an earlier rescoring, but not of seed {seed} {stage} with {name} alone; "
                                  f"move it away to rescore")
            say(f"kept the earlier {path}")
    loaded: dict[tuple[str, str, str], dict[str, pd.DataFrame]] = {}
    for run_dir, name, changes in todo:
        data = frames
        if data is None:
            saved = rescoring_config(from_weights_file(resolve_weights(run_dir, seed, stage)).config, where)
            key = (saved.data_dir, saved.data_file, saved.data_markets)
            if key not in loaded:
                loaded[key] = load_markets(saved)
            data = loaded[key]
        written, _ = rescore_run(run_dir, {**where, **changes}, name, seeds=[seed], stages=[stage], frames=data)
        say(f"wrote {written}")
    return protocol_table(run_dirs, seed, stage)


# ---------------------------------------------------------------- command line

def read_users(extra: dict[str, object]) -> list[str]:
    users = [u for u in str(extra.get("users", "")).split(",") if u]
    if "users_file" in extra:
        try:
            users += Path(extra["users_file"]).read_text().split()
        except OSError as error:
            raise ConfigError(f"--users_file={extra['users_file']}: {error.strerror}") from None
    if not users:
        raise ConfigError("no user: give --users=U1,U2 or --users_file=PATH")
    return users


def given_settings(argv: list[str], config: Config) -> dict[str, object]:
    """The settings of config.py given on the command line, parsed."""
    keys = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(Config) if f.name in keys}


def refuse_model_settings(given: dict[str, object], why: str) -> None:
    """ConfigError for the first of config.py's settings given on the command line that is not
    one of where and how fast it runs (RUN_ONLY_SETTINGS)."""
    not_run = sorted(set(given) - set(RUN_ONLY_SETTINGS))
    if not_run:
        raise ConfigError(f"--{not_run[0]}: {why}; only where it runs may be given")


def main(argv: list[str]) -> None:
    command, argv = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("", argv)
    if command not in ("recommend", "rescore", "protocol-table"):
        if "-h" in argv or "--help" in argv:
            print(__doc__.strip())
            sys.exit(0)
        raise ConfigError("usage: python -m tools.trained recommend|rescore|protocol-table --key=value ... "
                          "(--help shows the commands)")
    options = {"run": str, "weights": str, "authors": str, "authors_dir": str, "seed": int, "stage": str,
               "users": str, "users_file": str, "k": int, "market": str, "out": str, "name": str,
               "overwrite": bool, "runs": str, "history_seed": int}
    config, extra = parse_overrides(argv, extra=options)
    given = given_settings(argv, config)
    configure_host(config)
    empty = [key for key, value in extra.items() if value == ""]
    if empty:
        raise ConfigError(f"--{empty[0]}= is empty: give it a value or leave it out")
    if command == "recommend":
        hint = " (--market=M: the market whose items it recommends)" if "target_market" in given else ""
        refuse_model_settings(given, f"the model keeps its settings{hint}")
        sources = [key for key in ("run", "weights", "authors") if key in extra]
        if len(sources) != 1:
            raise ConfigError("give one of --run=FOLDER, --weights=FILE, --authors=MARKET")
        if "authors" in extra and "seed" in extra:
            raise ConfigError("--seed: the authors released one model per market and stage; --seed selects among "
                              "a run folder's")
        users = read_users(extra)
        if "authors" in extra:
            trained = load_trained(authors=extra["authors"], stage=extra.get("stage"), config=config,
                                   authors_dir=extra.get("authors_dir"))
        else:
            trained = load_trained(extra["run"] if "run" in extra else extra["weights"], seed=extra.get("seed"),
                                   stage=extra.get("stage"))
        trained.config = dataclasses.replace(trained.config, **given)  # where it runs: data_dir, ...
        market = extra.get("market") or trained.target_market
        if market not in trained.markets:
            raise ConfigError(f"unknown market {market!r}: the model knows {', '.join(trained.markets)}")
        table = recommend(trained, users, extra.get("k", 10), market, seed=extra.get("history_seed", 0))
        print(f"{trained.source}: top {extra.get('k', 10)} of market {market}, bought items left out")
        print(table.to_string(index=False))
        if "out" in extra:
            write_recommendations(table, Path(extra["out"]))
            print(f"wrote {extra['out']}")
    elif command == "rescore":
        if "run" not in extra:
            raise ConfigError("give --run=FOLDER")
        seeds = [extra["seed"]] if "seed" in extra else None
        stages = [extra["stage"]] if "stage" in extra else None
        path, result = rescore_run(Path(extra["run"]), given, extra.get("name"), extra.get("overwrite", False),
                                   seeds=seeds, stages=stages)
        for run in result["runs"]:
            for stage in STAGES:
                if stage in run:
                    print(f"seed {run['seed']} {stage:8s} test  "
                          + "  ".join(f"{m} {run[stage][m]:.4f}" for m in METRICS))
        print(f"wrote {path}")
    else:
        folders = [Path(folder) for folder in str(extra.get("runs", "")).split(",") if folder]
        if not folders:
            raise ConfigError("give --runs=FOLDER,FOLDER,...")
        refuse_model_settings(given, "the table rescores each run under its own settings and the protocols of "
                                     "runs.PROTOCOL_RESCORINGS")
        seed, stage = extra.get("seed", 0), extra.get("stage", "finetune")
        for folder in folders:  # before the data are read
            resolve_weights(folder, seed, stage)
        lines = protocol_rescorings(folders, seed, stage, where=given)
        print("\n".join(lines))
        if "out" in extra:
            write_text(Path(extra["out"]), "\n".join(lines) + "\n")
            print(f"wrote {extra['out']}")


if __name__ == "__main__":
    run_command(main, (ConfigError, DataError, CheckpointError, RunFolderError, WriteError))
