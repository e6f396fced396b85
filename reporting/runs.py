"""Run folders as tables: each run's test metrics and validation at the kept epoch, beside the
authors' logged run.

    folders = find_run_folders([Path("results/paper")])
    results, curves = collect(folders)     # one row per (variant, market, seed, stage); epochs
    table = summary_table(results)         # mean, std, n per market and metric; the authors'; the flag

A variant is named by the settings of its config.json that differ from config.py's defaults and
change results (variant_parts); runs of the same variant, market and seed in several folders
count once (the newest folder: run_folder_name's start time). reporting/report.py writes these tables as markdown, reporting/figures.py draws
them, reporting/documents.py fills the documents' generated tables from the committed runs. Importing
this module loads neither torch nor matplotlib.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from config import (
    ELECTRONICS_MARKETS,
    PROTOCOL_SETTINGS,
    REPO,
    RUN_ONLY_SETTINGS,
    SELECTION_SETTINGS,
    STAGES,
    Config,
    ConfigError,
)
from plans.presets import PRESETS
from reporting.metrics import METRICS, SELECTION_METRIC
from runfolder.files import DIVERGED
from runfolder.migration import upgrade_saved

RESULTS = REPO / "results"
AUTHORS_RUNS = REPO / "data" / "authors_logged_runs.json"
HEADLINE_METRICS = ("HR@10", "NDCG@10")
SPEC_MARKETS = ("de", "jp", "in", "fr", "ca", "mx", "uk")  # docs/SPEC.md section 6's order
ELECTRONICS = ",".join(ELECTRONICS_MARKETS)  # the data_markets of the runs the authors' numbers belong to
TOLERANCE_FLOOR = 0.03  # the flag: our mean further than max(2 std, this) from the authors' number
STAGE_TITLES = {"pretrain": "after pre-training", "finetune": "after fine-tuning"}
BREAKDOWN_GROUPS = {"repeat_purchase": "repeat purchase", "new_purchase": "new purchase",
                    "item_seen_in_target_training": "item seen in target training",
                    "item_unseen_in_target_training": "item unseen in target training (cold)"}
NOT_EXPERIMENT = {*RUN_ONLY_SETTINGS, *SELECTION_SETTINGS}  # where, how fast, which market and seeds
RESCORED = "rescored"  # <run>/rescored/<name>.json: kept weights scored again (tools/trained.py rescore)
START_TIME = re.compile(r"(\d{8})-(\d{6})(?:-(\d+))?$")  # a run folder name's end: train_model.py's stamp[-N]
PROTOCOL_RESCORINGS = {"eval_mode=full": {"eval_mode": "full"},  # protocol_table's, by name
                       "eval_negative_pool=target": {"eval_negative_pool": "target"}}


class RunFolderError(ValueError):
    """A run folder's file that cannot be read or is not JSON; the message names it."""


def parse_json(text: str, where: str) -> object:
    """The JSON `text` of `where` (a file, or `file:line`); RunFolderError, naming it, where it is
    not valid JSON."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise RunFolderError(f"{where}: not valid JSON ({error}); the file is damaged: repair it, or move "
                             f"its run folder out of the folders of the report") from None


def read_text(path: Path) -> str:
    """A run folder's file; RunFolderError, naming it, where it cannot be read."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise RunFolderError(f"{path}: cannot read it ({reason})") from None


def read_json(path: Path) -> object:
    """A run folder's JSON file (read_text, parse_json)."""
    return parse_json(read_text(path), str(path))


def authors_numbers() -> pd.DataFrame:
    """The authors' logged runs (SPEC section 6): index (market, stage), columns METRICS (test)
    and `valid <metric>` (validation at the epoch each stage kept)."""
    markets = json.loads(AUTHORS_RUNS.read_text())["markets"]
    rows = {(m, s): {**{k: markets[m][s][k] for k in METRICS},
                     **{f"valid {k}": markets[m][s]["valid_at_best_epoch"][k] for k in METRICS}}
            for m in markets for s in STAGES}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["market", "stage"])


def market_order(markets: Iterable[str]) -> list[str]:
    """The markets among `markets` in docs/SPEC.md section 6's order, any others after them by name,
    `average` last."""
    present = set(markets)
    return ([m for m in SPEC_MARKETS if m in present] + sorted(present - {*SPEC_MARKETS, "average"})
            + (["average"] if "average" in present else []))


