"""The documents' generated tables: each block `<!-- report:NAME -->` ... `<!-- /report:NAME -->`
of DOCUMENTS is what DOC_BLOCKS[NAME] gives from the committed run folders under results/.

    python evaluate.py report --docs           # rewrite every block from the committed runs
    python evaluate.py report --docs --check   # only say which documents are out of date (exit 1 if any)

tests/test_docs.py fails when a block differs from what the runs give, and when a document's
prose or a table outside the blocks holds metrics typed by hand.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from config import STAGES, Config
from reporting import paired
from reporting.metrics import METRICS, SELECTION_METRIC
from reporting.report import (
    breakdown_lines,
    breakdown_table,
    mean_std,
    models_table,
    paper_table,
    per_seed_table,
    study_table,
    tuned_table,
)
from reporting.runs import (
    AUTHORS_RUNS,
    HEADLINE_METRICS,
    PROTOCOL_RESCORINGS,
    REPO,
    RESCORED,
    RESULTS,
    SPEC_MARKETS,
    STAGE_TITLES,
    RunFolderError,
    collect,
    comparable_variants,
    find_run_folders,
    last_stage,
    market_order,
    protocol_table,
    run_label,
    summary_table,
)
from runfolder.files import write_text
from runfolder.migration import upgrade_saved

DOCUMENTS = ("README.md", "CHANGELOG.md", "docs/RESULTS.md", "docs/PROTOCOL.md", "docs/SPEED.md", "docs/SPEC.md",
             "docs/RUNNING.md", "results/README.md", "results/baselines/README.md", "results/in_seeds/README.md", "results/stage2/README.md")
BLOCK = re.compile(r"(?P<open>(?P<indent>^ *)<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                   r"(?P<close> *<!-- /report:(?P=name) -->)", re.S | re.M)  # indented as its opening line


@functools.cache
def committed(*paths: str) -> pd.DataFrame:
    """The collected runs (collect) of the committed folders `paths` (relative to the repository)."""
    return collect(find_run_folders([REPO / path for path in paths]))[0]


def protocol_sources() -> tuple[str, ...]:
    """The protocol study's folders: results/protocol and its default-protocol runs, which are
    kept once, in results/archive/reproduction and results/bucketing."""
    listed = (RESULTS / "protocol" / "default_protocol_runs.txt").read_text().split()
    return ("results/protocol", *listed)


def acmr_paired_lines() -> list[str]:
    """The paired comparison of ACMR (results/paper) with each model of results/baselines."""
    paths = ("results/baselines", "results/paper")
    results = committed(*paths)
    variants = dict(zip(results["folder"], results["variant"]))
    models = paired.models_of(find_run_folders([REPO / path for path in paths]), variants)
    return paired.comparison_lines(models, variant="acmr")


def gmf_diagnosis_runs() -> pd.DataFrame:
    """The preset `gmf` of results/baselines, then results/archive/gmf_diagnosis's one-change variants."""
    preset = committed("results/baselines")
    return pd.concat([preset[preset["variant"] == "gmf"], committed("results/archive/gmf_diagnosis")], ignore_index=True)


def paper_runs() -> tuple[pd.DataFrame, str]:
    """results/paper's runs (config.py's defaults (the authors' data side)) and a line saying how much of the table they are."""
    results = committed("results/paper")
    runs, planned = results[["market", "seed"]].drop_duplicates().shape[0], len(SPEC_MARKETS) * Config().seeds
    folders = results["folder"].nunique()
    done = "" if runs >= planned else "; the rest of plans/paper.txt is still to run"
    return results, (f"From the {folders} run folder{'s' * (folders != 1)} of `results/paper`: {runs} of the "
                     f"{planned} (market, seed) runs of the paper's table{done}.")


def earlier_runs() -> tuple[pd.DataFrame, str]:
    """The default ACMR runs of results/archive/reproduction (the defaults of their time) and a line saying so."""
    results = committed("results/archive/reproduction")
    return results, ("From the ACMR runs of `results/archive/reproduction`, made before config.py's defaults (the authors' data side), with "
                     f"`{results['shared_settings'].iloc[0]}`.")


def headline() -> tuple[pd.DataFrame, str]:
    """The runs of the headline table and a line saying where they come from: results/paper once
    it holds runs, until then the default ACMR runs of results/archive/reproduction."""
    if find_run_folders([RESULTS / "paper"]):
        return paper_runs()
    results, source = earlier_runs()
    return results, source + " This table will come from `results/paper` once it holds runs of config.py's defaults (the authors' data side)."


