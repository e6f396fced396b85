"""The report of run folders: our results beside the authors' logged runs, as report.md and figures.

    python evaluate.py report --log_dir=log                   # every run folder under log/
    python evaluate.py report log/acmr-in-seed0-2026... log/acmr-jp-seed0-2026...   # these run folders
    python evaluate.py report results/protocol $(cat results/protocol/default_protocol_runs.txt) --out=results/protocol
    python evaluate.py report --docs                          # the documents' tables (reporting/documents.py)

Writes report.md, report.csv (the summary), report_runs.csv (one row per run and stage),
report_breakdown.csv (the break-downs of docs/PROTOCOL.md) and PNG figures (default: into the
log_dir, or next to the run folders). The tables come from reporting/runs.py (a variant per set of
settings that change results; a run in several folders counts once, and the report names the
folder it kept and those it left out), the figures from reporting/figures.py, the paired comparison over
test users from reporting/paired.py; settings that every folder of a report shares are stated once.
Importing this module loads neither torch nor matplotlib: train_model.py calls comparison_text
at the end of every run.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pandas as pd

from config import STAGES, Config, repository_or_given
from plans.presets import PRETRAINED_AS
from reporting import figures, paired
from reporting.metrics import METRICS
from reporting.runs import (
    BREAKDOWN_GROUPS,
    HEADLINE_METRICS,
    REPO,
    RESULTS,
    STAGE_TITLES,
    TOLERANCE_FLOOR,
    RunFolderError,
    collect,
    find_run_folders,
    last_stage,
    market_order,
    protocol_order,
    sort_rows,
    summary_table,
    without_authors_numbers,
)
from runfolder.files import WriteError, staged, write_file, write_text

INCOMPLETE = "†"


def mean_std(mean: float, std: float) -> str:
    """`mean ± std`, or the mean alone where there is no std (one seed, or the average row)."""
    return f"{mean:.4f}" + (f" ± {std:.4f}" if pd.notna(std) else "")


def number(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.4f}"


def paper_table(table: pd.DataFrame, variant: str, metrics: tuple[str, ...] = METRICS) -> list[str]:
    """Markdown lines: the variant's table beside the authors', a row per (market, stage), for
    each metric a test cell `our mean ± std [authors']` (**!** outside the tolerance) and a
    validation cell `our mean [authors']` at the epoch each stage kept; † on the seeds of a
    market whose runs are not all complete. A row with a metric outside the tolerance that is
    not among `metrics` names it beside the stage (`(**!** HR@5)`)."""
    rows = table[table["variant"] == variant]
    hidden = [m for m in METRICS if m not in metrics]
    hidden_flags = False
    lines = ["| market | stage | seeds | " + " | ".join(f"{m} test | {m} valid" for m in metrics) + " |",
             "|---|---|---|" + "---|---|" * len(metrics)]
    for market in market_order(rows["market"]):
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
            flagged = [m for m in hidden if m in by_metric.index and by_metric.loc[m, "outside_tolerance"]]
            hidden_flags = hidden_flags or bool(flagged)
            title = STAGE_TITLES[stage] + (f" (**!** {', '.join(flagged)})" if flagged else "")
            lines.append(f"| {market} | {title} | {seeds} | " + " | ".join(cells) + " |")
    if hidden_flags:
        lines += ["", f"(**!** M): on this row M, one of {', '.join(hidden)} (not shown here), is outside the "
                      "tolerance; the table with every metric has it."]
    if not rows["complete"].all():
        lines += ["", f"{INCOMPLETE} Some of these runs are not complete (their results.json says "
                      "`\"complete\": false`; the end of the report says whether each is still going or "
                      "diverged): the seeds so far."]
    return lines


def models_table(table: pd.DataFrame) -> list[str]:
    """Markdown lines: one row per (variant, stage) with test HR@10 and NDCG@10 per market. A
    two-stage model gets a row per stage: its pre-training row is the model without fine-tuning."""
    picked = table[table["metric"].isin(HEADLINE_METRICS) & (table["market"] != "average")]
    markets = market_order(picked["market"])  # averages of unequal market sets mislead
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
    markets = market_order(last["market"])
    lines = ["| model | " + " | ".join(f"{m} {metric}, per seed" for m in markets) + " |",
             "|---|" + "---|" * len(markets)]
    for variant, rows in last.groupby("variant", sort=False):
        cells = [" / ".join(f"{v:.4f}" for v in rows[rows["market"] == m].sort_values("seed")[metric])
                 for m in markets]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def tuned_row(variant: str, stage: str) -> str:
    """The tuned table's row of a run: the tuned presets of one model (`gmf-tuned-in`,
    `gmf-tuned-jp`, ...) share one, `gmf, tuned (gmf-tuned-<market>)`; a trained cross-market
    preset reads `forec, trained (forec-trained)`; FOREC after pre-training is NMF++'s row,
    `nmf++ (forec after pre-training), trained (forec-trained)`; any other variant is its own row."""
    preset, family = variant.split(" ")[0], paired.preset_family(variant)
    if family == preset:
        return variant
    how, name = ("trained", preset) if preset.endswith("-trained") else ("tuned", f"{family}-tuned-<market>")
    if stage == "pretrain" and family in PRETRAINED_AS:
        family = f"{PRETRAINED_AS[family]} ({family} after pre-training)"
    return f"{family}, {how} ({name})"


def tuned_table(results: pd.DataFrame) -> list[str]:
    """Markdown lines: test HR@10 / NDCG@10 (mean ± std over seeds, after each run's last stage;
    FOREC's after pre-training too, as NMF++) of each row of tuned_row, each market with its own
    columns; [] where there is no tuned run."""
    last = last_stage(results)
    if not last["variant"].str.contains("-tuned-").any():
        return []
    pretrained = results[(results["stage"] == "pretrain") & results["variant"].str.match(
        "|".join(f"{model}-(trained|tuned-)" for model in PRETRAINED_AS))]
    rows = pd.concat([last, pretrained]).drop_duplicates(["variant", "market", "seed", "stage"])
    rows = rows.assign(row=[tuned_row(v, s) for v, s in zip(rows["variant"], rows["stage"])])
    markets = market_order(rows["market"])
    lines = ["| model | " + " | ".join(f"{m} {metric}" for m in markets for metric in HEADLINE_METRICS) + " |",
             "|---|" + "---|" * len(HEADLINE_METRICS) * len(markets)]
    for row, group in rows.groupby("row", sort=True):
        cells = []
        for market in markets:
            for metric in HEADLINE_METRICS:
                values = group.loc[group["market"] == market, metric]
                cells.append(f"{mean_std(values.mean(), values.std())} ({len(values)})" if len(values) else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def tuned_section(results: pd.DataFrame) -> list[str]:
    """Markdown lines for report.md: the tuned table and the search behind it (tools/tune.py)."""
    table = tuned_table(results) if len(results) else []
    if not table:
        return []
    return ["## Tuned baselines (tools/tune.py)", "",
            "Test HR@10 / NDCG@10 after each model's last stage, mean ± sample std (seeds); the untuned "
            "rows are plans/presets.py's presets (ACMR's optimiser and early stopping), the tuned rows each "
            "market's preset chosen on validation NDCG@5 alone, the trained cross-market rows (gmf++-trained, "
            "forec-trained; NMF++ is FOREC after pre-training) FOREC's code's settings with NCF's "
            "initialisation and early stopping, not searched. Under the authors' protocol (1 + 99 sampled "
            "candidates) a random ranking scores HR@10 0.10, NDCG@10 about 0.045.", "", *table, "", *search_lines(), ""]


def trained_with(records: list[dict]) -> dict[str, list[str]]:
    """The fixed settings of tools/tune.py's records (`k=v, ...`) -> the models searched with them."""
    groups: dict[str, list[str]] = {}
    for r in records:
        models = groups.setdefault(", ".join(f"{k}={v}" for k, v in r["fixed"].items()), [])
        if r["model"] not in models:
            models.append(r["model"])
    return groups


def search_lines(out: Path = RESULTS / "baselines" / "search") -> list[str]:
    """Markdown for the report: how the tuned presets were chosen (space, seed, budget) and what
    each search chose, with its validation score, from tools/tune.py's records in `out`."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*-*.json"))]
    if not records:
        return [f"No search records in {out}."]
    first = records[0]
    lines = [f"Search (tools/tune.py, records in `{out.relative_to(REPO) if out.is_relative_to(REPO) else out}`): "
             f"{first['search']}, random_state {first['search_seed']}, {first['trials']} trials per model and "
             f"market, one at a time; each trial trains "
             + "; ".join(f"{', '.join(models)} with {fixed}" for fixed, models in trained_with(records).items())
             + f" (stages=finetune: the target market alone; otherwise all seven markets first) on seed "
             f"{first['data_seed']}'s split and scores the best validation NDCG@5 of its (last stage's) epochs; "
             "the test candidates are scored only in the chosen presets' runs. num_train_negatives is not "
             "searched (it changes the evaluation candidates)."
             + ("" if any(r["model"] == "acmr" for r in records)
                else " ACMR is not searched: it keeps the paper's settings (config.py's defaults)."), ""]
    for model, space in dict.fromkeys((r["model"], r["space"]) for r in records):
        lines.append(f"- {model}: {space}.")
    lines += ["", "| model | market | chosen trial (in the order drawn) | valid NDCG@5 (best epoch) | trials' valid NDCG@5, min / median "
              "/ max | chosen settings |", "|---|---|---|---|---|---|"]
    for r in records:
        objective = r["objective"]
        scores = sorted(t["result"][objective] for t in r["all_trials"])
        best = r["all_trials"][r["chosen_trial"]]["result"]
        settings = " ".join(f"{k}={v}" for k, v in r["chosen"].items() if k not in ("model", "stages"))
        lines.append(f"| {r['model']} | {r['market']} | {r['chosen_trial'] + 1} of {len(scores)} | "
                     f"{best[objective]:.4f} ({best['best_epoch']} of {best['epochs']}) | {scores[0]:.4f} / "
                     f"{statistics.median(scores):.4f} / {scores[-1]:.4f} | `{settings}` |")
    return lines


def study_table(results: pd.DataFrame, group: str | None = None) -> list[str]:
    """Markdown lines of docs/PROTOCOL.md's study table: a row per protocol, a column per (model,
    market), each cell the test HR@10 / NDCG@10 after the model's last stage, mean ± std
    (seeds); of the test users of a break-down group (BREAKDOWN_GROUPS) when given, with their
    number per seed. [] where the runs have a single protocol."""
    if results["protocol"].nunique() < 2:
        return []
    prefix = f"{group} " if group else ""
    last = last_stage(results).dropna(subset=[f"{prefix}HR@10"])
    columns = [(model, market) for model in sorted(set(last["model"])) for market in market_order(last["market"])
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
    the seeds where the group has test users (`scored`), the seeds whose results.json has the
    break-down (`seeds`), and the group's mean number of test users over those. Ordered as the
    summary table."""
    parts = []
    for group in BREAKDOWN_GROUPS:
        part = results[["variant", "stage", "market", "seed"]].assign(group=group)
        for key in ("HR@10", "NDCG@10", "users"):
            part[key] = results[f"{group} {key}"]
        parts.append(part)
    long = pd.concat(parts).dropna(subset=["users"])
    table = long.groupby(["variant", "stage", "market", "group"]).agg(
        **{"HR@10": ("HR@10", "mean"), "NDCG@10": ("NDCG@10", "mean"), "scored": ("HR@10", "count"),
           "seeds": ("seed", "count"), "users": ("users", "mean")}).reset_index()
    return sort_rows(table, {"stage": list(STAGES), "market": market_order(table["market"]),
                             "group": list(BREAKDOWN_GROUPS)})


