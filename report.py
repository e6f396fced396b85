"""Reproduction report: our results beside the authors' logged runs, as tables and figures.

    python evaluate.py report --log_dir=log/results          # every run folder under it
    python evaluate.py report log/in-2026... log/jp-2026...  # these run folders
    python evaluate.py report --log_dir=log/results --out=DIR

Writes report.md, report.csv (the summary), report_breakdown.csv (the break-downs of
PROTOCOL.md) and PNG figures (default: into the log_dir, or next to the run folders). Runs of
the same market and seed in several folders count once (the newest folder). Folders whose
settings differ in more than where and how fast they ran form separate variants, named by the
settings that differ from config.py's defaults.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from config import MARKETS, PRESETS, PROTOCOL_SETTINGS, STAGES, Config, upgrade_saved  # noqa: E402
from evaluate import METRICS  # noqa: E402

AUTHORS_RUNS = Path(__file__).resolve().parent / "data" / "authors_logged_runs.json"
STAGE_TITLES = {"pretrain": "after pre-training", "finetune": "after fine-tuning"}
BREAKDOWN_GROUPS = {"repeat_purchase": "repeat purchase", "new_purchase": "new purchase",
                    "item_seen_in_target_training": "item seen in target training",
                    "item_unseen_in_target_training": "item unseen in target training (cold)"}
NOT_EXPERIMENT = {"target_market", "seeds", "first_seed", "device", "num_threads", "data_dir", "data_url",
                  "log_dir", "eval_batch_floats", "train_chunk_floats", "keep_freed_memory",
                  "cuda_graphs"}  # change no result (cuda_graphs: the dropout masks, as the device does)


def authors_numbers() -> pd.DataFrame:
    """The authors' logged runs (SPEC section 6): index (market, stage), columns METRICS."""
    markets = json.loads(AUTHORS_RUNS.read_text())["markets"]
    rows = {(m, s): {k: markets[m][s][k] for k in METRICS} for m in markets for s in STAGES}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["market", "stage"])


def variant_parts(config: dict) -> tuple[str, str, str]:
    """(variant, model, protocol) of a run's settings. The model is the preset (config.PRESETS)
    they match best, followed by the other settings that differ from config.py's defaults and
    change results, except the protocol's, e.g. `gmf (lr=0.01)`; the protocol is the protocol
    settings (config.PROTOCOL_SETTINGS) that differ, e.g. `split=temporal`, "" for the
    authors'; the variant names both, e.g. `gmf (lr=0.01 split=temporal)`."""
    defaults = dataclasses.asdict(Config())
    changed = {k: config[k] for k in defaults  # in config.py's order
               if k not in NOT_EXPERIMENT and k in config and config[k] != defaults[k]}
    matching = [name for name, settings in PRESETS.items() if settings.items() <= changed.items()]
    preset = max(matching, key=lambda name: len(PRESETS[name]))  # "acmr" ({}) always matches
    rest = " ".join(f"{k}={v}" for k, v in changed.items()
                    if k not in PRESETS[preset] and k not in PROTOCOL_SETTINGS)
    protocol = " ".join(f"{k}={changed[k]}" for k in PROTOCOL_SETTINGS if k in changed)
    both = " ".join(part for part in (rest, protocol) if part)
    return (f"{preset} ({both})" if both else preset), (f"{preset} ({rest})" if rest else preset), protocol


def variant_name(config: dict) -> str:
    """The model and the protocol of a run in one name (variant_parts)."""
    return variant_parts(config)[0]


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


