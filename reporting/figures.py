"""The report's figures: one panel per market (or market and stage), legends outside the data.

plot_all(table, results, curves, out) draws what the runs of a report hold (reporting/runs.py's tables):
per ACMR variant, its test metrics beside the authors' logged run and its validation curves;
with several models, each model's test metric; with several protocols, the protocol study.
matplotlib is imported by the functions that draw, not with the module.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from config import STAGES
from reporting.metrics import METRICS, SELECTION_METRIC
from reporting.runs import (
    HEADLINE_METRICS,
    SPEC_MARKETS,
    STAGE_TITLES,
    authors_numbers,
    comparable_variants,
    last_stage,
    market_order,
    protocol_order,
)
from runfolder.files import write_file

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def slug(text: str) -> str:
    """A file-name part for a variant: `acmr (lr=0.01)` -> `acmr_lr=0.01`."""
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", text).strip("_")


def panel_grid(count: int, columns: int = 4, size: tuple[float, float] = (3.2, 2.6)) -> tuple[Figure, list[Axes]]:
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


def legend_entries(axes: list[Axes]) -> dict:
    """label -> handle over all panels, each label once."""
    entries = {}
    for axis in axes:
        handles, labels = axis.get_legend_handles_labels()
        entries.update(zip(labels, handles))
    return entries


def save_figure(figure: Figure, path: Path) -> Path:
    """The figure as a PNG at `path`, written whole or not at all (files.write_file)."""
    import matplotlib.pyplot as plt
    try:
        write_file(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    finally:
        plt.close(figure)
    return path


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
    """One panel per (market, stage): validation SELECTION_METRIC (NDCG@5) per epoch, a line per
    seed, the kept epoch marked, and the authors' validation number at the epoch they kept."""
    import matplotlib.pyplot as plt
    authors = authors_numbers()
    runs = curves[curves["variant"] == variant]
    panels = [(m, s) for m in SPEC_MARKETS for s in STAGES
              if ((runs["market"] == m) & (runs["stage"] == s)).any()]
    figure, axes = panel_grid(len(panels), columns=2, size=(4.0, 2.4))
    colors = {seed: plt.get_cmap("tab20")(i % 20) for i, seed in enumerate(sorted(set(runs["seed"])))}
    column = f"valid_{SELECTION_METRIC}"  # reporting/runs.py's curves
    kept = results[results["variant"] == variant].set_index(["market", "seed", "stage"])["best_epoch"]
    for axis, (market, stage) in zip(axes, panels):
        picked = runs[(runs["market"] == market) & (runs["stage"] == stage)]
        for seed, run in picked.groupby("seed"):
            axis.plot(run["epoch"], run[column], color=colors[seed], lw=1, label=f"seed {seed}")
            best = run[run["epoch"] == kept.get((market, seed, stage))]
            axis.plot(best["epoch"], best[column], "o", color=colors[seed], markersize=5)
        axis.axhline(authors.loc[(market, stage), f"valid {SELECTION_METRIC}"], color="black", ls="--", lw=1,
                     label="authors' logged run, at its kept epoch")
        axis.set_title(f"{market}, {STAGE_TITLES[stage]}", fontsize=10)
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"valid {SELECTION_METRIC}")
        axis.grid(alpha=0.3)
    labels = legend_entries(axes)
    order = sorted(labels, key=lambda label: (not label.startswith("seed"), label))
    figure.legend([labels[label] for label in order], order, loc="outside right upper", fontsize=8,
                  title="dot: the kept epoch", title_fontsize=8)
    figure.suptitle(f"{variant}: validation {SELECTION_METRIC} per epoch")
    return save_figure(figure, out / f"curves_{slug(variant)}.png")


def plot_models(table: pd.DataFrame, metric: str, out: Path) -> Path:
    """One panel per market: every variant's test metric after each stage (mean, ±1 std), the
    authors' ACMR after fine-tuning as a dashed line."""
    rows = table[(table["metric"] == metric) & (table["market"] != "average")]
    markets = market_order(rows["market"])
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
    markets = market_order(last["market"])
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
