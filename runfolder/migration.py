"""A run folder's config.json from an older version, read in the current settings' names.

    config = config_from_saved(json.loads((folder / "config.json").read_text()))

A file written before a setting existed meant that setting's behaviour of the time, not config.py's
default; a renamed setting (config.RENAMED, which also keeps old command lines running) takes its
new names. Imports config only: reporting reads old folders through it without torch.
"""
from __future__ import annotations

import dataclasses

from config import ELECTRONICS_MARKETS, RENAMED, Config, ConfigError, validate

# Settings added since runs were first committed: what a config.json without them meant.
# A new setting needs its entry here (tests/test_config.py reads every committed config.json).
BEFORE_ADDED = {"data_markets": ",".join(ELECTRONICS_MARKETS), "first_seed": 0, "model": "acmr",
                "market_embedding": "shared", "stages": "pretrain+finetune",
                "held_out_in_negatives": True, "history_repeats": False, "train_negatives_per": "positive_row",
                "embedding_size": 8, "mlp_layers": "64,32,16,8", "embedding_init_std": 1.0,
                "init_weights": ""}


def upgrade_saved(saved: dict[str, object]) -> dict[str, object]:
    """A config.json's settings in the current names. A file written before a setting existed
    meant that setting's behaviour of the time (BEFORE_ADDED, RENAMED), not config.py's default."""
    upgraded = dict(saved)
    for old, new_keys in RENAMED.items():
        if old in upgraded:
            value = upgraded.pop(old)
            upgraded.update({key: value for key in new_keys})
    for key, value in BEFORE_ADDED.items():
        upgraded.setdefault(key, value)
    return upgraded


def config_from_saved(saved: dict[str, object]) -> Config:
    """The Config of a run folder's config.json (upgrade_saved), validated. A setting that this
    version does not know is a ConfigError that names it."""
    upgraded = upgrade_saved(saved)
    unknown = sorted(set(upgraded) - {field.name for field in dataclasses.fields(Config)})
    if unknown:
        several = len(unknown) > 1
        raise ConfigError(f"setting{'s' if several else ''} {', '.join(map(repr, unknown))} unknown to this "
                          f"version of the program: the run folder comes from another version (one that has "
                          f"{'them' if several else 'it'}): resume it with that version")
    config = Config(**upgraded)
    validate(config)
    return config