def paper_table_block(runs: tuple[pd.DataFrame, str], metrics: tuple[str, ...]) -> list[str]:
    results, source = runs
    table = summary_table(results)
    variant = comparable_variants(results)[0]
    return [source, "", *paper_table(table, variant, metrics)]


def gaps_table(runs: tuple[pd.DataFrame, str]) -> list[str]:
    """Markdown lines: per market and stage, how far our means lie from the authors' logged run
    (ours - theirs, the least and the most over the four metrics), test and validation, beside
    two standard deviations of our test seeds, and the epochs each seed ran [theirs]."""
    results, _ = runs
    variant = comparable_variants(results)[0]
    table = summary_table(results)
    table = table[table["variant"] == variant]
    logged = json.loads(AUTHORS_RUNS.read_text())["markets"]
    lines = ["| market | stage | test: ours - theirs | two std of our test | valid: ours - theirs | epochs run per seed [theirs] |",
             "|---|---|---|---|---|---|"]
    for market in [m for m in table["market"].unique() if m in logged]:
        for stage in STAGES:
            rows = table[(table["market"] == market) & (table["stage"] == stage)]
            valid = rows["valid"] - rows["authors_valid"]
            one = results[(results["variant"] == variant) & (results["market"] == market) & (results["stage"] == stage)]
            epochs = " ".join(str(e) for e in one.sort_values("seed")["epochs"])
            lines.append(f"| {market} | {STAGE_TITLES[stage]} | {rows['difference'].min():+.3f} to {rows['difference'].max():+.3f} "
                         f"| {2 * rows['std'].min():.3f} to {2 * rows['std'].max():.3f} | {valid.min():+.3f} to {valid.max():+.3f} "
                         f"| {epochs} [{logged[market][stage]['epochs']}] |")
    return lines


def bench_table(folder: Path) -> list[str]:
    """Markdown lines: one row per tools/bench.py JSON under `folder`: the machine and the command,
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
        command = re.sub(r"^python (tools/)?bench\.py", "python -m tools.bench", command)  # as it runs now
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
    """Markdown lines of docs/SPEC.md section 6: the authors' logged run of each market and stage, test
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


def authors_weights_table(folder: Path = RESULTS / "authors_weights") -> list[str]:
    """Markdown lines: the authors' released checkpoints scored on our candidates (the JSONs of
    `python -m tools.authors_weights ... --out=FILE` in `folder`) beside their logged numbers: per
    market and stage each seed's test, then the mean ± sample std over our seeds of test and of
    validation, and the share of our held-out pairs expected among the checkpoint's training
    positives."""
    rows = [{"market": scored["target_market"], "stage": scored["stage"], "split": split, "seed": scored["seed"],
             "share": scored["expected_share_in_checkpoint_training"][split],
             **{m: scored[split][m] for m in METRICS},
             **{f"logged {m}": scored["authors_logged"][split][m] for m in METRICS}}
            for path in sorted(folder.glob("*.json")) for scored in json.loads(path.read_text()).values()
            for split in ("test", "valid")]
    lines = ["| market | stage | split | our seeds | " + " | ".join(METRICS)
             + " | our held-out pairs expected among their training positives |",
             "|---|---|---|---|" + "---|" * (len(METRICS) + 1)]
    for (market, stage, split), scored in pd.DataFrame(rows).groupby(["market", "stage", "split"], sort=False):
        logged = scored.iloc[0]
        row = f"| {market} | {STAGE_TITLES[stage]} | {split} |"
        if split == "test":  # each seed's test draw, then their mean
            for _, one in scored.sort_values("seed").iterrows():
                lines.append(f"{row} {one['seed']} | " + " | ".join(f"{one[m]:.4f} [{logged[f'logged {m}']:.4f}]"
                                                                   for m in METRICS) + f" | {one['share']:.0%} |")
        cells = [f"{mean_std(scored[m].mean(), scored[m].std())} [{logged[f'logged {m}']:.4f}]" for m in METRICS]
        seeds = ", ".join(map(str, sorted(scored["seed"])))
        lines.append(f"{row} mean of {seeds} | " + " | ".join(cells) + f" | {scored['share'].mean():.0%} |")
    return lines


