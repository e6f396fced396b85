"""Hyperparameter search for ACMR and the baselines, on validation only, on Ray Tune.

    python -m tools.tune --models=gmf,mlp,nmf --markets=in,jp,mx --num_threads=1     # the committed search
    python -m tools.tune --models=gmf++,forec --markets=in,jp,mx --num_threads=1     # the cross-market models
    python -m tools.tune --models=acmr --markets=in,jp,mx --num_threads=1 --at_once=2  # ACMR, on the same terms
    python -m tools.tune --models=gmf --markets=in --trials=4 --out=log/tune_try     # a smaller search

For each (model, market): NUM_TRIALS settings drawn by Ray Tune's seeded random search
(BasicVariantGenerator, random_state=SEARCH_SEED: the same draws on every market) from
SEARCH_SPACE, one trial at a time (a one-CPU Ray instance, torch on one thread unless
--num_threads says otherwise), or --at_once=N trials of a market at once (an N-CPU instance;
every trial seeds its own generators, so its result does not depend on what runs beside it). A
trial trains the model's preset (plans/presets.py: GMF, MLP, NMF on the target market alone;
GMF++ on all seven markets; FOREC and ACMR on all seven, then on the target) with the fixed
settings (FIXED; CROSS_MARKET_FIXED in every stage of GMF++ and FOREC; ACMR_FIXED: conventional
early stopping, `patience` epochs without a better validation NDCG@5, reset by each improvement,
at most 100 epochs a stage, except ACMR's pre-training, which keeps the paper's cap of 50: a
pre-training epoch of ACMR costs about a hundred times a fine-tuning epoch) on the split,
training negatives and validation candidates of seed DATA_SEED, and scores the best validation
NDCG@5 of its last stage's epochs. It never scores the test candidates. The trial with the best
score is chosen (the earlier trial on a tie); its settings, less those equal to config.py's
defaults, are the preset `<model>-tuned-<market>` (plans/presets.py reads it from chosen.json),
whose test runs (seeds 0-2) are ordinary train_model.py runs.

Writes, in --out (default results/baselines/search): `<model>-<market>.json` (the space, seed
and budget, every trial's settings, validation score, epochs and validation curve, and the
choice), `trials.csv` (every trial of every search so far, one row each) and `chosen.json`
(model -> market -> the chosen preset's settings).
Ray Tune's own files go to log/tune (not committed). Each finished trial is also kept in
`--out`/trials/ (its settings and result): a search that is stopped and started again draws the
same settings (the seeded search) and takes the finished trials from there instead of training
them again; the trial it was in continues from its last finished epoch (its checkpoint, after
every epoch, in `--out`/trials/unfinished/, not committed), so an interrupted search loses at
most one epoch. Run the same command again to go on. Within a search, a trial that fails (its
Ray worker lost or killed) is started again, up to TRIAL_RETRIES times, from its checkpoint.

Not searched: `num_train_negatives`. The training negatives are drawn from the same seeded
generator before the evaluation candidates (data_loader.build_dataset), so another number of
training negatives draws other candidates (tests/test_tune.py checks it): the models would not
be compared on the same candidates. The batch size (1024, FOREC's and ACMR's) is not searched
either.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from config import (
    REPO,
    RUN_ONLY_SETTINGS,
    Config,
    ConfigError,
    active_stages,
    market_names,
    parse_overrides,
    run_command,
    validate,
)
from data_loader import DataError, build_dataset, check_data, load_markets
from plans.presets import (
    PRESETS,
    SEARCH_DIR,
    STOPPED_AS_NCF,
    TRAINED_AS_NCF,
    TRAINED_AS_NCF_IN_EVERY_STAGE,
)
from reporting.metrics import SELECTION_METRIC
from runfolder.checkpoints import Progress, load_checkpoint
from runfolder.files import (
    CHECKPOINT,
    WriteError,
    append_line,
    write_file,
    write_json,
    write_text,
)
from speed.host import configure_host, resolve_device
from train_model import (
    Diverged,
    keep_lines,
    next_stage,
    restore_training,
    save_progress,
    start_training,
    train_stage,
)

MODELS = ("gmf", "mlp", "nmf", "gmf++", "forec", "acmr")  # presets of plans/presets.py
CROSS_MARKET = ("gmf++", "forec")  # pre-trained on all seven markets (FOREC then fine-tuned)
SEARCH_SEED = 2024  # Ray Tune's random_state for every (model, market)
NUM_TRIALS = 8  # the budget: trials per (model, market), the same for every model and market
DATA_SEED = 0  # the split, negatives and validation candidates the trials train and score on
OBJECTIVE = f"valid {SELECTION_METRIC}"  # the best over a trial's epochs; the test candidates are never scored
UNFINISHED = "unfinished"  # in a search's trials/: the checkpoints of trials not yet finished
EPOCH_LOG = "epochs.log"  # in a trial's checkpoint folder: a line per epoch
TRIAL_RETRIES = 3  # a trial that fails (its worker lost, killed, out of memory) starts again, from its checkpoint
CURVE = f"valid_{SELECTION_METRIC}_curve"  # a trial's validation SELECTION_METRIC after each epoch
# every trial: the NCF paper's initialisation (He et al. 2017: N(0, 0.01)), conventional early
# stopping, enough epochs, the target market alone
FIXED = {"stages": "finetune", **TRAINED_AS_NCF}
# the cross-market models: the same in each of their stages, pre-training included
CROSS_MARKET_FIXED = TRAINED_AS_NCF_IN_EVERY_STAGE
# ACMR: the same early stopping; its architecture stays the paper's (config.py's defaults)
ACMR_FIXED = {**STOPPED_AS_NCF, "pretrain_epochs": 50}
# (kind, arguments): loguniform (low, high) or choice (values); the NCF paper's grids: lr 1e-4 ..
# 5e-3, factors 8 .. 64, 4 negatives; FOREC: lr 5e-3 (GMF) and 1e-2 (MLP, NMF), weight decay 1e-7
COMMON_SPACE = {"lr": ("loguniform", (1e-4, 3e-2)), "embedding_size": ("choice", (8, 16, 32, 64)),
                "weight_decay": ("choice", (0.0, 1e-7, 1e-6, 1e-5, 1e-4))}
LAYERS = ("choice", ("32,16,8", "64,32,16,8", "128,64,32", "256,128,64"))
SEARCH_SPACE = {"gmf": COMMON_SPACE, "mlp": {**COMMON_SPACE, "mlp_layers": LAYERS},
                "nmf": {**COMMON_SPACE, "mlp_layers": LAYERS}, "gmf++": COMMON_SPACE,
                "forec": {**COMMON_SPACE, "mlp_layers": LAYERS},
                # ACMR's own: Adam's lr around the paper's 1e-3, dropout around its 0.3
                "acmr": {"lr": ("loguniform", (1e-4, 1e-2)), "dropout": ("choice", (0.1, 0.2, 0.3, 0.4, 0.5)),
                         "weight_decay": COMMON_SPACE["weight_decay"]}}


def fixed_settings(model: str) -> dict:
    """The settings every trial of `model` trains with (FIXED, CROSS_MARKET_FIXED or ACMR_FIXED)."""
    if model == "acmr":
        return ACMR_FIXED
    return CROSS_MARKET_FIXED if model in CROSS_MARKET else FIXED


def space_text(model: str) -> str:
    """The search space of `model` in words, e.g. `lr log-uniform in [0.0001, 0.03]; ...`."""
    parts = []
    for key, (kind, args) in SEARCH_SPACE[model].items():
        parts.append(f"{key} log-uniform in [{args[0]:g}, {args[1]:g}]" if kind == "loguniform"
                     else f"{key} one of {', '.join(map(str, args))}")
    return "; ".join(parts)


def ray_space(model: str) -> dict:
    from ray import tune

    make = {"loguniform": lambda args: tune.loguniform(*args), "choice": lambda args: tune.choice(list(args))}
    return {key: make[kind](args) for key, (kind, args) in SEARCH_SPACE[model].items()}


# ---------------------------------------------------------------- one trial

def validation_run(config: Config, frames: dict[str, pd.DataFrame], seed: int = DATA_SEED,
                   checkpoint_dir: Path | None = None) -> dict:
    """Train `config`'s model through its stages (the target market alone, or all markets and
    then the target) with train_model.train_stage, as train_model.run_seed does (same
    generators, batches, early stopping, each stage from the previous one's best epoch; eager
    steps, no CUDA graphs), scoring only the validation candidates after each epoch. Returns the
    best validation NDCG@5 of the last stage (OBJECTIVE), the validation metrics at that epoch,
    the epochs run (all stages) and the curve of validation NDCG@5 (all stages, in order).

    With `checkpoint_dir`: a run's checkpoint there after every epoch and stage (train_model.
    save_progress), and a trial that finds one continues from it exactly, as --resume does; a
    line per epoch in its EPOCH_LOG. The caller deletes the folder once the result is kept.

    A trial that diverges (train_model.Diverged) ends there: the epochs so far count, the one
    that diverged as None in the curve; one that ends before its last stage scores 0."""

    if config.resample_train_negatives:
        raise ConfigError("a search trial draws its training negatives once (resample_train_negatives=false)")
    configure_host(config)
    device = resolve_device(config.device)
    training = start_training(build_dataset(frames, config.target_market, seed, config), config, device, seed)
    stages = active_stages(config)
    progress = Progress(seed=seed, stage=stages[0], seed_result={"curve": [], "valid_at_best": {}, "seconds": 0.0})
    if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT).is_file():
        checkpoint = load_checkpoint(checkpoint_dir, config)
        progress = Progress(**checkpoint["progress"])
        restore_training(training, checkpoint)
        keep_lines(checkpoint_dir / EPOCH_LOG, len(progress.seed_result["curve"]))  # those of the epochs it has
    trial, started = progress.seed_result, time.perf_counter() - progress.seed_result["seconds"]

    def save() -> None:
        if checkpoint_dir is not None:
            trial["seconds"] = time.perf_counter() - started
            save_progress(checkpoint_dir, training, progress)

    def record(epoch: dict) -> None:
        trial["curve"].append(round(epoch["valid"][SELECTION_METRIC], 6))
        if epoch["epoch"] == progress.best_epoch:
            trial["valid_at_best"][progress.stage] = epoch["valid"]
        if checkpoint_dir is not None:  # progress to read while it trains
            append_line(checkpoint_dir / EPOCH_LOG, f"{epoch['stage']} epoch {epoch['epoch']}: valid {SELECTION_METRIC} "
                        f"{epoch['valid'][SELECTION_METRIC]:.4f} (best {progress.best_score:.4f}, epoch "
                        f"{progress.best_epoch}), {epoch['seconds']:.0f} s")
        save()

    try:
        for stage in stages[stages.index(progress.stage):]:
            train_stage(training, progress, record)
            if stage != stages[-1]:  # the next stage starts from these weights with a fresh budget
                next_stage(progress, stages[stages.index(stage) + 1])
                save()
    except Diverged:
        trial["curve"] += [None] * (progress.epochs_trained - len(trial["curve"]))  # the epoch that diverged, if one did
        if progress.stage != stages[-1]:
            next_stage(progress, stages[-1])
    return {OBJECTIVE: progress.best_score, "best_epoch": progress.best_epoch, "epochs": len(trial["curve"]),
            "valid_at_best_epoch": trial["valid_at_best"].get(stages[-1], {}),
            "seconds": round(time.perf_counter() - started, 1), CURVE: trial["curve"]}


def trial_settings(model: str, market: str, sampled: dict, base: dict) -> dict:
    """A trial's settings: the model's preset and the market, fixed_settings, the base (settings
    given on the command line, which may replace the fixed ones), the sampled values."""
    return {**PRESETS[model], "target_market": market, **fixed_settings(model), **base, **sampled}


def real_objective(settings: dict, frames: dict[str, pd.DataFrame], checkpoint_dir: Path | None) -> dict:
    config = dataclasses.replace(Config(), **settings)
    validate(config)
    return validation_run(config, frames, checkpoint_dir=checkpoint_dir)


def result_settings(settings: dict) -> dict:
    """A trial's settings less those that say where or how fast it runs."""
    return {k: v for k, v in sorted(settings.items()) if k not in RUN_ONLY_SETTINGS}


