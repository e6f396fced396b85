"""The authors' released ACMR weights, scored by our code on our split.

The authors published one trained checkpoint per target market and stage
(`checkpoint/ACMR_<market>_<stage>.pt` in github.com/laowangzi/ACMR). This tool loads one into
our `model.ACMR` without changing a weight (runfolder/authors_release.py), and scores our seed's validation and test candidates with it through the project's evaluation
(`evaluate.score_candidates`), the item and market ids of our dataset translated into the
checkpoint's rows (`authors_order`, `to_checkpoint_rows`):

    python -m tools.authors_weights --target_market=in --stage=finetune --seed=0 [--out=FILE] [--key=value ...]

The checkpoint is looked for in `--authors_dir` (default $ACMR_AUTHORS_RELEASE), then in
`--cache_dir` (default data/authors_checkpoints/), else downloaded there from `--checkpoint_url`;
it is checked against data/AUTHORS_CHECKPOINTS.sha256 before use. Any setting of config.py
applies to our split and candidates (e.g. `--eval_mode=full`); the model's sizes come from the
checkpoint.

Where this differs from the authors' code: their model applies the sigmoid inside and ranks on
probabilities, ours ranks on the logits (the same order, no ties from a saturated sigmoid); their
evaluation re-draws the 50-item subsample of a long history at every pass, ours draws it once per
seed (docs/SPEC.md 3.6). Caution: their checkpoint was trained on a random split of their own, so most
of our held-out items were among its training positives; its numbers here are not a held-out test
(`expected_training_share` estimates how many).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from config import (
    ELECTRONICS_MARKETS,
    REPO,
    STAGES,
    Config,
    ConfigError,
    market_names,
    parse_overrides,
    run_command,
    target_markets,
)
from data_loader import DataError, DeviceData, build_dataset, load_markets
from evaluate import ranking_metrics, score_candidates
from reporting.metrics import METRICS
from runfolder.authors_release import (
    CACHE_DIR,
    CHECKPOINT_URL,
    authors_model,
    expected_checksums,
    expected_training_share,
    locate_checkpoint,
    read_checkpoint,
    to_checkpoint_rows,
)
from runfolder.files import write_json
from speed.host import configure_host, resolve_device

LOGGED_RUNS = REPO / "data" / "authors_logged_runs.json"


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
    run_command(main, (ConfigError, DataError))