def breakdown_lines(table: pd.DataFrame) -> list[str]:
    """Markdown lines of the break-down table: a row per (variant, stage, market), a column per
    group: HR@10 / NDCG@10 (mean test users per seed), and how many of the seeds the metrics
    average where the group has no test user on some."""
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
                some = f"; {row['scored']} of {row['seeds']} seeds" if row["scored"] < row["seeds"] else ""
                cells.append(f"{row['HR@10']:.4f} / {row['NDCG@10']:.4f} ({row['users']:.0f}{some})")
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


def folders_line(results: pd.DataFrame) -> str:
    """How many run folders the report reads, and how many of them it leaves out whole (every run
    in them is in a newer folder too)."""
    used = set(results["folder"])
    left_out = {name for names in results["also_in"] for name in names.split()} - used
    return (f"{len(used)} run folder(s)" + (f" ({len(left_out)} more left out: each of their runs is in a newer "
                                             f"folder too, listed at the end)" if left_out else ""))


def folder_notes(results: pd.DataFrame) -> list[str]:
    """Markdown lines about the run folders: those still going, those that diverged, the runs found
    in several folders (which one counts, and why), and config.json files that lack settings."""
    lines = []
    going = sorted(set(results.loc[~results["complete"] & ~results["diverged"], "folder"]))
    if going:
        lines += [f"{INCOMPLETE} Still going: " + ", ".join(going) + ".", ""]
    diverged = sorted(set(results.loc[results["diverged"], "folder"]))
    if diverged:
        lines += [f"{INCOMPLETE} Diverged (their diverged.txt says where and why; the seeds before count, and a "
                  f"resume refuses them): " + ", ".join(diverged) + ".", ""]
    repeated = results.loc[results["also_in"] != "", ["variant", "market", "seed", "folder", "also_in"]]
    repeated = repeated.drop_duplicates()
    if len(repeated):
        lines += ["Runs in several folders count once, from the newest folder (the start time that ends its "
                  "name): " + "; ".join(f"{r.variant} {r.market} seed {r.seed}: {r.folder} kept, "
                                        f"{r.also_in.replace(' ', ', ')} left out" for r in repeated.itertuples())
                  + ".", ""]
    lacking = results.loc[results["config_lacks"] != "", ["folder", "config_lacks"]].drop_duplicates()
    if len(lacking):
        lines += ["Run folders whose config.json lacks settings, which count as config.py's defaults in their "
                  "variant's name (so their runs may count as, and replace, another variant's): " + "; ".join(
                      f"{r.folder} ({r.config_lacks.replace(' ', ', ')})" for r in lacking.itertuples()) + ".", ""]
    return lines