def result_settings(config: dict) -> dict:
    """The settings of a run's config.json that differ from config.py's defaults and change
    results, in config.py's order."""
    defaults = dataclasses.asdict(Config())
    return {k: config[k] for k in defaults
            if k not in NOT_EXPERIMENT and k in config and config[k] != defaults[k]}


def best_preset(changed: dict) -> str:
    """The preset (plans/presets.py) that the changed settings match with the most settings. A
    run from given weights (init_weights) is matched without `stages`: a preset's stages say how
    a fresh model trains (`acmr-no-pretraining`), and given weights may be pre-trained ones."""
    if changed.get("init_weights"):
        candidates = {name: {k: v for k, v in preset.items() if k != "stages"} for name, preset in PRESETS.items()}
    else:
        candidates = PRESETS
    matching = [name for name, preset in candidates.items() if preset.items() <= changed.items()]
    return max(matching, key=lambda name: len(candidates[name]))  # "acmr" ({}) always matches; ties: the first


def run_label(config: dict) -> str:
    """The start of a run folder's name: the preset its settings match best (best_preset); a run
    from given weights adds its stages and where the weights come from, e.g.
    `acmr-finetune-from-authors-in-pretrain` (`-from-weights` for a run folder's file)."""
    preset = best_preset(result_settings(config))
    source = config.get("init_weights", "")
    if not source:
        return preset
    origin = source.replace(":", "-") if source.startswith("authors:") else "weights"
    return f"{preset}-{config['stages']}-from-{origin}"


def model_settings(config: dict) -> dict:
    """The changed settings (result_settings) that name neither the preset nor the protocol."""
    changed = result_settings(config)
    preset = PRESETS[best_preset(changed)]
    return {k: v for k, v in changed.items() if k not in preset and k not in PROTOCOL_SETTINGS}


def variant_parts(config: dict, shared: dict | None = None) -> tuple[str, str, str]:
    """(variant, model, protocol) of a run's settings. The model is the preset (plans/presets.py)
    they match best, followed by the other settings that differ from config.py's defaults and
    change results, except the protocol's and those in `shared`, e.g. `gmf (lr=0.01)`; the
    protocol is the protocol settings (config.PROTOCOL_SETTINGS) that differ, e.g.
    `split=temporal`, "" for the authors'; the variant names both, e.g. `gmf (lr=0.01 split=temporal)`."""
    changed = result_settings(config)
    preset = best_preset(changed)
    rest = " ".join(f"{k}={v}" for k, v in model_settings(config).items()
                    if (shared or {}).get(k, object()) != v)
    protocol = " ".join(f"{k}={changed[k]}" for k in PROTOCOL_SETTINGS if k in changed)
    both = " ".join(part for part in (rest, protocol) if part)
    return (f"{preset} ({both})" if both else preset), (f"{preset} ({rest})" if rest else preset), protocol


def run_folder_name(config: dict, stamp: str) -> str:
    """A run folder's name: its run_label, the target market, its seeds and its start time
    `stamp`, e.g. `acmr-in-seed0-20261202-082431`, `popularity-jp-seeds0-2-20261202-082431`
    (`seeds<first>-<last>` for several seeds)."""
    first, count = config.get("first_seed", 0), config["seeds"]
    seeds = f"seed{first}" if count == 1 else f"seeds{first}-{first + count - 1}"
    return f"{run_label(config)}-{config['target_market']}-{seeds}-{stamp}"


def start_time(name: str) -> tuple[str, str, int, str]:
    """A run folder's start time from its name (run_folder_name's stamp, `-N` for the N-th folder
    started in the same second), then the name: sorting by it puts the newest folder last. A name
    without a stamp sorts first."""
    found = START_TIME.search(name)
    return (found[1], found[2], int(found[3] or 0), name) if found else ("", "", 0, name)


def variant_name(config: dict) -> str:
    """The model and the protocol of a run in one name (variant_parts)."""
    return variant_parts(config)[0]


ALWAYS_NAMED = ("stages", "init_weights")  # where a model starts and what it trains: in its name even when shared


