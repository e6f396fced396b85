"""Per-user paired comparison of two models on identical candidates.

Every run folder keeps, in `ranks.json`, the rank of the held-out positive among its candidates
for every test user, after each stage (train_model.py calls `save_ranks`). Two runs of the same
market and seed whose test candidates have the same SHA-256 (results.json's `candidates_sha256`)
scored the same users on the same candidates, in the same order: their ranks pair up user by
user. For models A and B (A's last stage against B's, fine-tuning where a model has it):

- per test user and seed, metric(A) - metric(B) for HR@10 and NDCG@10 (reporting/metrics.py);
- per test user, d = that difference averaged over the seeds both have: the same users are the
  target market's test users in every seed (another split each time), so a user is one unit,
  not one per seed;
- the mean of d with a 95% t-interval over the users (mean +- t(0.975, n - 1) * sd / sqrt(n));
- a two-sided Wilcoxon signed-rank test of d (scipy.stats.wilcoxon, zero_method="wilcox": users
  on whom A and B agree on average are left out; p = 1 where they all agree);
- beside them, the mean difference on each seed, and the users on whom A is better and worse
  (NDCG@10, on average over the seeds).

    python -m reporting.paired RUN_FOLDERS_OR_PARENTS...    # the comparison of every pair, as markdown

`comparison_section` is what reporting/report.py adds to report.md. Importing this module loads neither
torch nor scipy.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from config import STAGES
from reporting import runs
from reporting.metrics import metric_per_user
from reporting.runs import start_time
from runfolder.files import write_text

if TYPE_CHECKING:
    import pandas as pd

RANKS = "ranks.json"
RANKS_FORMAT = "acmr-ranks/1"
PAIRED_METRICS = ("HR@10", "NDCG@10")
SPEC_MARKETS = ("de", "jp", "in", "fr", "ca", "mx", "uk")


# ---------------------------------------------------------------- ranks.json

def save_ranks(run_dir: Path, seed: int, stage: str, ranks: list[int], candidates_sha256: dict | None) -> None:
    """Add one seed's and stage's per-user test ranks (in the order of the run's target users,
    which is the order of its candidate table) to `run_dir/ranks.json`."""

    path = run_dir / RANKS
    payload = json.loads(path.read_text()) if path.is_file() else {"format": RANKS_FORMAT, "seeds": {}}
    entry = payload["seeds"].setdefault(str(seed), {})
    entry["candidates_sha256"] = (candidates_sha256 or {}).get("test")  # None: full ranking, not paired
    entry[stage] = " ".join(str(int(rank)) for rank in ranks)
    write_text(path, json.dumps(payload, indent=1) + "\n")


def load_ranks(run_dir: Path) -> dict[int, dict]:
    """seed -> {"candidates_sha256": str | None, stage: np.ndarray of ranks} of a run folder ({}
    without ranks.json)."""
    path = run_dir / RANKS
    if not path.is_file():
        return {}
    payload = runs.read_json(path)
    if not isinstance(payload, dict) or payload.get("format") != RANKS_FORMAT:
        raise runs.RunFolderError(f"{path}: not a ranks file of format {RANKS_FORMAT}")
    return {int(seed): {key: (np.array(value.split(), dtype=np.int64) if key in STAGES else value)
                        for key, value in entry.items()}
            for seed, entry in payload["seeds"].items()}


# ---------------------------------------------------------------- statistics

@dataclass
class Paired:
    """The paired comparison of A - B on one metric."""
    n: int
    mean: float
    low: float
    high: float
    p: float
    better: int  # users on whom A scores higher
    worse: int


def paired_stats(differences: np.ndarray, confidence: float = 0.95) -> Paired:
    """Mean of the per-user differences with a t-interval, and the Wilcoxon signed-rank p-value."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    n, mean = len(d), float(d.mean())
    if n > 1 and d.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    else:
        half = 0.0
    p = float(stats.wilcoxon(d, zero_method="wilcox").pvalue) if np.any(d != 0) else 1.0
    return Paired(n, mean, mean - half, mean + half, p, int((d > 0).sum()), int((d < 0).sum()))


@dataclass
class Comparison:
    """A - B on the seeds both have: per metric, the statistics over users (each user's
    difference averaged over the seeds) and the mean difference on each seed."""
    seeds: list[int]
    stats: dict[str, Paired]
    per_seed: dict[str, list[float]]


def compare(a: dict[int, dict], b: dict[int, dict]) -> Comparison | None:
    """A's and B's ranks (load_ranks, each at its last stage) paired on the seeds whose test
    candidates they share; None where they share none. Row i of every seed's ranks is the same
    user (data_loader numbers the users by market and raw id, whatever the seed)."""
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s]["candidates_sha256"] and a[s]["candidates_sha256"] == b[s]["candidates_sha256"])
    if not seeds:
        return None
    ranks_a = [last_stage_ranks(a[s]) for s in seeds]
    ranks_b = [last_stage_ranks(b[s]) for s in seeds]
    if len({len(ranks) for ranks in ranks_a + ranks_b}) > 1:
        raise ValueError(f"seeds {seeds}: runs of one market with different numbers of test users")
    stats, per_seed = {}, {}
    for metric in PAIRED_METRICS:
        differences = metric_per_user(np.stack(ranks_a), metric) - metric_per_user(np.stack(ranks_b), metric)
        stats[metric] = paired_stats(differences.mean(axis=0))  # (seeds, users) -> one per user
        per_seed[metric] = differences.mean(axis=1).tolist()
    return Comparison(seeds, stats, per_seed)


def last_stage_ranks(entry: dict) -> np.ndarray:
    return entry[[stage for stage in STAGES if stage in entry][-1]]


# ---------------------------------------------------------------- models and pairs