STAGE2 = RESULTS / "stage2"


def stage2_runs(market: str) -> tuple[list[dict], list[dict]]:
    """Per seed of `market`, the fine-tuning of the authors' pre-trained weights on our split by
    our procedure (results/stage2/ours: train_model.py --init_weights) and by theirs
    (results/stage2/authors_procedure: their code fed our split): epochs run, kept epoch,
    validation at the kept epoch, validation NDCG@5 (SELECTION_METRIC) after each epoch, test metrics, per-user test
    ranks and the test candidates' SHA-256."""
    ours = []
    for folder in find_run_folders([STAGE2 / "ours"]):
        results = json.loads((folder / "results.json").read_text())
        if results["target_market"] != market:
            continue
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        ranks = paired.load_ranks(folder)
        for run in results["runs"]:
            kept = next(r["valid"] for r in records if r["seed"] == run["seed"] and r["epoch"] == run["finetune"]["best_epoch"])
            curve = [r["valid"][SELECTION_METRIC] for r in records if r["seed"] == run["seed"] and r["stage"] == "finetune"]
            ours.append({"seed": run["seed"], "epochs": run["finetune"]["epochs"], "kept": run["finetune"]["best_epoch"],
                         "valid": kept, "test": {m: run["finetune"][m] for m in METRICS}, "curve": curve,
                         "ranks": ranks[run["seed"]]["finetune"], "sha": run["candidates_sha256"]["test"]})
    theirs = []
    for path in sorted((STAGE2 / "authors_procedure").glob(f"{market}-seed*.json")):
        run = json.loads(path.read_text())
        theirs.append({"seed": run["seed"], "epochs": run["epochs"], "kept": run["kept_epoch"],
                       "valid": run["valid_at_kept_epoch"]["rank_based"],
                       "curve": [epoch["rank_based"][SELECTION_METRIC] for epoch in run["valid_per_epoch"]],
                       "test": {m: run["test"]["rank_based"][m] for m in METRICS},
                       "ranks": np.array(run["test"]["ranks"]), "sha": run["split_info"]["candidates_sha256"]["test"]})
    return sorted(ours, key=lambda r: r["seed"]), sorted(theirs, key=lambda r: r["seed"])


def stage2_table(markets: tuple[str, ...] = ("in", "uk")) -> list[str]:
    """results/stage2's tables: each procedure's fine-tuning of the authors' pre-trained weights
    (mean ± std over seeds; the authors' logged run below), then ours - theirs per test user on
    the same candidates (paired.compare: a user's differences averaged over the seeds)."""
    lines = ["| market | fine-tuned by | seeds | epochs run | kept epoch | valid HR@10 | valid NDCG@10 | "
             + " | ".join(f"test {m}" for m in METRICS) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(METRICS)]
    pairs, by_market = [], {market: stage2_runs(market) for market in markets}
    for market, (ours, theirs) in by_market.items():
        for name, runs in (("our procedure", ours), ("their procedure", theirs)):
            if not runs:
                continue
            frame = pd.DataFrame([{"epochs": r["epochs"], "kept": r["kept"], **{f"valid {m}": r["valid"][m] for m in METRICS},
                                   **r["test"]} for r in runs])
            cells = [mean_std(frame[c].mean(), frame[c].std()) for c in ("valid HR@10", "valid NDCG@10", *METRICS)]
            lines.append(f"| {market} | {name} | {','.join(str(r['seed']) for r in runs)} | "
                         f"{' '.join(str(r['epochs']) for r in runs)} | {' '.join(str(r['kept']) for r in runs)} | "
                         + " | ".join(cells) + " |")
        if ours or theirs:
            logged = json.loads(AUTHORS_RUNS.read_text())["markets"][market]["finetune"]
            lines.append(f"| {market} | their logged run (their split) | | {logged['epochs']} | | "
                         f"{logged['valid_at_best_epoch']['HR@10']:.4f} | {logged['valid_at_best_epoch']['NDCG@10']:.4f} | "
                         + " | ".join(f"{logged[m]:.4f}" for m in METRICS) + " |")
        if ours and theirs:
            pairs.append((market, {r["seed"]: {"candidates_sha256": r["sha"], "finetune": r["ranks"]} for r in ours},
                          {r["seed"]: {"candidates_sha256": r["sha"], "finetune": r["ranks"]} for r in theirs}))
    for market, (ours, theirs) in by_market.items():
        if ours and theirs:
            width = max(r["epochs"] for r in ours + theirs)
            lines += ["", f"{market}: validation {SELECTION_METRIC} after each fine-tuning epoch, mean over the seeds still "
                          "training (in brackets, how many seeds)", "",
                      "| procedure | " + " | ".join(str(e) for e in range(1, width + 1)) + " |", "|---|" + "---|" * width]
            for name, runs in (("ours", ours), ("theirs", theirs)):
                cells = []
                for epoch in range(width):
                    values = [r["curve"][epoch] for r in runs if epoch < len(r["curve"])]
                    cells.append(f"{np.mean(values):.3f} ({len(values)})" if values else "")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| market | seeds | users | HR@10 ours - theirs [95% CI] | p | NDCG@10 ours - theirs [95% CI] | p | "
                  "NDCG@10 per seed |", "|---|---|---|---|---|---|---|---|"]
    for market, ours, theirs in pairs:
        result = paired.compare(ours, theirs)
        if result is None:
            continue
        hr, ndcg = result.stats["HR@10"], result.stats["NDCG@10"]
        lines.append(f"| {market} | {','.join(map(str, result.seeds))} | {hr.n} | {paired.interval(hr)} | "
                     f"{paired.p_value(hr.p)} | {paired.interval(ndcg)} | {paired.p_value(ndcg.p)} | "
                     + " ".join(f"{d:+.3f}" for d in result.per_seed["NDCG@10"]) + " |")
    return lines