def shared_settings(configs: list[dict]) -> dict:
    """The model settings (model_settings) that every one of `configs` has, with the same value,
    except ALWAYS_NAMED."""
    if not configs:
        return {}
    first, *others = [model_settings(config) for config in configs]
    return {k: v for k, v in first.items()
            if k not in ALWAYS_NAMED and all(other.get(k, object()) == v for other in others)}


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Run folders (with results.json) among `paths` and below them, in the order they started
    (start_time)."""
    folders = set()
    for path in paths:
        if (path / "results.json").is_file():
            folders.add(path)
        folders.update(p.parent for p in path.glob("**/results.json"))
    return sorted(folders, key=lambda folder: (start_time(folder.name), str(folder)))


def breakdown_columns(breakdown: dict | None) -> dict[str, float]:
    """A stage's break-down (results.json) as `<group> <metric>` and `<group> users` columns;
    NaN where the run has none (older runs); a group without test users has 0 users and NaN
    metrics."""
    groups = breakdown or {}
    columns = {f"{group} {key}": groups[group][key] if groups.get(group) else np.nan
               for group in BREAKDOWN_GROUPS for key in ("HR@10", "NDCG@10", "users")}
    columns.update({f"{group} users": 0 for group in BREAKDOWN_GROUPS if group in groups and not groups[group]})
    return columns


def epoch_records(folder: Path) -> list[dict]:
    """The per-epoch records of a run folder's metrics.jsonl ([] without one)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [parse_json(line, f"{path}:{number}") for number, line in enumerate(read_text(path).splitlines(), 1)]


def kept_validation(run: dict, stage: str, by_epoch: dict[tuple, dict]) -> dict[str, float]:
    """Validation metrics of a run's stage at the epoch it kept: from results.json's `valid`
    where the run wrote it, else from the metrics.jsonl record (by_epoch: (seed, stage, epoch)
    -> valid metrics) of its `best_epoch`; NaN where neither has it."""
    valid = run[stage].get("valid") or by_epoch.get((run["seed"], stage, run[stage].get("best_epoch")), {})
    return {f"valid {k}": valid.get(k, np.nan) for k in METRICS}


@contextlib.contextmanager
def run_folder_shape(folder: Path) -> Iterator[None]:
    """Turn an error of a run folder's files that are valid JSON of another shape (a missing key, a
    list for a dict) into a RunFolderError that names the folder."""
    try:
        yield
    except RunFolderError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise RunFolderError(f"{folder}: config.json, results.json or metrics.jsonl is not a run folder's "
                             f"({type(error).__name__}: {error}); repair it, or move the folder out of the "
                             f"folders of the report") from None


def folder_rows(folder: Path, config: dict, shared: dict) -> tuple[list[dict], list[dict]]:
    """collect's rows of one run folder (its config.json `config`): one per (seed, stage) that
    results.json holds, and one per metrics.jsonl record."""
    variant, model, protocol = variant_parts(config, shared)
    diverged = (folder / DIVERGED).is_file()
    lacks = " ".join(k for k in dataclasses.asdict(Config()) if k not in config and k not in NOT_EXPERIMENT)
    stored = read_json(folder / "results.json")
    records = epoch_records(folder)
    by_epoch = {(r["seed"], r["stage"], r["epoch"]): r["valid"] for r in records}  # the last of repeats
    rows = []
    for run in stored["runs"]:
        for stage in (s for s in STAGES if s in run):  # a run may skip a stage (config.stages)
            rows.append({"variant": variant, "model": model, "protocol": protocol,
                         "market": config["target_market"], "seed": run["seed"], "stage": stage,
                         "data_markets": ",".join(sorted(config["data_markets"].split(","))),
                         "folder": folder.name, "complete": stored.get("complete", True),
                         "diverged": diverged, "config_lacks": lacks,
                         "epochs": run[stage]["epochs"], "best_epoch": run[stage].get("best_epoch"),
                         "test_candidates": run.get("candidates_sha256", {}).get("test"),
                         **{k: run[stage][k] for k in METRICS},
                         **kept_validation(run, stage, by_epoch),
                         **breakdown_columns(run[stage].get("breakdown"))})
    curves = [{"variant": variant, "market": config["target_market"], "folder": folder.name,
               "seed": r["seed"], "stage": r["stage"], "epoch": r["epoch"],
               f"valid_{SELECTION_METRIC}": r["valid"][SELECTION_METRIC]} for r in records]
    return rows, curves