@dataclass
class Model:
    """The runs of one variant (reporting/runs.py's name) in one market: seed -> ranks."""
    variant: str
    family: str  # family_of: acmr, popularity, gmf, mlp, nmf, gmf++, forec, ...
    tuned: bool
    market: str
    ranks: dict[int, dict]


def preset_family(variant: str) -> str:
    """A variant's preset without its tuned or trained part: `gmf (lr=0.01)` and `gmf-tuned-in`
    -> gmf, `gmf++-trained` -> gmf++."""
    return re.sub(r"-(tuned-[\w+]+|trained)$", "", variant.split(" ")[0])


def family_of(variant: str, model: str) -> str:
    """`acmr` for ACMR's variants (config.json's `model`), else preset_family."""
    return model if model == "acmr" else preset_family(variant)


def models_of(folders: list[Path], variants: dict[str, str]) -> list[Model]:
    """The (variant, market) groups of run folders that have ranks.json; `variants` maps a
    folder's name to its variant (reporting/runs.py's, or the folder name itself). Only the seeds
    that results.json lists count: ranks.json gets a seed's stage when the stage ends, results.json
    the seed when all its stages have (a seed still training, or diverged, has no last stage yet)."""

    grouped: dict[tuple[str, str], Model] = {}
    for folder in sorted(folders, key=lambda folder: start_time(folder.name)):
        ranks = load_ranks(folder)
        if not ranks or folder.name not in variants:
            continue
        finished = {run["seed"] for run in runs.read_json(folder / "results.json")["runs"]}
        ranks = {seed: entry for seed, entry in ranks.items() if seed in finished}
        config = runs.read_json(folder / "config.json")
        variant = variants[folder.name]
        key = (variant, config["target_market"])
        family = family_of(variant, config.get("model", "acmr"))
        model = grouped.setdefault(key, Model(variant, family, "-tuned-" in variant, config["target_market"], {}))
        model.ranks.update(ranks)  # folders in start-time order: the newest run of a seed counts
    return list(grouped.values())


def pairs_of(models: list[Model]) -> list[tuple[Model, Model]]:
    """(A, B) to compare in each market: every ACMR variant against every other model; each
    baseline against popularity; each tuned baseline against the untuned one of its family."""
    pairs = []
    for a in models:
        for b in models:
            if a is b or a.market != b.market:
                continue
            acmr_pair = a.family == "acmr" and b.family != "acmr"
            against_popularity = a.family not in ("acmr", "popularity") and b.family == "popularity"
            tuned_pair = a.tuned and not b.tuned and a.family == b.family != "acmr"
            if acmr_pair or against_popularity or tuned_pair:
                pairs.append((a, b))
    order = {m: i for i, m in enumerate(SPEC_MARKETS)}
    return sorted(pairs, key=lambda p: (p[0].family != "acmr", p[0].variant, order.get(p[0].market, 99),
                                        p[1].variant))


def interval(paired: Paired) -> str:
    return f"{paired.mean:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"


def p_value(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def comparison_lines(models: list[Model], variant: str | None = None) -> list[str]:
    """Markdown: the paired comparison of pairs_of(models) (of those whose A is `variant`, if
    given); a line saying what is missing."""
    lines = ["| A | B | market | seeds | users | HR@10 A - B [95% CI] | p | NDCG@10 A - B [95% CI] | p | "
             "NDCG@10 A - B per seed | A better / worse (NDCG@10) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = 0
    for a, b in pairs_of(models):
        if variant is not None and a.variant != variant:
            continue
        result = compare(a.ranks, b.ranks)
        if result is None:
            continue
        hr, ndcg = result.stats["HR@10"], result.stats["NDCG@10"]
        per_seed = " ".join(f"{d:+.3f}" for d in result.per_seed["NDCG@10"])
        lines.append(f"| {a.variant} | {b.variant} | {a.market} | {','.join(map(str, result.seeds))} | {hr.n} | "
                     f"{interval(hr)} | {p_value(hr.p)} | {interval(ndcg)} | {p_value(ndcg.p)} | {per_seed} | "
                     f"{ndcg.better} / {ndcg.worse} |")
        rows += 1
    if not rows:
        lines = ["No two runs here share test candidates and have per-user ranks (ranks.json)."]
    if not any(m.family == "acmr" for m in models):
        lines += ["", "No ACMR run here has per-user ranks (ranks.json, written by runs since it exists): "
                      "ACMR's paired comparison needs ACMR runs on the same markets and seeds."]
    return lines


# ---------------------------------------------------------------- the report's section

def comparison_section(folders: list[Path], results: pd.DataFrame) -> list[str]:
    """Markdown lines for report.md: the paired comparison of the runs of `folders` that have
    ranks.json ([] where none has). `results` is runs.collect's table (it names the variants)."""
    if not len(results):
        return []
    variants = dict(zip(results["folder"], results["variant"]))
    models = models_of([f for f in folders if f.name in variants], variants)
    if not models:
        return []
    return ["## Paired comparison over test users (reporting/paired.py)", "",
            "A - B of per-user test HR@10 and NDCG@10 after each model's last stage, on identical "
            "candidates (same market, seed and test-candidates SHA-256). A user is one unit: his "
            "differences are averaged over the seeds both models have, then the mean over users is given "
            "with a 95% t-interval and p of a two-sided Wilcoxon signed-rank test (users on whom A and B "
            "agree on average left out); beside them the mean difference on each seed.", "",
            *comparison_lines(models), ""]


def main(argv: list[str]) -> None:
    if not argv or "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        sys.exit(0 if argv else 2)

    folders = runs.find_run_folders([Path(arg) for arg in argv])
    results, _ = runs.collect(folders)
    print("\n".join(comparison_section(folders, results)))


if __name__ == "__main__":
    main(sys.argv[1:])