def rescored_protocol_table(folder: Path = RESULTS) -> list[str]:
    """runs.protocol_table of the run folders under `folder` rescored under every protocol of
    runs.PROTOCOL_RESCORINGS (`python -m tools.trained protocol-table --runs=...` writes them)."""
    folders = [path for path in find_run_folders([folder]) if all(
        (path / RESCORED / f"{name}.json").is_file() for name in PROTOCOL_RESCORINGS)]
    if not folders:
        return ["No run folder here is rescored yet (`python -m tools.trained protocol-table --runs=...`)."]
    return protocol_table(folders)


def results_index(folder: Path = RESULTS) -> list[str]:
    """Markdown lines: per folder under `folder` that holds run folders (their parent), how many,
    their labels (the start of their names, runs.run_label), target markets and seeds."""
    sets: dict[Path, list[dict]] = {}
    for run_folder in find_run_folders([folder]):
        sets.setdefault(run_folder.parent, []).append(upgrade_saved(json.loads((run_folder / "config.json").read_text())))
    lines = ["| folder | run folders | run labels | markets | seeds |", "|---|---|---|---|---|"]
    for parent, configs in sorted(sets.items()):
        labels = sorted({run_label(config) for config in configs})
        markets = market_order({config["target_market"] for config in configs})
        seeds = sorted({seed for config in configs
                        for seed in range(config["first_seed"], config["first_seed"] + config["seeds"])})
        name = parent.relative_to(folder)
        lines.append(f"| [{name}]({parent.relative_to(REPO)}) | {len(configs)} | {', '.join(labels)} | {', '.join(markets)} | "
                     f"{', '.join(map(str, seeds))} |")
    return lines


def in_seed_runs() -> tuple[pd.DataFrame, dict]:
    """ACMR's runs on `in` after fine-tuning with config.py's defaults, one row per seed
    (results/paper's and results/in_seeds'), and the authors' logged run's test metrics."""
    results = committed("results/paper", "results/in_seeds")
    runs = results[(results["market"] == "in") & (results["stage"] == "finetune")
                   & (results["variant"] == "acmr")].sort_values("seed")
    return runs, json.loads(AUTHORS_RUNS.read_text())["markets"]["in"]["finetune"]


def percentile_among(values: pd.Series, value: float) -> float:
    """The percentile of `value` among `values`: the share below it, ties counting half, in %."""
    return 100 * float((values < value).mean() + 0.5 * (values == value).mean())