def collect(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test metrics, validation at the kept epoch and break-downs, one row per (variant, market,
    seed, stage), and the per-epoch records. Both carry a `shared_settings` column: the model
    settings every folder shares, left out of the variant names. A run in several folders
    counts once, from the newest (start_time: a folder's name ends with its start time); its
    row's `also_in` names the others. `diverged`: the folder has a diverged.txt (its results are
    the seeds before); `config_lacks`: the settings that change results and that its config.json
    lacks, which count as config.py's defaults in the variant's name."""
    configs = {}
    for folder in folders:
        with run_folder_shape(folder):
            configs[folder] = upgrade_saved(read_json(folder / "config.json"))
    shared = shared_settings(list(configs.values()))
    results, curves = [], []
    for folder, config in configs.items():
        with run_folder_shape(folder):
            rows, records = folder_rows(folder, config, shared)
        results += rows
        curves += records
    results = pd.DataFrame(results)
    if len(results):  # a (variant, market, seed) run in several folders counts once: the newest
        key = ["variant", "market", "seed"]
        newest_first = results.groupby(key)["folder"].agg(
            lambda names: sorted(set(names), key=start_time, reverse=True))
        results = results.merge(newest_first.rename("folders").reset_index(), on=key, how="left")
        results = results[results["folder"] == results["folders"].str[0]].reset_index(drop=True)
        results = results.assign(also_in=results.pop("folders").str[1:].str.join(" "))
    curves = pd.DataFrame(curves)
    if len(curves):
        curves = curves.merge(results[["variant", "market", "seed", "folder"]].drop_duplicates())
    results["shared_settings"] = curves["shared_settings"] = " ".join(f"{k}={v}" for k, v in shared.items())
    return results, curves


def sort_rows(table: pd.DataFrame, keys: dict[str, list]) -> pd.DataFrame:
    """`table` ordered by its `variant` column, then by the given columns in the given orders of
    their values (a column's values not in its order last)."""
    rank = [table[column].map({v: i for i, v in enumerate(values)}).fillna(len(values))
            for column, values in keys.items()]
    return table.iloc[np.lexsort([*reversed(rank), table["variant"]])].reset_index(drop=True)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, stage, market, metric), markets in SPEC order plus `average`: our
    test mean, std (ddof 1) and n seeds, our mean validation at the kept epoch (`valid`), the
    authors' test and validation numbers (NaN for variants on other data than the seven
    Electronics markets: without_authors_numbers), the difference of the test means, the tolerance
    max(2 std, TOLERANCE_FLOOR) (the floor alone without a std: one seed, or the average),
    `outside_tolerance` where the difference exceeds it, and `complete` (False where a folder
    says its run is still going). The average row averages the markets present."""
    keys = ["variant", "stage", "market", "seed", "complete"]
    test = results.melt(id_vars=keys, value_vars=list(METRICS), var_name="metric", value_name="value")
    valid = results[[*keys, *(f"valid {m}" for m in METRICS)]].rename(
        columns=lambda c: c.removeprefix("valid ")).melt(
        id_vars=keys, value_vars=list(METRICS), var_name="metric", value_name="valid")
    long = test.merge(valid, on=[*keys, "metric"])
    table = long.groupby(["variant", "stage", "market", "metric"]).agg(
        mean=("value", "mean"), std=("value", "std"), n=("value", "count"),
        valid=("valid", lambda v: v.mean(skipna=False)), complete=("complete", "all")).reset_index()
    authors = authors_numbers()
    test_numbers = authors[list(METRICS)].stack().rename("authors")
    valid_numbers = authors[[f"valid {m}" for m in METRICS]].rename(
        columns=lambda c: c.removeprefix("valid ")).stack().rename("authors_valid")
    authors_long = pd.concat([test_numbers, valid_numbers], axis=1).rename_axis(
        ["market", "stage", "metric"]).reset_index()
    table = table.merge(authors_long, on=["market", "stage", "metric"], how="left")
    other_data = table["variant"].isin(results.loc[results["data_markets"] != ELECTRONICS, "variant"])
    table.loc[other_data, ["authors", "authors_valid"]] = np.nan
    exact_mean = lambda v: v.mean(skipna=False)  # noqa: E731  a market without it: no average
    average = table.groupby(["variant", "stage", "metric"]).agg(
        mean=("mean", "mean"), n=("n", "min"), valid=("valid", exact_mean), complete=("complete", "all"),
        authors=("authors", exact_mean), authors_valid=("authors_valid", exact_mean)).reset_index()
    average["market"], average["std"] = "average", np.nan
    table = pd.concat([table, average], ignore_index=True)
    table["difference"] = table["mean"] - table["authors"]
    table["tolerance"] = np.maximum(2 * table["std"].fillna(0), TOLERANCE_FLOOR)
    table["outside_tolerance"] = table["difference"].abs() > table["tolerance"]
    return sort_rows(table, {"stage": list(STAGES), "market": market_order(table["market"]),
                             "metric": list(METRICS)})


def without_authors_numbers(results: pd.DataFrame) -> str:
    """A line saying which runs have no authors' numbers beside them (runs on other markets
    than the seven XMarket Electronics ones); "" where every run has them."""
    other = sorted(set(results.loc[results["data_markets"] != ELECTRONICS, "data_markets"]))
    if not other:
        return ""
    return (f"No authors' numbers for the runs on data_markets={' and '.join(other)}: the authors logged runs on "
            f"the seven XMarket Electronics markets ({ELECTRONICS}) only.")


def last_stage(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last stage (fine-tuning where it has one)."""
    order = results["stage"].map({stage: i for i, stage in enumerate(STAGES)})
    runs = [results["variant"], results["market"], results["seed"]]
    return results[order == order.groupby(runs).transform("max")]