def trial_name(model: str, settings: dict) -> str:
    """`<model>-<market>-<hash of result_settings>`: a trial's file in trials/ and its folder in
    trials/unfinished/."""
    digest = hashlib.sha256(json.dumps(result_settings(settings)).encode()).hexdigest()[:16]
    return f"{model}-{settings['target_market']}-{digest}"


def finished_or_run(model: str, settings: dict, frames: dict[str, pd.DataFrame], objective: Callable, folder: Path | None) -> dict:
    """The trial's result: from `folder` where this trial has finished before, else trained now
    and kept there, in `<model>-<market>-<hash of result_settings>.json`. A kept trial is used
    only if its settings are exactly these. While it trains, its checkpoint is in
    `folder`/unfinished/ under the same name (not committed), so that a trial that is stopped
    continues from its last epoch when the search runs again."""
    if folder is None:
        return objective(settings, frames, None)
    kept_settings = result_settings(settings)
    path = folder / f"{trial_name(model, settings)}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept["settings"] == kept_settings:
            return kept["result"]
    unfinished = folder / UNFINISHED / path.stem
    unfinished.mkdir(parents=True, exist_ok=True)
    result = objective(settings, frames, unfinished)
    write_json(path, {"settings": kept_settings, "result": result})
    shutil.rmtree(unfinished)
    return result


