"""Reproduction report: our results beside the authors' logged runs, as tables and figures.

    python evaluate.py report --log_dir=log                   # every run folder under log/
    python evaluate.py report log/in-2026... log/jp-2026...   # these run folders
    python evaluate.py report results/protocol $(cat results/protocol/default_protocol_runs.txt) --out=results/protocol
    python evaluate.py report --docs                          # the generated tables of the documents

Writes report.md, report.csv (the summary), report_runs.csv (one row per run and stage),
report_breakdown.csv (the break-downs of PROTOCOL.md) and PNG figures (default: into the
log_dir, or next to the run folders). Runs of the same market and seed in several folders count
once (the newest folder). Folders whose settings differ in more than where and how fast they
ran form separate variants, named by the settings that differ from config.py's defaults;
settings that every folder of a report shares are stated once instead.

`--docs` rewrites each block `<!-- report:NAME -->` ... `<!-- /report:NAME -->` of the
documents (DOCUMENTS) with what the committed folders under results/ give (DOC_BLOCKS);
tests/test_docs.py fails when a block differs. Importing this module loads neither torch nor
matplotlib: train_model.py calls comparison_text at the end of every run.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from config import (PRESETS, PROTOCOL_SETTINGS, RUN_ONLY_SETTINGS, SELECTION_SETTINGS, STAGES, Config,
                    upgrade_saved)

REPO = Path(__file__).resolve().parent
RESULTS = REPO / "results"
AUTHORS_RUNS = REPO / "data" / "authors_logged_runs.json"
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")  # evaluate.METRICS (tests/test_report.py checks)
HEADLINE_METRICS = ("HR@10", "NDCG@10")
SPEC_MARKETS = ("de", "jp", "in", "fr", "ca", "mx", "uk")  # SPEC.md section 6's order
TOLERANCE_FLOOR = 0.03  # the flag: our mean further than max(2 std, this) from the authors' number
STAGE_TITLES = {"pretrain": "after pre-training", "finetune": "after fine-tuning"}
BREAKDOWN_GROUPS = {"repeat_purchase": "repeat purchase", "new_purchase": "new purchase",
                    "item_seen_in_target_training": "item seen in target training",
                    "item_unseen_in_target_training": "item unseen in target training (cold)"}
NOT_EXPERIMENT = {*RUN_ONLY_SETTINGS, *SELECTION_SETTINGS}  # where, how fast, which market and seeds
INCOMPLETE = "†"


def authors_numbers() -> pd.DataFrame:
    """The authors' logged runs (SPEC section 6): index (market, stage), columns METRICS (test)
    and `valid <metric>` (validation at the epoch each stage kept)."""
    markets = json.loads(AUTHORS_RUNS.read_text())["markets"]
    rows = {(m, s): {**{k: markets[m][s][k] for k in METRICS},
                     **{f"valid {k}": markets[m][s]["valid_at_best_epoch"][k] for k in METRICS}}
            for m in markets for s in STAGES}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["market", "stage"])


def result_settings(config: dict) -> dict:
    """The settings of a run's config.json that differ from config.py's defaults and change
    results, in config.py's order."""
    defaults = dataclasses.asdict(Config())
    return {k: config[k] for k in defaults
            if k not in NOT_EXPERIMENT and k in config and config[k] != defaults[k]}


def best_preset(changed: dict) -> str:
    """The preset (config.PRESETS) that the changed settings match with the most settings."""
    matching = [name for name, preset in PRESETS.items() if preset.items() <= changed.items()]
    return max(matching, key=lambda name: len(PRESETS[name]))  # "acmr" ({}) always matches


def model_settings(config: dict) -> dict:
    """The changed settings (result_settings) that name neither the preset nor the protocol."""
    changed = result_settings(config)
    preset = PRESETS[best_preset(changed)]
    return {k: v for k, v in changed.items() if k not in preset and k not in PROTOCOL_SETTINGS}


def variant_parts(config: dict, shared: dict | None = None) -> tuple[str, str, str]:
    """(variant, model, protocol) of a run's settings. The model is the preset (config.PRESETS)
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


def variant_name(config: dict) -> str:
    """The model and the protocol of a run in one name (variant_parts)."""
    return variant_parts(config)[0]


def shared_settings(configs: list[dict]) -> dict:
    """The model settings (model_settings) that every one of `configs` has, with the same value."""
    if not configs:
        return {}
    first, *others = [model_settings(config) for config in configs]
    return {k: v for k, v in first.items() if all(other.get(k, object()) == v for other in others)}


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Run folders (with results.json) among `paths` and below them."""
    folders = set()
    for path in paths:
        if (path / "results.json").is_file():
            folders.add(path)
        folders.update(p.parent for p in path.glob("**/results.json"))
    return sorted(folders)


def breakdown_columns(breakdown: dict | None) -> dict[str, float]:
    """A stage's break-down (results.json) as `<group> <metric>` and `<group> users` columns;
    NaN where the run has none (older runs) or the group has no test user."""
    groups = breakdown or {}
    return {f"{group} {key}": groups[group][key] if groups.get(group) else np.nan
            for group in BREAKDOWN_GROUPS for key in ("HR@10", "NDCG@10", "users")}


def epoch_records(folder: Path) -> list[dict]:
    """The per-epoch records of a run folder's metrics.jsonl ([] without one)."""
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def kept_validation(run: dict, stage: str, by_epoch: dict[tuple, dict]) -> dict[str, float]:
    """Validation metrics of a run's stage at the epoch it kept: from results.json's `valid`
    where the run wrote it, else from the metrics.jsonl record (by_epoch: (seed, stage, epoch)
    -> valid metrics) of its `best_epoch`; NaN where neither has it."""
    valid = run[stage].get("valid") or by_epoch.get((run["seed"], stage, run[stage].get("best_epoch")), {})
    return {f"valid {k}": valid.get(k, np.nan) for k in METRICS}