def collect(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test metrics, one row per (variant, market, seed, stage), and the per-epoch records."""
    results, curves = [], []
    for folder in folders:
        config = upgrade_saved(json.loads((folder / "config.json").read_text()))
        variant, model, protocol = variant_parts(config)
        for run in json.loads((folder / "results.json").read_text())["runs"]:
            for stage in (s for s in STAGES if s in run):  # a run may skip a stage (config.stages)
                results.append({"variant": variant, "model": model, "protocol": protocol,
                                "market": config["target_market"],
                                "seed": run["seed"], "stage": stage, "folder": folder.name,
                                "epochs": run[stage]["epochs"],
                                "test_candidates": run.get("candidates_sha256", {}).get("test"),
                                **{k: run[stage][k] for k in METRICS},
                                **breakdown_columns(run[stage].get("breakdown"))})
        metrics_file = folder / "metrics.jsonl"
        if metrics_file.is_file():
            for line in metrics_file.read_text().splitlines():
                record = json.loads(line)
                curves.append({"variant": variant, "market": config["target_market"],
                               "folder": folder.name, "seed": record["seed"],
                               "stage": record["stage"], "epoch": record["epoch"],
                               "valid_NDCG@5": record["valid"]["NDCG@5"]})
    results = pd.DataFrame(results)
    if len(results):  # a (variant, market, seed) run in several folders counts once: the newest
        newest = results.groupby(["variant", "market", "seed"])["folder"].transform("max")
        results = results[results["folder"] == newest]
    curves = pd.DataFrame(curves)
    if len(curves):
        curves = curves.merge(results[["variant", "market", "seed", "folder"]].drop_duplicates())
    return results, curves


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, stage, market, metric), markets in SPEC order plus 'average':
    our mean, std (ddof 1), n seeds, the authors' number, the difference, and whether the
    authors' number lies outside mean +- 2 std."""
    long = results.melt(id_vars=["variant", "market", "seed", "stage"], value_vars=list(METRICS),
                        var_name="metric", value_name="value")
    table = long.groupby(["variant", "stage", "market", "metric"])["value"].agg(
        mean="mean", std="std", n="count").reset_index()
    authors = authors_numbers().stack().rename("authors").reset_index().rename(
        columns={"level_2": "metric"})
    table = table.merge(authors, on=["market", "stage", "metric"], how="left")
    # the average over markets: of our means, and of the authors' numbers of the same markets
    average = table.groupby(["variant", "stage", "metric"]).agg(
        mean=("mean", "mean"), authors=("authors", "mean"), n=("n", "min")).reset_index()
    average["market"], average["std"] = "average", np.nan
    table = pd.concat([table, average], ignore_index=True)
    table["difference"] = table["mean"] - table["authors"]
    table["outside_2std"] = (table["difference"].abs() > 2 * table["std"]) & table["std"].notna()
    keys = {"stage": STAGES, "market": [*authors_numbers().index.levels[0], "average"],
            "metric": METRICS}
    rank = {column: table[column].map({v: i for i, v in enumerate(values)})
            for column, values in keys.items()}
    order = np.lexsort([rank["metric"], rank["market"], rank["stage"], table["variant"]])
    return table.iloc[order].reset_index(drop=True)


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
    keys = {"stage": STAGES, "market": MARKETS, "group": list(BREAKDOWN_GROUPS)}
    rank = {column: table[column].map({v: i for i, v in enumerate(values)}) for column, values in keys.items()}
    order = np.lexsort([rank["group"], rank["market"], rank["stage"], table["variant"]])
    return table.iloc[order].reset_index(drop=True)


def breakdown_lines(table: pd.DataFrame) -> list[str]:
    """Markdown lines of the break-down table: a row per (variant, stage, market), a column per group."""
    if table.empty:
        return []
    lines = ["## Break-downs: test HR@10 / NDCG@10 by group of test users (PROTOCOL.md)", "",
             "Mean over the seeds whose results.json has break-downs (last column); in brackets the "
             "group's test users per seed; `-` where a group has none.", "",
             "| model | stage | market | " + " | ".join(BREAKDOWN_GROUPS.values()) + " | seeds |",
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
    return [*lines, ""]


def mean_std(row: pd.Series) -> str:
    """`mean ± std`, or the mean alone where there is no std (one seed, or the average row)."""
    return f"{row['mean']:.4f}" + (f" ± {row['std']:.4f}" if pd.notna(row["std"]) else "")


def cell(row: pd.Series) -> str:
    """`ours mean ± std (n) | authors | difference`, flagged where the authors lie outside 2 std."""
    n = f" ({row['n']})" if row["market"] != "average" else ""
    flag = " **!**" if row["outside_2std"] else ""
    return f"{mean_std(row)}{n} | {row['authors']:.4f} | {row['difference']:+.4f}{flag}"


def model_comparison(table: pd.DataFrame) -> list[str]:
    """Markdown lines: one row per (variant, stage) with test HR@10 and NDCG@10 per market. A
    two-stage model gets a row per stage: its pre-training row is the model without fine-tuning."""
    picked = table[table["metric"].isin(["HR@10", "NDCG@10"]) & (table["market"] != "average")]
    markets = [m for m in MARKETS if m in set(picked["market"])]  # averages of unequal market sets mislead
    lines = ["## All models, after each stage they have", "",
             "| model | stage | " + " | ".join(f"{m} HR@10 | {m} NDCG@10" for m in markets) + " |",
             "|---|---|" + "---|---|" * len(markets)]
    for (variant, stage), rows in picked.groupby(["variant", "stage"], sort=False):
        cells = []
        for market in markets:
            for metric in ("HR@10", "NDCG@10"):
                match = rows[(rows["market"] == market) & (rows["metric"] == metric)]
                if len(match):
                    r = match.iloc[0]
                    cells.append(f"{mean_std(r)} ({r['n']})")
                else:
                    cells.append("")
        lines.append(f"| {variant} | {STAGE_TITLES[stage]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def protocol_order(protocol: str) -> tuple:
    """The authors' protocol first, then one switch, then several, each in config's order."""
    return protocol.count("="), [PROTOCOL_SETTINGS.index(part.split("=")[0]) for part in protocol.split()]


def protocol_study(results: pd.DataFrame) -> list[str]:
    """Markdown lines of PROTOCOL.md's study table, where the runs have more than one protocol:
    a row per protocol, a column per (model, market), each cell the test HR@10 / NDCG@10 after
    the model's last stage, mean ± std (seeds)."""
    if results["protocol"].nunique() < 2:
        return []
    order = results["stage"].map({stage: i for i, stage in enumerate(STAGES)})
    last = results[order == order.groupby([results["variant"], results["market"], results["seed"]]).transform("max")]
    stats = last.groupby(["protocol", "model", "market"])[["HR@10", "NDCG@10"]].agg(["mean", "std", "count"])
    columns = [(model, market) for model in sorted(set(last["model"])) for market in MARKETS
               if ((last["model"] == model) & (last["market"] == market)).any()]
    lines = ["## Protocol study: test HR@10 / NDCG@10 after each model's last stage (PROTOCOL.md)", "",
             "Mean ± sample std (seeds); an empty cell: not run.", "",
             "| protocol | " + " | ".join(f"{model}, `{market}`" for model, market in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for protocol in sorted(set(last["protocol"]), key=protocol_order):
        cells = []
        for model, market in columns:
            if (protocol, model, market) not in stats.index:
                cells.append("")
                continue
            row = stats.loc[(protocol, model, market)]  # (metric, mean / std / count)
            cells.append(f"{mean_std(row['HR@10'])} / {mean_std(row['NDCG@10'])} ({row['HR@10', 'count']:.0f})")
        lines.append(f"| {f'`{protocol}`' if protocol else 'authors (default)'} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(table: pd.DataFrame, results: pd.DataFrame, breakdowns: pd.DataFrame, command: str) -> str:
    lines = ["# ACMR reproduction report", "",
             f"Built with `{command}` from {results['folder'].nunique()} run folder(s). "
             "Test metrics over 1 positive + 99 sampled negatives. Each cell: our mean ± sample "
             "std (number of seeds) | the authors' logged run (SPEC.md section 6) | our mean "
             "minus theirs; **!** where the authors' number lies outside our mean ± 2 std. "
             "The average row averages the markets present.", ""]
    for variant, by_variant in table.groupby("variant", sort=False):
        for stage, by_stage in by_variant.groupby("stage", sort=False):
            lines += [f"## {STAGE_TITLES[stage]} (settings: {variant})", "",
                      "| market | " + " | ".join(f"{m} ours | authors | diff" for m in METRICS) + " |",
                      "|---|" + "---|---|---|" * len(METRICS)]
            for market, row in by_stage.groupby("market", sort=False):
                ordered = row.set_index("metric").loc[list(METRICS)].reset_index()
                cells = [cell(r) for _, r in ordered.iterrows()]
                lines.append(f"| {market} | " + " | ".join(cells) + " |")
            lines.append("")
    if table["variant"].nunique() > 1:
        lines += model_comparison(table)
    lines += protocol_study(results)
    lines += breakdown_lines(breakdowns)
    missing = [m for m in MARKETS if m not in set(results["market"])]
    lines += ["Markets without runs: " + (", ".join(missing) if missing else "none") + ".", ""]
    lines += [candidates_line(results), ""]
    seeds = results.groupby(["variant", "market"])["seed"].apply(lambda s: sorted(set(s)))
    lines += ["Seeds: " + "; ".join(
        f"{variant}: " + ", ".join(f"{m} {list(s)}" for (_, m), s in by_market.items())
        for variant, by_market in seeds.groupby(level="variant")) + ".",
              "", "Figures: `metric_<metric>.png` (ours with ±1 std error bars beside the authors' "
              "point), `curves_<market>.png` (valid NDCG@5 per epoch and seed).", ""]
    return "\n".join(lines)


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


def comparison_text(folders: list[Path]) -> str:
    """A plain-text version of the report's tables, for the end of a training log."""
    results, _ = collect(folders)
    table = summary_table(results)
    lines = ["test metrics: our mean +- std over seeds [authors' logged run] (! = authors "
             "outside our mean +- 2 std)"]
    for (variant, stage), rows in table.groupby(["variant", "stage"], sort=False):
        lines.append(f"{STAGE_TITLES[stage]} (settings: {variant})")
        lines.append(f"{'market':8s}" + "".join(f"{m:>28s}" for m in METRICS))
        for market, row in rows.groupby("market", sort=False):
            cells = []
            for _, r in row.iterrows():
                std = f"+-{r['std']:.4f}" if pd.notna(r["std"]) else ""
                cells.append(f"{r['mean']:.4f}{std} [{r['authors']:.4f}]{'!' if r['outside_2std'] else ' '}")
            lines.append(f"{market:8s}" + "".join(f"{c:>28s}" for c in cells))
    return "\n".join(lines)


def save_figure(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_metrics(table: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for metric in METRICS:
        figure, axes = plt.subplots(1, len(STAGES), figsize=(11, 3.8), sharey=True)
        for axis, stage in zip(axes, STAGES):
            rows = table[(table["metric"] == metric) & (table["stage"] == stage)]
            for v, (variant, by_variant) in enumerate(rows.groupby("variant", sort=False)):
                x = np.arange(len(by_variant)) + 0.12 * v
                axis.errorbar(x - 0.1, by_variant["mean"], yerr=by_variant["std"].fillna(0),
                              fmt="o", capsize=3, label=f"ours ({variant})")
            authors = rows.drop_duplicates("market")
            axis.plot(np.arange(len(authors)) + 0.1, authors["authors"], "kx", label="authors' logged run")
            axis.set_xticks(np.arange(len(authors)), authors["market"])
            axis.set_title(f"{metric} {STAGE_TITLES[stage]}")
            axis.grid(alpha=0.3)
        axes[0].set_ylabel(metric)
        axes[-1].legend(fontsize=7, loc="lower right")
        paths.append(save_figure(figure, out / f"metric_{metric.replace('@', '')}.png"))
    return paths


def plot_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for market, by_market in curves.groupby("market", sort=False):
        figure, axes = plt.subplots(1, len(STAGES), figsize=(10, 3.5))
        for axis, stage in zip(axes, STAGES):
            for (variant, seed), run in by_market[by_market["stage"] == stage].groupby(["variant", "seed"]):
                axis.plot(run["epoch"], run["valid_NDCG@5"], marker=".", label=f"seed {seed} ({variant})")
            axis.set_title(f"{market}: valid NDCG@5, {stage}")
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend(fontsize=7)
        paths.append(save_figure(figure, out / f"curves_{market}.png"))
    return paths


def build_report(paths: list[Path], out: Path, command: str) -> Path:
    folders = find_run_folders(paths)
    if not folders:
        raise FileNotFoundError(f"no run folder with a results.json under {', '.join(map(str, paths))}")
    results, curves = collect(folders)
    table = summary_table(results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "report.csv", index=False)
    breakdowns = breakdown_table(results)
    breakdowns.to_csv(out / "report_breakdown.csv", index=False)
    plot_metrics(table, out)
    if len(curves):
        plot_curves(curves, out)
    (out / "report.md").write_text(markdown(table, results, breakdowns, command))
    return out / "report.md"


def main(argv: list[str]) -> None:
    """`report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR]`"""
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    unknown = set(options) - {"log_dir", "out"}
    if unknown or any(arg.startswith("--") and "=" not in arg for arg in argv):
        sys.exit("usage: python evaluate.py report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR]")
    paths = [Path(arg) for arg in argv if not arg.startswith("--")]
    if "log_dir" in options or not paths:
        paths.append(Path(options.get("log_dir", "log")))
    out = Path(options.get("out", paths[0] if "log_dir" not in options else options["log_dir"]))
    if "out" not in options and (out / "results.json").is_file():
        out = out.parent  # next to the run folders, not inside one
    try:
        path = build_report(paths, out, " ".join(["python evaluate.py report", *argv]))
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    print(path.read_text())
    print(f"wrote {path}, {out / 'report.csv'}, {out / 'report_breakdown.csv'} and figures in {out}")