def markdown(table: pd.DataFrame, results: pd.DataFrame, breakdowns: pd.DataFrame, command: str,
             figure_paths: list[Path]) -> str:
    lines = ["# ACMR reproduction report", "",
             f"Built with `{command}` from {folders_line(results)}. "
             "Each cell: ours [the authors' logged run, docs/SPEC.md section 6]. Test: our mean ± sample "
             "std over the seeds; validation: our mean over the seeds at the epoch each stage kept. "
             f"**!** where our test mean lies further than max(2 std, {TOLERANCE_FLOOR}) from the "
             "authors' number (the floor alone for one seed and for the average row, which averages "
             "the markets present).", ""]
    lines += [shared_line(results), ""] if shared_line(results) else []
    lines += [without_authors_numbers(results), ""] if without_authors_numbers(results) else []
    for variant in table["variant"].unique():
        lines += [f"## {variant}", "", *paper_table(table, variant), ""]
    if table["variant"].nunique() > 1:
        lines += ["## All models: test HR@10 / NDCG@10 after each stage they have", "",
                  "Mean ± sample std (seeds).", "", *models_table(table), ""]
    study = study_table(results)
    if study:
        lines += ["## Protocol study: test HR@10 / NDCG@10 after each model's last stage (docs/PROTOCOL.md)", "",
                  "Mean ± sample std (seeds); an empty cell: not run.", "", *study, "",
                  "### The same, on the test users whose item the target's training data never had (cold)", "",
                  *study_table(results, "item_unseen_in_target_training"), "",
                  "### The same, on the test users who bought their test item in training too (repeat)", "",
                  *study_table(results, "repeat_purchase"), ""]
    if len(breakdowns):
        lines += ["## Break-downs: test HR@10 / NDCG@10 by group of test users (docs/PROTOCOL.md)", "",
                  "Mean over the seeds whose results.json has break-downs (last column); in brackets "
                  "the group's test users per seed; `-` where a group has none.", "",
                  *breakdown_lines(breakdowns), ""]
    data_markets = {m for markets in results["data_markets"] for m in markets.split(",")}
    missing = [m for m in market_order(data_markets) if m not in set(results["market"])]
    lines += ["Markets without runs: " + (", ".join(missing) if missing else "none") + ".", ""]
    lines += [candidates_line(results), ""]
    seeds = results.groupby(["variant", "market"])["seed"].apply(lambda s: sorted(set(s)))
    lines += ["Seeds: " + "; ".join(
        f"{variant}: " + ", ".join(f"{m} {list(s)}" for (_, m), s in by_market.items())
        for variant, by_market in seeds.groupby(level="variant", sort=False)) + ".", ""]
    lines += folder_notes(results)
    lines += ["Figures: " + ", ".join(f"`{path.name}`" for path in figure_paths) + ".", ""] if figure_paths else []
    return "\n".join(lines)