def collect(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test metrics, validation at the kept epoch and break-downs, one row per (variant, market,
    seed, stage), and the per-epoch records. Both carry a `shared_settings` column: the model
    settings every folder shares, left out of the variant names."""
    configs = {folder: upgrade_saved(json.loads((folder / "config.json").read_text())) for folder in folders}
    shared = shared_settings(list(configs.values()))
    shared_text = " ".join(f"{k}={v}" for k, v in shared.items())
    results, curves = [], []
    for folder, config in configs.items():
        variant, model, protocol = variant_parts(config, shared)
        stored = json.loads((folder / "results.json").read_text())
        records = epoch_records(folder)
        by_epoch = {(r["seed"], r["stage"], r["epoch"]): r["valid"] for r in records}  # the last of repeats
        for run in stored["runs"]:
            for stage in (s for s in STAGES if s in run):  # a run may skip a stage (config.stages)
                results.append({"variant": variant, "model": model, "protocol": protocol,
                                "market": config["target_market"], "seed": run["seed"], "stage": stage,
                                "folder": folder.name, "complete": stored.get("complete", True),
                                "epochs": run[stage]["epochs"], "best_epoch": run[stage].get("best_epoch"),
                                "test_candidates": run.get("candidates_sha256", {}).get("test"),
                                **{k: run[stage][k] for k in METRICS},
                                **kept_validation(run, stage, by_epoch),
                                **breakdown_columns(run[stage].get("breakdown"))})
        curves += [{"variant": variant, "market": config["target_market"], "folder": folder.name,
                    "seed": r["seed"], "stage": r["stage"], "epoch": r["epoch"],
                    "valid_NDCG@5": r["valid"]["NDCG@5"]} for r in records]
    results = pd.DataFrame(results)
    if len(results):  # a (variant, market, seed) run in several folders counts once: the newest
        newest = results.groupby(["variant", "market", "seed"])["folder"].transform("max")
        results = results[results["folder"] == newest].reset_index(drop=True)
    curves = pd.DataFrame(curves)
    if len(curves):
        curves = curves.merge(results[["variant", "market", "seed", "folder"]].drop_duplicates())
    results["shared_settings"] = curves["shared_settings"] = shared_text
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
    authors' test and validation numbers, the difference of the test means, the tolerance
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
    exact_mean = lambda v: v.mean(skipna=False)  # noqa: E731  a market without it: no average
    average = table.groupby(["variant", "stage", "metric"]).agg(
        mean=("mean", "mean"), n=("n", "min"), valid=("valid", exact_mean), complete=("complete", "all"),
        authors=("authors", exact_mean), authors_valid=("authors_valid", exact_mean)).reset_index()
    average["market"], average["std"] = "average", np.nan
    table = pd.concat([table, average], ignore_index=True)
    table["difference"] = table["mean"] - table["authors"]
    table["tolerance"] = np.maximum(2 * table["std"].fillna(0), TOLERANCE_FLOOR)
    table["outside_tolerance"] = table["difference"].abs() > table["tolerance"]
    return sort_rows(table, {"stage": list(STAGES), "market": [*SPEC_MARKETS, "average"],
                             "metric": list(METRICS)})


def mean_std(mean: float, std: float) -> str:
    """`mean ± std`, or the mean alone where there is no std (one seed, or the average row)."""
    return f"{mean:.4f}" + (f" ± {std:.4f}" if pd.notna(std) else "")


def number(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.4f}"


def paper_table(table: pd.DataFrame, variant: str, metrics: tuple[str, ...] = METRICS) -> list[str]:
    """Markdown lines: the variant's table beside the authors', a row per (market, stage), for
    each metric a test cell `our mean ± std [authors']` (**!** outside the tolerance) and a
    validation cell `our mean [authors']` at the epoch each stage kept; † on the seeds of a
    market whose runs are not all complete."""
    rows = table[table["variant"] == variant]
    lines = ["| market | stage | seeds | " + " | ".join(f"{m} test | {m} valid" for m in metrics) + " |",
             "|---|---|---|" + "---|---|" * len(metrics)]
    order = [m for m in (*SPEC_MARKETS, "average") if m in set(rows["market"])]
    for market in order:
        for stage in (s for s in STAGES if ((rows["market"] == market) & (rows["stage"] == s)).any()):
            by_metric = rows[(rows["market"] == market) & (rows["stage"] == stage)].set_index("metric")
            cells = []
            for metric in metrics:
                r = by_metric.loc[metric]
                flag = " **!**" if r["outside_tolerance"] else ""
                cells += [f"{mean_std(r['mean'], r['std'])} [{number(r['authors'])}]{flag}",
                          f"{number(r['valid'])} [{number(r['authors_valid'])}]"]
            first = by_metric.iloc[0]
            seeds = "" if market == "average" else f"{first['n']}{'' if first['complete'] else INCOMPLETE}"
            lines.append(f"| {market} | {STAGE_TITLES[stage]} | {seeds} | " + " | ".join(cells) + " |")
    if not rows["complete"].all():
        lines += ["", f"{INCOMPLETE} Some of these runs are still going (their results.json says "
                      "`\"complete\": false`): the seeds so far."]
    return lines


def models_table(table: pd.DataFrame) -> list[str]:
    """Markdown lines: one row per (variant, stage) with test HR@10 and NDCG@10 per market. A
    two-stage model gets a row per stage: its pre-training row is the model without fine-tuning."""
    picked = table[table["metric"].isin(HEADLINE_METRICS) & (table["market"] != "average")]
    markets = [m for m in SPEC_MARKETS if m in set(picked["market"])]  # averages of unequal market sets mislead
    lines = ["| model | stage | " + " | ".join(f"{m} HR@10 | {m} NDCG@10" for m in markets) + " |",
             "|---|---|" + "---|---|" * len(markets)]
    for (variant, stage), rows in picked.groupby(["variant", "stage"], sort=False):
        cells = []
        for market in markets:
            for metric in HEADLINE_METRICS:
                match = rows[(rows["market"] == market) & (rows["metric"] == metric)]
                r = match.iloc[0] if len(match) else None
                cells.append("" if r is None else f"{mean_std(r['mean'], r['std'])} "
                             f"({r['n']}{'' if r['complete'] else INCOMPLETE})")
        lines.append(f"| {variant} | {STAGE_TITLES[stage]} | " + " | ".join(cells) + " |")
    return lines


def per_seed_table(results: pd.DataFrame, metric: str) -> list[str]:
    """Markdown lines: one row per variant, one column per market, each cell the test `metric`
    after the last stage of each seed's run, in seed order (`seed 0 / seed 1 / ...`)."""
    last = last_stage(results)
    markets = [m for m in SPEC_MARKETS if m in set(last["market"])]
    lines = ["| model | " + " | ".join(f"{m} {metric}, per seed" for m in markets) + " |",
             "|---|" + "---|" * len(markets)]
    for variant, rows in last.groupby("variant", sort=False):
        cells = [" / ".join(f"{v:.4f}" for v in rows[rows["market"] == m].sort_values("seed")[metric])
                 for m in markets]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def tuned_table(results: pd.DataFrame) -> list[str]:
    """Markdown lines: test HR@10 / NDCG@10 (mean ± std over seeds, after each run's last stage) of
    each variant, the tuned presets of one model (`gmf-tuned-in`, `gmf-tuned-jp`, ...) on one row,
    each market with its own; [] where there is no tuned run."""
    last = last_stage(results)
    tuned = last["variant"].str.contains("-tuned-")
    if not tuned.any():
        return []
    family = last["variant"].str.split(" ").str[0].str.replace(r"-tuned-[\w+]+$", "", regex=True)
    last = last.assign(row=np.where(tuned, family + ", tuned (" + family + "-tuned-<market>)", last["variant"]))
    markets = [m for m in SPEC_MARKETS if m in set(last["market"])]
    lines = ["| model | " + " | ".join(f"{m} {metric}" for m in markets for metric in HEADLINE_METRICS) + " |",
             "|---|" + "---|" * len(HEADLINE_METRICS) * len(markets)]
    for row, rows in last.groupby("row", sort=True):
        cells = []
        for market in markets:
            for metric in HEADLINE_METRICS:
                values = rows.loc[rows["market"] == market, metric]
                cells.append(f"{mean_std(values.mean(), values.std())} ({len(values)})" if len(values) else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def tuned_section(results: pd.DataFrame) -> list[str]:
    """Markdown lines for report.md: the tuned table and the search behind it (tune.py)."""
    table = tuned_table(results) if len(results) else []
    if not table:
        return []
    import tune  # its module level loads neither torch nor ray
    return ["## Tuned baselines (tune.py)", "",
            "Test HR@10 / NDCG@10 after each model's last stage, mean ± sample std (seeds); the untuned "
            "rows are config.py's presets (ACMR's optimiser and early stopping), the tuned rows each "
            "market's preset chosen on validation NDCG@5 alone. A random ranking of 100 candidates scores "
            "HR@10 0.10, NDCG@10 about 0.045.", "", *table, "", *tune.search_lines(), ""]


def last_stage(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last stage (fine-tuning where it has one)."""
    order = results["stage"].map({stage: i for i, stage in enumerate(STAGES)})
    runs = [results["variant"], results["market"], results["seed"]]
    return results[order == order.groupby(runs).transform("max")]


def protocol_order(protocol: str) -> tuple:
    """The authors' protocol first, then one switch, then several, each in config's order."""
    return protocol.count("="), [PROTOCOL_SETTINGS.index(part.split("=")[0]) for part in protocol.split()]


def study_table(results: pd.DataFrame, group: str | None = None) -> list[str]:
    """Markdown lines of PROTOCOL.md's study table: a row per protocol, a column per (model,
    market), each cell the test HR@10 / NDCG@10 after the model's last stage, mean ± std
    (seeds); of the test users of a break-down group (BREAKDOWN_GROUPS) when given, with their
    number per seed. [] where the runs have a single protocol."""
    if results["protocol"].nunique() < 2:
        return []
    prefix = f"{group} " if group else ""
    last = last_stage(results).dropna(subset=[f"{prefix}HR@10"])
    columns = [(model, market) for model in sorted(set(last["model"])) for market in SPEC_MARKETS
               if ((last["model"] == model) & (last["market"] == market)).any()]
    grouped = last.groupby(["protocol", "model", "market"])
    lines = ["| protocol | " + " | ".join(f"{model}, `{market}`" for model, market in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for protocol in sorted(set(last["protocol"]), key=protocol_order):
        cells = []
        for model, market in columns:
            if (protocol, model, market) not in grouped.groups:
                cells.append("")
                continue
            runs = grouped.get_group((protocol, model, market))
            hr, ndcg = runs[f"{prefix}HR@10"], runs[f"{prefix}NDCG@10"]
            users = f"; {runs[f'{prefix}users'].mean():.0f} users" if group else ""
            incomplete = "" if runs["complete"].all() else INCOMPLETE
            cells.append(f"{mean_std(hr.mean(), hr.std())} / {mean_std(ndcg.mean(), ndcg.std())} "
                         f"({len(runs)}{incomplete}{users})")
        lines.append(f"| {f'`{protocol}`' if protocol else 'authors (default)'} | " + " | ".join(cells) + " |")
    return lines


def breakdown_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, stage, market, break-down group): mean test HR@10 and NDCG@10 over
    the seeds whose results.json has the break-down, their number, and the group's mean number
    of test users per seed. Ordered as the summary table."""
    parts = []
    for group in BREAKDOWN_GROUPS:
        part = results[["variant", "stage", "market", "seed"]].assign(group=group)
        for key in ("HR@10", "NDCG@10", "users"):
            part[key] = results[f"{group} {key}"]
        parts.append(part)
    long = pd.concat(parts).dropna(subset=["users"])
    table = long.groupby(["variant", "stage", "market", "group"]).agg(
        **{"HR@10": ("HR@10", "mean"), "NDCG@10": ("NDCG@10", "mean"), "seeds": ("seed", "count"),
           "users": ("users", "mean")}).reset_index()
    return sort_rows(table, {"stage": list(STAGES), "market": list(SPEC_MARKETS), "group": list(BREAKDOWN_GROUPS)})


def breakdown_lines(table: pd.DataFrame) -> list[str]:
    """Markdown lines of the break-down table: a row per (variant, stage, market), a column per group."""
    lines = ["| model | stage | market | " + " | ".join(BREAKDOWN_GROUPS.values()) + " | seeds |",
             "|---|---|---|" + "---|" * (len(BREAKDOWN_GROUPS) + 1)]
    for (variant, stage, market), rows in table.groupby(["variant", "stage", "market"], sort=False):
        by_group = rows.set_index("group")
        cells = []
        for group in BREAKDOWN_GROUPS:
            row = by_group.loc[group] if group in by_group.index else None
            if row is None or pd.isna(row["HR@10"]):
                cells.append("-")
            else:
                cells.append(f"{row['HR@10']:.4f} / {row['NDCG@10']:.4f} ({row['users']:.0f})")
        lines.append(f"| {variant} | {STAGE_TITLES[stage]} | {market} | " + " | ".join(cells)
                     + f" | {rows['seeds'].max()} |")
    return lines


def candidates_line(results: pd.DataFrame) -> str:
    """Whether the variants of each (market, seed) were tested on the same candidates, by the
    SHA-256 each run records in results.json (runs with full ranking record none)."""
    recorded = results.dropna(subset=["test_candidates"]).drop_duplicates(["variant", "market", "seed"])
    if recorded.empty:
        return "Test candidates: no run records their SHA-256."
    sets = recorded.groupby(["market", "seed"])["test_candidates"].nunique()
    differing = [f"{market} seed {seed} ({count} sets)" for (market, seed), count in sets.items() if count > 1]
    return (f"Test candidates (SHA-256 in results.json): {len(recorded)} runs of "
            f"{recorded['variant'].nunique()} variant(s) over {len(sets)} (market, seed) pairs; "
            + ("every pair's runs saw the same candidates." if not differing else
               "different candidate sets (expected where protocol settings differ) for "
               + ", ".join(differing) + "."))


def shared_line(results: pd.DataFrame) -> str:
    shared = results["shared_settings"].iloc[0]
    return (f"Every run here has `{shared}` (besides config.py's defaults); the names below leave it out."
            if shared else "")


def markdown(table: pd.DataFrame, results: pd.DataFrame, breakdowns: pd.DataFrame, command: str,
             figures: list[Path]) -> str:
    lines = ["# ACMR reproduction report", "",
             f"Built with `{command}` from {results['folder'].nunique()} run folder(s). "
             "Each cell: ours [the authors' logged run, SPEC.md section 6]. Test: our mean ± sample "
             "std over the seeds; validation: our mean over the seeds at the epoch each stage kept. "
             f"**!** where our test mean lies further than max(2 std, {TOLERANCE_FLOOR}) from the "
             "authors' number (the floor alone for one seed and for the average row, which averages "
             "the markets present).", ""]
    lines += [shared_line(results), ""] if shared_line(results) else []
    for variant in table["variant"].unique():
        lines += [f"## {variant}", "", *paper_table(table, variant), ""]
    if table["variant"].nunique() > 1:
        lines += ["## All models: test HR@10 / NDCG@10 after each stage they have", "",
                  "Mean ± sample std (seeds).", "", *models_table(table), ""]
    study = study_table(results)
    if study:
        lines += ["## Protocol study: test HR@10 / NDCG@10 after each model's last stage (PROTOCOL.md)", "",
                  "Mean ± sample std (seeds); an empty cell: not run.", "", *study, "",
                  "### The same, on the test users whose item the target's training data never had (cold)", "",
                  *study_table(results, "item_unseen_in_target_training"), "",
                  "### The same, on the test users who bought their test item in training too (repeat)", "",
                  *study_table(results, "repeat_purchase"), ""]
    if len(breakdowns):
        lines += ["## Break-downs: test HR@10 / NDCG@10 by group of test users (PROTOCOL.md)", "",
                  "Mean over the seeds whose results.json has break-downs (last column); in brackets "
                  "the group's test users per seed; `-` where a group has none.", "",
                  *breakdown_lines(breakdowns), ""]
    missing = [m for m in SPEC_MARKETS if m not in set(results["market"])]
    lines += ["Markets without runs: " + (", ".join(missing) if missing else "none") + ".", ""]
    lines += [candidates_line(results), ""]
    seeds = results.groupby(["variant", "market"])["seed"].apply(lambda s: sorted(set(s)))
    lines += ["Seeds: " + "; ".join(
        f"{variant}: " + ", ".join(f"{m} {list(s)}" for (_, m), s in by_market.items())
        for variant, by_market in seeds.groupby(level="variant", sort=False)) + ".", ""]
    unfinished = sorted(set(results.loc[~results["complete"], "folder"]))
    if unfinished:
        lines += [f"{INCOMPLETE} Still going: " + ", ".join(unfinished) + ".", ""]
    lines += ["Figures: " + ", ".join(f"`{path.name}`" for path in figures) + ".", ""] if figures else []
    return "\n".join(lines)


def comparison_text(folders: list[Path]) -> str:
    """A plain-text version of the report's tables, for the end of a training log."""
    results, _ = collect(folders)
    table = summary_table(results)
    lines = [f"test metrics: our mean +- std over seeds [authors' logged run] (! = further than "
             f"max(2 std, {TOLERANCE_FLOOR}) from the authors'); valid: at the kept epoch [authors']"]
    lines += [shared_line(results)] if shared_line(results) else []
    for (variant, stage), rows in table.groupby(["variant", "stage"], sort=False):
        lines.append(f"{STAGE_TITLES[stage]} (settings: {variant})")
        lines.append(f"{'market':8s}" + "".join(f"{m:>28s}" for m in METRICS))
        for market, row in rows.groupby("market", sort=False):
            test, valid = [], []
            for _, r in row.iterrows():
                std = f"+-{r['std']:.4f}" if pd.notna(r["std"]) else ""
                test.append(f"{r['mean']:.4f}{std} [{r['authors']:.4f}]{'!' if r['outside_tolerance'] else ' '}")
                valid.append(f"{number(r['valid'])} [{number(r['authors_valid'])}] ")
            lines.append(f"{market:8s}" + "".join(f"{c:>28s}" for c in test))
            lines.append(f"{'  valid':8s}" + "".join(f"{c:>28s}" for c in valid))
    return "\n".join(lines)


# ---- figures (matplotlib is imported here, not with the module) ----

def slug(text: str) -> str:
    """A file-name part for a variant: `acmr (lr=0.01)` -> `acmr_lr=0.01`."""
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", text).strip("_")


def panel_grid(count: int, columns: int = 4, size: tuple[float, float] = (3.2, 2.6)):
    """A figure with `count` panels in rows of `columns` (the unused ones hidden), constrained
    layout so that a legend can sit outside the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(columns, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size[0] * columns + 2.6, size[1] * rows + 0.8),
                                layout="constrained", squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def legend_entries(axes: list) -> dict:
    """label -> handle over all panels, each label once."""
    entries = {}
    for axis in axes:
        handles, labels = axis.get_legend_handles_labels()
        entries.update(zip(labels, handles))
    return entries


def save_figure(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def comparable_variants(results: pd.DataFrame) -> list[str]:
    """The variants that the authors' logged runs compare with: ACMR itself (no other preset)
    under the authors' protocol."""
    picked = results[(results["protocol"] == "") & results["model"].str.match(r"acmr( \(|$)")]
    return list(dict.fromkeys(picked["variant"]))


def plot_authors(table: pd.DataFrame, variant: str, out: Path) -> Path:
    """One panel per market: our test metrics after each stage (mean, ±1 std) beside the
    authors' logged run."""
    rows = table[(table["variant"] == variant) & (table["market"] != "average")]
    markets = [m for m in SPEC_MARKETS if m in set(rows["market"])]
    figure, axes = panel_grid(len(markets))
    x = np.arange(len(METRICS))
    colors = {"pretrain": "tab:blue", "finetune": "tab:orange"}
    for axis, market in zip(axes, markets):
        for offset, stage in zip((-0.12, 0.12), STAGES):
            picked = rows[(rows["market"] == market) & (rows["stage"] == stage)].set_index("metric")
            if picked.empty:
                continue
            picked = picked.loc[list(METRICS)]
            axis.errorbar(x + offset, picked["mean"], yerr=picked["std"].fillna(0), fmt="o", capsize=3,
                          color=colors[stage], label=f"ours, {STAGE_TITLES[stage]} (mean ± std)")
            axis.plot(x + offset, picked["authors"], "x", color=colors[stage], markersize=9, mew=2,
                      label=f"authors' logged run, {STAGE_TITLES[stage]}")
        n = rows.loc[rows["market"] == market, "n"].max()
        axis.set_title(f"{market} ({n} seed{'s' if n > 1 else ''})")
        axis.set_xticks(x, METRICS, fontsize=8)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    figure.suptitle(f"{variant}: test metrics per market, ours beside the authors' logged run")
    return save_figure(figure, out / f"authors_{slug(variant)}.png")


def plot_curves(curves: pd.DataFrame, results: pd.DataFrame, variant: str, out: Path) -> Path:
    """One panel per (market, stage): validation NDCG@5 per epoch, a line per seed, the kept
    epoch marked, and the authors' validation NDCG@5 at the epoch they kept."""
    import matplotlib.pyplot as plt
    authors = authors_numbers()
    runs = curves[curves["variant"] == variant]
    panels = [(m, s) for m in SPEC_MARKETS for s in STAGES
              if ((runs["market"] == m) & (runs["stage"] == s)).any()]
    figure, axes = panel_grid(len(panels), columns=2, size=(4.0, 2.4))
    colors = {seed: plt.get_cmap("tab20")(i % 20) for i, seed in enumerate(sorted(set(runs["seed"])))}
    kept = results[results["variant"] == variant].set_index(["market", "seed", "stage"])["best_epoch"]
    for axis, (market, stage) in zip(axes, panels):
        picked = runs[(runs["market"] == market) & (runs["stage"] == stage)]
        for seed, run in picked.groupby("seed"):
            axis.plot(run["epoch"], run["valid_NDCG@5"], color=colors[seed], lw=1, label=f"seed {seed}")
            best = run[run["epoch"] == kept.get((market, seed, stage))]
            axis.plot(best["epoch"], best["valid_NDCG@5"], "o", color=colors[seed], markersize=5)
        axis.axhline(authors.loc[(market, stage), "valid NDCG@5"], color="black", ls="--", lw=1,
                     label="authors' logged run, at its kept epoch")
        axis.set_title(f"{market}, {STAGE_TITLES[stage]}", fontsize=10)
        axis.set_xlabel("epoch")
        axis.set_ylabel("valid NDCG@5")
        axis.grid(alpha=0.3)
    labels = legend_entries(axes)
    order = sorted(labels, key=lambda label: (not label.startswith("seed"), label))
    figure.legend([labels[label] for label in order], order, loc="outside right upper", fontsize=8,
                  title="dot: the kept epoch", title_fontsize=8)
    figure.suptitle(f"{variant}: validation NDCG@5 per epoch")
    return save_figure(figure, out / f"curves_{slug(variant)}.png")


def plot_models(table: pd.DataFrame, metric: str, out: Path) -> Path:
    """One panel per market: every variant's test metric after each stage (mean, ±1 std), the
    authors' ACMR after fine-tuning as a dashed line."""
    rows = table[(table["metric"] == metric) & (table["market"] != "average")]
    markets = [m for m in SPEC_MARKETS if m in set(rows["market"])]
    labels = list(dict.fromkeys(f"{v}, {STAGE_TITLES[s]}" for v, s in zip(rows["variant"], rows["stage"])))
    figure, axes = panel_grid(len(markets), columns=min(4, len(markets)),
                              size=(2.6, 0.8 + 0.22 * len(labels)))
    y = {label: i for i, label in enumerate(labels)}
    for axis, market in zip(axes, markets):
        picked = rows[rows["market"] == market]
        position = [y[f"{v}, {STAGE_TITLES[s]}"] for v, s in zip(picked["variant"], picked["stage"])]
        axis.errorbar(picked["mean"], position, xerr=picked["std"].fillna(0), fmt="o", capsize=2,
                      color="tab:blue", label="ours (mean ± std over seeds)")
        authors = picked[picked["stage"] == "finetune"]["authors"].dropna()
        if len(authors):
            axis.axvline(authors.iloc[0], color="black", ls="--", lw=1,
                         label="authors' ACMR after fine-tuning (logged run)")
        axis.set_yticks(range(len(labels)), labels if axis is axes[0] else [""] * len(labels), fontsize=7)
        axis.set_ylim(len(labels) - 0.5, -0.5)
        axis.set_title(market)
        axis.set_xlabel(f"test {metric}")
        axis.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", fontsize=8, ncols=2)
    figure.suptitle(f"Test {metric} of every model, per market")
    return save_figure(figure, out / f"models_{metric.replace('@', '')}.png")


def protocol_label(protocol: str) -> str:
    """A short axis label: `authors (default)`, the one switch, or the first words of several."""
    if protocol.count("=") < 2:
        return protocol or "authors (default)"
    return " + ".join(part.split("_")[0].split("=")[0] for part in protocol.split())


def plot_study(results: pd.DataFrame, metric: str, out: Path) -> Path:
    """One panel per market: the test metric after each model's last stage under each protocol
    (mean, ±1 std), a series per model."""
    import matplotlib.pyplot as plt
    last = last_stage(results)
    protocols = sorted(set(last["protocol"]), key=protocol_order)
    models = sorted(set(last["model"]))
    markets = [m for m in SPEC_MARKETS if m in set(last["market"])]
    figure, axes = panel_grid(len(markets), columns=len(markets), size=(3.0, 0.9 + 0.35 * len(protocols)))
    colors = {model: plt.get_cmap("tab20")(i % 20) for i, model in enumerate(models)}
    names = [protocol_label(protocol) for protocol in protocols]
    for axis, market in zip(axes, markets):
        for model, runs in last[last["market"] == market].groupby("model"):
            stats = runs.groupby("protocol")[metric].agg(["mean", "std"])
            shift = 0.2 * (models.index(model) - (len(models) - 1) / 2)
            axis.errorbar(stats["mean"], [protocols.index(p) + shift for p in stats.index],
                          xerr=stats["std"].fillna(0), fmt="o", capsize=2, color=colors[model], label=model)
        axis.set_yticks(range(len(protocols)), names if axis is axes[0] else [""] * len(protocols), fontsize=7)
        axis.set_ylim(len(protocols) - 0.5, -0.5)
        axis.set_title(market)
        axis.set_xlabel(f"test {metric}")
        axis.grid(alpha=0.3)
    labels = legend_entries(axes)
    figure.legend(list(labels.values()), list(labels), loc="outside lower center", ncols=len(labels), fontsize=8)
    figure.suptitle(f"Test {metric} after each model's last stage, under each protocol (mean ± std over seeds)")
    return save_figure(figure, out / f"study_{metric.replace('@', '')}.png")


def plot_all(table: pd.DataFrame, results: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for variant in comparable_variants(results):
        paths.append(plot_authors(table, variant, out))
        if len(curves) and (curves["variant"] == variant).any():
            paths.append(plot_curves(curves, results, variant, out))
    if table["variant"].nunique() > 1:
        default = table[table["variant"].isin(results.loc[results["protocol"] == "", "variant"])]
        if default["variant"].nunique() > 1:
            paths += [plot_models(default, metric, out) for metric in HEADLINE_METRICS]
    if results["protocol"].nunique() > 1:
        paths += [plot_study(results, metric, out) for metric in HEADLINE_METRICS]
    return paths


def build_report(paths: list[Path], out: Path, command: str) -> Path:
    folders = find_run_folders(paths)
    if not folders:
        raise FileNotFoundError(f"no run folder with a results.json under {', '.join(map(str, paths))}")
    results, curves = collect(folders)
    table = summary_table(results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "report.csv", index=False)
    results.to_csv(out / "report_runs.csv", index=False)
    breakdowns = breakdown_table(results)
    breakdowns.to_csv(out / "report_breakdown.csv", index=False)
    figures = plot_all(table, results, curves, out)
    import paired  # the paired comparison over test users (paired.py)
    (out / "report.md").write_text("\n".join([markdown(table, results, breakdowns, command, figures),
                                              *tuned_section(results), *paired.comparison_section(folders, results)]))
    return out / "report.md"


# ---- the generated tables of the documents ----

DOCUMENTS = ("README.md", "RESULTS.md", "PROTOCOL.md", "SPEED.md", "SPEC.md", "RUNNING.md", "results/baselines/README.md")
BLOCK = re.compile(r"(?P<open><!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /report:(?P=name) -->)",
                   re.S)


@functools.cache
def committed(*paths: str) -> pd.DataFrame:
    """The collected runs (collect) of the committed folders `paths` (relative to the repository)."""
    return collect(find_run_folders([REPO / path for path in paths]))[0]


def protocol_sources() -> tuple[str, ...]:
    """The protocol study's folders: results/protocol and its default-protocol runs, which are
    kept once, in results/reproduction and results/bucketing."""
    listed = (RESULTS / "protocol" / "default_protocol_runs.txt").read_text().split()
    return ("results/protocol", *listed)


def acmr_paired_lines() -> list[str]:
    """The paired comparison of ACMR (results/paper) with each model of results/baselines."""
    import paired
    paths = ("results/baselines", "results/paper")
    results = committed(*paths)
    variants = dict(zip(results["folder"], results["variant"]))
    models = paired.models_of(find_run_folders([REPO / path for path in paths]), variants)
    return paired.comparison_lines(models, variant="acmr")


def gmf_diagnosis_runs() -> pd.DataFrame:
    """The preset `gmf` of results/baselines, then results/gmf_diagnosis's one-change variants."""
    preset = committed("results/baselines")
    return pd.concat([preset[preset["variant"] == "gmf"], committed("results/gmf_diagnosis")], ignore_index=True)


def paper_runs() -> tuple[pd.DataFrame, str]:
    """results/paper's runs (today's defaults) and a line saying how much of the table they are."""
    results = committed("results/paper")
    runs, planned = results[["market", "seed"]].drop_duplicates().shape[0], len(SPEC_MARKETS) * Config().seeds
    folders = results["folder"].nunique()
    done = "" if runs >= planned else "; the rest of plans/paper.txt is still to run"
    return results, (f"From the {folders} run folder{'s' * (folders != 1)} of `results/paper`: {runs} of the "
                     f"{planned} (market, seed) runs of the paper's table{done}.")


def earlier_runs() -> tuple[pd.DataFrame, str]:
    """The default ACMR runs of results/reproduction (the defaults of their time) and a line saying so."""
    results = committed("results/reproduction")
    return results, ("From the ACMR runs of `results/reproduction`, made before today's defaults, with "
                     f"`{results['shared_settings'].iloc[0]}`.")


def headline() -> tuple[pd.DataFrame, str]:
    """The runs of the headline table and a line saying where they come from: results/paper once
    it holds runs, until then the default ACMR runs of results/reproduction."""
    if find_run_folders([RESULTS / "paper"]):
        return paper_runs()
    results, source = earlier_runs()
    return results, source + " This table will come from `results/paper` once it holds runs of today's defaults."


def paper_table_block(runs: tuple[pd.DataFrame, str], metrics: tuple[str, ...]) -> list[str]:
    results, source = runs
    table = summary_table(results)
    variant = comparable_variants(results)[0]
    return [source, "", *paper_table(table, variant, metrics)]


def bench_table(folder: Path) -> list[str]:
    """Markdown lines: one row per bench.py JSON under `folder`: the machine and the command,
    and each phase's seconds (the padded nn.TransformerEncoder epoch extrapolated from its batches)."""
    lines = ["| file | machine, torch (threads), commit | command | data preparation | pre-training epoch "
             "(second epoch) | validation pass | padded nn.TransformerEncoder epoch | peak memory, host / GPU |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("**/*.json")):
        bench = json.loads(path.read_text())
        if "pretrain_epoch_s" not in bench:
            continue
        env, name = bench["environment"], path.relative_to(REPO)
        commit = env["git_commit"][:7] + ("-dirty" if env["git_commit"].endswith("-dirty") else "")
        command = re.sub(r" --json=\S+", "", bench["command"])  # the file is the first column
        second = f" ({bench['pretrain_second_epoch_s']:.2f} s)" if "pretrain_second_epoch_s" in bench else ""
        baseline = (f"{bench['baseline_epoch_s_extrapolated']:.0f} s"
                    if bench.get("baseline_epoch_s_extrapolated") else "-")
        gpu = f" / {bench['gpu_peak_allocated_mb'] / 1024:.2f} GB" if "gpu_peak_allocated_mb" in bench else ""
        lines.append(f"| [{name}]({name}) | {env['device_name']}, torch {env['torch']} ({env['torch_threads']}), "
                     f"{commit} | `{command}` | {bench['data_preparation_s']:.1f} s "
                     f"| {bench['pretrain_epoch_s']:.2f} s{second} | {bench['validation_pass_s']:.2f} s "
                     f"| {baseline} | {bench['host_peak_rss_mb'] / 1024:.2f} GB{gpu} |")
    return lines


def concurrency_table(folder: Path) -> list[str]:
    """Markdown lines: one row per folder of per-epoch records (copies of metrics.jsonl, one file
    per job) of jobs that ran at once: the jobs recorded and their mean seconds per pre-training
    epoch."""
    lines = ["| records | jobs recorded | pre-training epochs | mean seconds per pre-training epoch and job |",
             "|---|---|---|---|"]
    for records_folder in sorted({path.parent for path in folder.glob("**/*.jsonl") if path.name != "metrics.jsonl"}):
        files = sorted(records_folder.glob("*.jsonl"))
        epochs = [record["seconds"] for path in files for line in path.read_text().splitlines()
                  if (record := json.loads(line))["stage"] == "pretrain"]
        name = records_folder.relative_to(REPO)
        lines.append(f"| [{name}]({name}) | {len(files)} | {len(epochs)} | {np.mean(epochs):.1f} s |")
    return lines


def authors_table() -> list[str]:
    """Markdown lines of SPEC.md section 6: the authors' logged run of each market and stage, test
    and validation at the epoch it kept, and the epochs it ran."""
    markets = json.loads(AUTHORS_RUNS.read_text())["markets"]
    lines = ["| market | stage | epochs | " + " | ".join(f"test {m}" for m in METRICS) + " | "
             + " | ".join(f"valid {m}" for m in METRICS) + " |", "|---|---|---|" + "---|" * 2 * len(METRICS)]
    for market, stages in markets.items():
        for stage in STAGES:
            logged = stages[stage]
            lines.append(f"| {market} | {STAGE_TITLES[stage]} | {logged['epochs']} | "
                         + " | ".join(f"{logged[m]:.4f}" for m in METRICS) + " | "
                         + " | ".join(f"{logged['valid_at_best_epoch'][m]:.4f}" for m in METRICS) + " |")
    return lines


DOC_BLOCKS: dict[str, Callable[[], list[str]]] = {
    "authors": authors_table,
    "paper-table": lambda: paper_table_block(headline(), HEADLINE_METRICS),
    "paper-table-full": lambda: paper_table_block(headline(), METRICS),
    "earlier-paper-table-full": lambda: paper_table_block(earlier_runs(), METRICS),
    "models": lambda: models_table(summary_table(committed("results/reproduction"))),
    "models-breakdown": lambda: breakdown_lines(breakdown_table(last_stage(committed("results/reproduction")))),
    "study": lambda: study_table(committed(*protocol_sources())),
    "study-cold": lambda: study_table(committed(*protocol_sources()), "item_unseen_in_target_training"),
    "study-repeat": lambda: study_table(committed(*protocol_sources()), "repeat_purchase"),
    "bucketing": lambda: models_table(summary_table(committed("results/bucketing"))),
    "attention-check": lambda: models_table(summary_table(committed("results/bench/attention_check"))),
    "baselines-tuned": lambda: tuned_table(committed("results/baselines")),
    "gmf-diagnosis": lambda: per_seed_table(gmf_diagnosis_runs(), "HR@10"),
    "acmr-paired": acmr_paired_lines,
    "bench": lambda: bench_table(RESULTS / "bench"),
    "concurrency": lambda: concurrency_table(RESULTS / "bench"),
}


def render_document(text: str) -> str:
    """`text` with each generated block rewritten from the committed runs."""
    def block(match: re.Match) -> str:
        if match["name"] not in DOC_BLOCKS:
            raise KeyError(f"unknown block <!-- report:{match['name']} -->; known: {', '.join(DOC_BLOCKS)}")
        return match["open"] + "\n".join(DOC_BLOCKS[match["name"]]()) + "\n" + match["close"]
    return BLOCK.sub(block, text)


def update_documents() -> list[str]:
    """Rewrite the generated blocks of DOCUMENTS; the names of those that changed."""
    changed = []
    for name in DOCUMENTS:
        path = REPO / name
        text = path.read_text()
        rendered = render_document(text)
        if rendered != text:
            path.write_text(rendered)
            changed.append(name)
    return changed


USAGE = "usage: python evaluate.py report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR] | --docs"


def main(argv: list[str]) -> None:
    """`report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR]`, or `report --docs`."""
    if argv == ["--docs"]:
        changed = update_documents()
        print("rewrote the generated tables of " + (", ".join(changed) if changed else "no document: all up to date"))
        return
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    unknown = set(options) - {"log_dir", "out"}
    if unknown or any(arg.startswith("--") and "=" not in arg for arg in argv):
        sys.exit(USAGE)
    paths = [Path(arg) for arg in argv if not arg.startswith("--")]
    if "log_dir" in options or not paths:
        paths.append(Path(options.get("log_dir", Config().log_dir)))
    out = Path(options.get("out", paths[0] if "log_dir" not in options else options["log_dir"]))
    if "out" not in options and (out / "results.json").is_file():
        out = out.parent  # next to the run folders, not inside one
    try:
        path = build_report(paths, out, " ".join(["python evaluate.py report", *argv]))
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    print(path.read_text())
    print(f"wrote {path}, report.csv, report_runs.csv, report_breakdown.csv and the figures in {out}")