def protocol_order(protocol: str) -> tuple:
    """The authors' protocol first, then one switch, then several, each in config's order."""
    return protocol.count("="), [PROTOCOL_SETTINGS.index(part.split("=")[0]) for part in protocol.split()]


def comparable_variants(results: pd.DataFrame) -> list[str]:
    """The variants that the authors' logged runs compare with: ACMR itself (no other preset),
    trained from a fresh start (no init_weights), under the authors' protocol, on the seven
    Electronics markets."""
    picked = results[(results["protocol"] == "") & results["model"].str.match(r"acmr( \(|$)")
                     & ~results["model"].str.contains("init_weights=", regex=False)
                     & (results["data_markets"] == ELECTRONICS)]
    return list(dict.fromkeys(picked["variant"]))


# ---------------------------------------------------------------- rescored runs (tools/trained.py)

def protocol_label(settings: dict[str, object]) -> str:
    """The evaluation protocol of a run's or a rescoring's settings, in words."""
    if settings["eval_mode"] == "full":
        return "full ranking of the target's items"
    pool = "all markets" if settings["eval_negative_pool"] == "global" else "the target market"
    return f"1 + {settings['num_eval_negatives']} sampled, negatives from {pool}"


def seed_result(runs: list[dict], seed: int, stage: str, path: Path) -> dict:
    """The results of `seed`'s `stage` among a results.json's or a rescoring's runs."""
    found = [run for run in runs if run["seed"] == seed and stage in run]
    if not found:
        raise ConfigError(f"{path}: no results of seed {seed} {stage}")
    return found[0]


def protocol_table(run_dirs: Sequence[Path], seed: int = 0, stage: str = "finetune") -> list[str]:
    """Markdown lines: per run folder (market), the test metrics of seed `seed`'s `stage` under the
    run's own protocol (results.json) and under each of PROTOCOL_RESCORINGS (rescored/<name>.json).
    A file that is missing or damaged is a RunFolderError naming it."""
    lines = ["| market | protocol | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for run_dir in sorted(map(Path, run_dirs), key=lambda folder: read_json(folder / "results.json")["target_market"]):
        results = read_json(run_dir / "results.json")
        own = read_json(run_dir / "config.json")
        rows = [(f"{protocol_label(own)} (the run's)",
                 seed_result(results["runs"], seed, stage, run_dir / "results.json"))]
        for name in PROTOCOL_RESCORINGS:
            path = run_dir / RESCORED / f"{name}.json"
            rescored = read_json(path)
            rows.append((protocol_label(rescored["settings"]), seed_result(rescored["runs"], seed, stage, path)))
        for label, run in rows:
            lines.append(f"| {results['target_market']} | {label} | "
                         + " | ".join(f"{run[stage][m]:.4f}" for m in METRICS) + " |")
    return lines