def comparison_text(folders: list[Path]) -> str:
    """A plain-text version of the report's tables, for the end of a training log."""
    results, _ = collect(folders)
    table = summary_table(results)
    lines = [f"test metrics: our mean +- std over seeds [authors' logged run] (! = further than "
             f"max(2 std, {TOLERANCE_FLOOR}) from the authors'); valid: at the kept epoch [authors']"]
    lines += [shared_line(results)] if shared_line(results) else []
    lines += [without_authors_numbers(results)] if without_authors_numbers(results) else []
    for (variant, stage), rows in table.groupby(["variant", "stage"], sort=False):
        lines.append(f"{STAGE_TITLES[stage]} (settings: {variant})")
        lines.append(f"{'market':8s}" + "".join(f"{m:>28s}" for m in METRICS))
        for market, row in rows.groupby("market", sort=False):
            test, valid = [], []
            for _, r in row.iterrows():
                std = f"+-{r['std']:.4f}" if pd.notna(r["std"]) else ""
                test.append(f"{r['mean']:.4f}{std} [{number(r['authors'])}]{'!' if r['outside_tolerance'] else ' '}")
                valid.append(f"{number(r['valid'])} [{number(r['authors_valid'])}] ")
            lines.append(f"{market:8s}" + "".join(f"{c:>28s}" for c in test))
            lines.append(f"{'  valid':8s}" + "".join(f"{c:>28s}" for c in valid))
    return "\n".join(lines)


