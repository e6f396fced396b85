"""Run several models and ablations on several markets and seeds, then build the report.

    python sweep.py --models=acmr,popularity,gmf,nmf,forec --markets=in,jp,mx --seeds=3
    python sweep.py --models=gmf,nmf --markets=in --seeds=3 --log_dir=log/sweep --num_epochs=20

Models are the presets of config.PRESETS; every other --key=value goes to train_model.py for
all runs. Each (model, market) gets its own run folder under --log_dir (default log/sweep),
all on the same seeds, hence the same splits and candidates; the report (evaluate.py report)
is written there at the end, one table row per model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import report
import train_model
from config import MARKETS, PRESETS, ConfigError


def main(argv: list[str]) -> None:
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    models = options.pop("models", "acmr").split(",")
    markets = options.pop("markets", "in").split(",")
    log_dir = options.setdefault("log_dir", "log/sweep")
    for name, allowed in (("model", PRESETS), ("market", MARKETS)):
        unknown = [v for v in (models if name == "model" else markets) if v not in allowed]
        if unknown:
            raise ConfigError(f"unknown {name} {unknown[0]!r}; allowed: {', '.join(allowed)}")
    passthrough = [f"--{k}={v}" for k, v in options.items()]
    for model in models:
        for market in markets:
            settings = [f"--{k}={v}" for k, v in PRESETS[model].items()]
            print(f"== {model} on {market}: python train_model.py "
                  + " ".join([*settings, f"--target_market={market}", *passthrough]), flush=True)
            train_model.main([*settings, f"--target_market={market}", *passthrough])
    path = report.build_report([Path(log_dir)], Path(log_dir), "python sweep.py " + " ".join(argv))
    print(f"report: {path}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as error:
        sys.exit(f"error: {error}")