def in_seeds_table() -> list[str]:
    """in_seed_runs' test metrics, one row per seed, the authors' logged run, how many of our
    runs score below it per metric and its percentile among them (percentile_among)."""
    runs, logged = in_seed_runs()
    paths = {folder.name: folder.relative_to(REPO) for folder in find_run_folders([RESULTS / "paper", RESULTS / "in_seeds"])}
    lines = ["| seed | run folder | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for _, run in runs.iterrows():
        lines.append(f"| {run['seed']} | [{run['folder']}]({paths[run['folder']]}) | "
                     + " | ".join(f"{run[m]:.4f}" for m in METRICS) + " |")
    lines.append("| the authors' logged run | | " + " | ".join(f"{logged[m]:.4f}" for m in METRICS) + " |")
    lines.append("| our runs below it | | " + " | ".join(f"{int((runs[m] < logged[m]).sum())} of {len(runs)}"
                                                    for m in METRICS) + " |")
    lines.append("| its percentile among ours (ties count half) | | "
                 + " | ".join(f"{percentile_among(runs[m], logged[m]):.0f}" for m in METRICS) + " |")
    return lines


def in_percentile_sentence() -> list[str]:
    """One sentence for docs/RESULTS.md: where the authors' logged `in` run lies among our seeds."""
    runs, logged = in_seed_runs()
    seeds = runs["seed"].tolist()
    where = ", ".join(f"{m} {percentile_among(runs[m], logged[m]):.0f}" for m in METRICS)
    return [f"Over our {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), the authors' logged `in` run lies at "
            f"percentile {where} of ours (ties count half)."]


DOC_BLOCKS: dict[str, Callable[[], list[str]]] = {
    "authors": authors_table,
    "authors-weights": authors_weights_table,
    "in-seeds": in_seeds_table,
    "in-percentile": in_percentile_sentence,
    "paper-table": lambda: paper_table_block(headline(), HEADLINE_METRICS),
    "paper-table-full": lambda: paper_table_block(headline(), METRICS),
    "paper-gaps": lambda: gaps_table(headline()),
    "earlier-paper-table-full": lambda: paper_table_block(earlier_runs(), METRICS),
    "models": lambda: models_table(summary_table(committed("results/archive/reproduction"))),
    "models-breakdown": lambda: breakdown_lines(breakdown_table(last_stage(committed("results/archive/reproduction")))),
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
    "protocol-rescored": rescored_protocol_table,  # the kept seed-0 weights rescored (tools/trained.py)
    "results-index": results_index,
    "stage2": stage2_table,  # results/stage2: fine-tuning the authors' pre-trained weights, both procedures
}


LINK = re.compile(r"\]\((?![a-z]+:|#)(?P<target>[^)\s]+)\)")  # a relative markdown link


class DocumentError(ValueError):
    """A document that cannot be rendered; the message names it."""


def render_document(text: str, name: str = "README.md") -> str:
    """`text`, the document `name` (relative to the repository), with each generated block
    rewritten from the committed runs. The blocks link to files relative to the repository;
    in a document under a folder (docs/, results/) the links are made relative to that folder."""
    folder = Path(name).parent

    def block(match: re.Match) -> str:
        if match["name"] not in DOC_BLOCKS:
            raise DocumentError(f"{name}: unknown block <!-- report:{match['name']} -->; known: {', '.join(DOC_BLOCKS)}")
        body = LINK.sub(lambda link: f"]({Path(os.path.relpath(link['target'], folder)).as_posix()})",
                        "\n".join(match["indent"] + line for line in DOC_BLOCKS[match["name"]]()))
        return match["open"] + body + "\n" + match["indent"] + match["close"].lstrip(" ")
    return BLOCK.sub(block, text)


def update_documents(write: bool = True) -> list[str]:
    """The names of the DOCUMENTS whose generated blocks differ from what the runs give; rewritten
    unless `write` is false."""
    changed = []
    for name in DOCUMENTS:
        path = REPO / name
        text = path.read_text()
        rendered = render_document(text, name)
        if rendered != text:
            if write:
                write_text(path, rendered)
            changed.append(name)
    return changed


def main(check: bool = False) -> None:
    """Rewrite the stale documents; with `check`, only name them and exit 1 if there are any."""
    try:
        changed = update_documents(write=not check)
    except (DocumentError, RunFolderError) as error:
        sys.exit(f"error: {error}")
    if check:
        if changed:
            sys.exit(f"error: generated tables out of date in {', '.join(changed)} (python evaluate.py report --docs rewrites them)")
        print("every document's generated tables are up to date")
        return
    print("rewrote the generated tables of " + (", ".join(changed) if changed else "no document: all up to date"))