def build_report(paths: list[Path], out: Path, command: str) -> Path:
    """report.md, the CSV tables and the figures of the run folders under `paths`, in `out`. They
    are written into a staging folder and replace the previous report's files only once all of
    them are written (files.staged): an error or an interrupt leaves the previous report whole."""
    folders = find_run_folders(paths)
    if not folders:
        raise FileNotFoundError(f"no run folder with a results.json under {', '.join(map(str, paths))}")
    results, curves = collect(folders)
    table = summary_table(results)
    breakdowns = breakdown_table(results)
    with staged(out) as staging:
        for name, frame in (("report.csv", table), ("report_runs.csv", results),
                            ("report_breakdown.csv", breakdowns)):
            write_file(staging / name, lambda temporary, frame=frame: frame.to_csv(temporary, index=False))
        figure_paths = figures.plot_all(table, results, curves, staging)
        write_text(staging / "report.md", "\n".join([markdown(table, results, breakdowns, command, figure_paths),
                                                      *tuned_section(results),
                                                      *paired.comparison_section(folders, results)]))
    return out / "report.md"


USAGE = "usage: python evaluate.py report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR] | --docs"


def main(argv: list[str]) -> None:
    """`report [RUN_FOLDERS...] [--log_dir=DIR] [--out=DIR]` (evaluate.py sends `report --docs` to reporting/documents.py)."""
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    unknown = set(options) - {"log_dir", "out"}
    if unknown or any(arg.startswith("--") and "=" not in arg for arg in argv):
        sys.exit(USAGE)
    empty = [key for key, value in options.items() if value == ""]
    if empty:
        sys.exit(f"error: --{empty[0]}= is empty: give it a folder or leave it out")
    paths = [Path(arg) for arg in argv if not arg.startswith("--")]
    missing = [path for path in paths if not path.exists()]
    if missing:
        sys.exit(f"error: {missing[0]}: no such run folder or folder of run folders")
    log_dir = repository_or_given(Config(log_dir=options.get("log_dir", Config().log_dir)), "log_dir")
    if "log_dir" in options or not paths:
        paths.append(log_dir)
    out = Path(options.get("out", paths[0] if "log_dir" not in options else log_dir))
    if "out" not in options and (out / "results.json").is_file():
        out = out.parent  # next to the run folders, not inside one
    try:
        path = build_report(paths, out, " ".join(["python evaluate.py report", *argv]))
    except (FileNotFoundError, RunFolderError, WriteError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (evaluate.py makes it one)
        print(f"interrupted: no report written; the files in {out} are as they were", file=sys.stderr)
        sys.exit(130)
    print(path.read_text())
    print(f"wrote {path}, report.csv, report_runs.csv, report_breakdown.csv and the figures in {out}")