def trainable(sampled: dict, model: str, market: str, base: dict, frames: dict[str, pd.DataFrame], objective: Callable,
              trials_dir: Path | None = None) -> None:
    """Ray Tune's function trainable: one trial (or its kept result), one report."""
    from ray import tune

    tune.report(finished_or_run(model, trial_settings(model, market, sampled, base), frames, objective, trials_dir))


# ---------------------------------------------------------------- the search

def trial_lines(model: str, market: str, trials: int, base: dict, folder: Path) -> object:
    """A Ray Tune callback that prints a line as each trial starts (its settings, where its epochs
    are logged) and as it ends (its score): a trial of ACMR is hours at one thread."""
    from ray import tune

    def number(trial) -> str:
        return f"{model} {market} trial {int(trial.trial_id.rsplit('_', 1)[-1]) + 1} of {trials}"

    class TrialLines(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            log = folder / UNFINISHED / trial_name(model, trial_settings(model, market, trial.config, base)) / EPOCH_LOG
            print(f"{number(trial)}: {trial.config}; its epochs, while it trains: {log}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            result = trial.last_result
            print(f"{number(trial)}: {OBJECTIVE} {result[OBJECTIVE]:.4f} after {result['epochs']} epochs, "
                  f"{result['seconds']:.0f} s", flush=True)

    return TrialLines()


def choose(trials: list[dict]) -> dict:
    """The trial with the best OBJECTIVE (the first of equals). Reads nothing but validation."""
    return max(trials, key=lambda trial: (trial["result"][OBJECTIVE], -trial["trial"]))


def preset_settings(model: str, settings: dict) -> dict:
    """The chosen trial's settings as a preset: the searched and fixed ones that differ from
    config.py's defaults (the report names a run by the preset whose settings it has)."""

    defaults = dataclasses.asdict(Config())
    keys = [*fixed_settings(model), *SEARCH_SPACE[model]]
    return {**PRESETS[model], **{k: settings[k] for k in keys if settings[k] != defaults[k]}}


def run_search(model: str, market: str, out: Path, *, trials: int = NUM_TRIALS, seed: int = SEARCH_SEED,
               at_once: int = 1, base: dict | None = None, frames: dict[str, pd.DataFrame] | None = None, objective: Callable = real_objective,
               storage: Path = REPO / "log" / "tune") -> dict:
    """One Ray Tune search (ray must be initialised); writes out/<model>-<market>.json and returns
    its record. Finished trials are kept in out/trials/ and not trained again."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    base = base or {}
    runner = tune.with_parameters(trainable, model=model, market=market, base=base, frames=frames,
                                  objective=objective, trials_dir=(out / "trials").resolve())
    tuner = tune.Tuner(
        tune.with_resources(runner, {"cpu": 1}), param_space=ray_space(model),
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", num_samples=trials, max_concurrent_trials=at_once,
                                    search_alg=BasicVariantGenerator(random_state=seed)),
        run_config=tune.RunConfig(name=f"{model}-{market}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(storage.resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
                                  callbacks=[trial_lines(model, market, trials, base, (out / "trials").resolve())]))
    grid = tuner.fit()
    records = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"{model} {market}: a trial failed: {result.error}")
        records.append({"trial_id": result.metrics["trial_id"], "sampled": result.config,
                        "settings": trial_settings(model, market, result.config, base),
                        "result": {k: v for k, v in result.metrics.items() if k in RESULT_KEYS}})
    records.sort(key=lambda r: r["trial_id"])  # Ray numbers its trials in the order it drew them
    for number, record in enumerate(records):
        record["trial"] = number
    chosen = choose(records)
    record = {"model": model, "market": market, "search": "Ray Tune random search (BasicVariantGenerator)",
              "search_seed": seed, "trials": trials, "data_seed": DATA_SEED, "objective": OBJECTIVE,
              "space": space_text(model), "fixed": {**fixed_settings(model), **base}, "chosen_trial": chosen["trial"],
              "chosen": preset_settings(model, chosen["settings"]), "all_trials": records}
    write_text(out / f"{model}-{market}.json", json.dumps(record, indent=1) + "\n")
    return record


RESULT_KEYS = (OBJECTIVE, "best_epoch", "epochs", "valid_at_best_epoch", "seconds", CURVE)


def write_tables(out: Path) -> dict:
    """trials.csv and chosen.json of every search record in `out`; returns chosen.json's content."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*-*.json")) if path.name != "chosen.json"]
    chosen: dict[str, dict] = {}
    keys = sorted({k for r in records for k in SEARCH_SPACE[r["model"]]})
    rows = [["model", "market", "trial", *keys, OBJECTIVE, "best_epoch", "epochs", "seconds", "chosen"]]
    for r in records:
        for trial in r["all_trials"]:
            rows.append([r["model"], r["market"], trial["trial"], *(trial["sampled"].get(k, "") for k in keys),
                         f"{trial['result'][OBJECTIVE]:.6f}", trial["result"]["best_epoch"],
                         trial["result"]["epochs"], trial["result"]["seconds"],
                         int(trial["trial"] == r["chosen_trial"])])
        chosen.setdefault(r["model"], {})[r["market"]] = r["chosen"]

    def write_rows(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    write_file(out / "trials.csv", write_rows)
    write_text(out / "chosen.json", json.dumps(chosen, indent=1) + "\n")
    return chosen


NOT_GIVEN = {  # settings the search sets itself, and why
    "target_market": "the markets searched are --markets=M,M",
    "model": "the models searched are --models=M,M",
    "first_seed": f"every trial trains and validates on seed {DATA_SEED}'s split",
    "seeds": f"every trial trains and validates on seed {DATA_SEED}'s split",
    "init_weights": "every trial starts from a fresh initialisation",
    "resample_train_negatives": "a search trial draws its training negatives once",
}


def main(argv: list[str]) -> None:
    options = {"models": ",".join(MODELS), "markets": "in,jp,mx", "trials": str(NUM_TRIALS), "at_once": "1",
               "out": str(SEARCH_DIR)}
    settings = []
    for arg in argv:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else None
        if key in options:
            options[key] = arg.split("=", 1)[1]
        else:
            settings.append(arg)
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    for key in ("trials", "at_once"):
        if not options[key].isdigit() or int(options[key]) < 1:
            raise ConfigError(f"--{key}={options[key]}: expected an integer >= 1")
    config, _ = parse_overrides(settings)  # type-checked; only the given ones go to the trials
    base = {k: v for k, v in dataclasses.asdict(config).items() if v != getattr(Config(), k)}
    given = {arg[2:].split("=", 1)[0] for arg in settings if arg.startswith("--")}
    for key, why in NOT_GIVEN.items():
        if key in given:
            raise ConfigError(f"--{key}: {why}")
    base.setdefault("num_threads", 1)
    models, markets = options["models"].split(","), options["markets"].split(",")
    for name, allowed, chosen in (("models", MODELS, models), ("markets", market_names(config), markets)):
        if not set(chosen) <= set(allowed):
            raise ConfigError(f"--{name}={','.join(chosen)}: allowed {', '.join(allowed)}")
    resolve_device(config.device)
    frames = load_markets(config)
    for model in models:  # what a trial would otherwise fail at, inside Ray (the market only picks the target)
        trial = dataclasses.replace(Config(), **trial_settings(model, markets[0], {}, base))
        validate(trial)
        check_data(frames, markets, trial)
    import ray

    out = Path(options["out"])
    ray.init(address="local", num_cpus=int(options["at_once"]), include_dashboard=False, log_to_driver=False, logging_level="error",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        for model in models:
            for market in markets:
                started = time.time()
                record = run_search(model, market, out, trials=int(options["trials"]), at_once=int(options["at_once"]),
                                    base=base, frames=frames)
                best = record["all_trials"][record["chosen_trial"]]["result"][OBJECTIVE]
                print(f"{model} {market}: trial {record['chosen_trial']} of {record['trials']} chosen, "
                      f"{OBJECTIVE} {best:.4f}, {time.time() - started:.0f} s: {record['chosen']}", flush=True)
    finally:
        ray.shutdown()
    write_tables(out)
    print(f"wrote {out}/trials.csv and chosen.json (plans/presets.py reads the one in {SEARCH_DIR})")


if __name__ == "__main__":
    run_command(main, (ConfigError, DataError, WriteError))
