"""Named settings: the models and ablations that a plan line (tools/sweep.py) runs and the report
names a run by (reporting/runs.best_preset), each the settings that differ from config.py's defaults.

    from plans.presets import PRESETS
    config = dataclasses.replace(Config(), **PRESETS["gmf-tuned-in"])

The tuned presets are read from the search's choices, results/baselines/search/chosen.json
(written by tools/tune.py, model -> market -> the chosen settings). Importing this module loads
neither torch nor the training side.
"""
from __future__ import annotations

import json
from pathlib import Path

from config import REPO

SEARCH_DIR = REPO / "results" / "baselines" / "search"  # tools/tune.py's records and chosen.json

PRESETS: dict[str, dict[str, object]] = {
    "acmr": {},
    "acmr-no-market-embedding": {"market_embedding": "none"},
    "acmr-no-pretraining": {"stages": "finetune"},
    "acmr-no-finetuning": {"stages": "pretrain"},  # = acmr's results after pre-training
    "acmr-item-market-embedding": {"market_embedding": "item"},
    "popularity": {"model": "popularity", "stages": "finetune"},
    "gmf": {"model": "gmf", "stages": "finetune"},
    "mlp": {"model": "mlp", "stages": "finetune"},
    "nmf": {"model": "nmf", "stages": "finetune"},
    "gmf++": {"model": "gmf", "stages": "pretrain"},
    "nmf++": {"model": "nmf", "stages": "pretrain"},
    "forec": {"model": "nmf"},  # NMF pre-trained on all markets, fine-tuned on the target
}
PRETRAINED_AS = {"forec": "nmf++"}  # the preset whose results after pre-training are another's

# How tools/tune.py trains every baseline: conventional early stopping (`patience` epochs without a
# better validation NDCG@5, reset by each improvement; at most 100 fine-tuning epochs) and the NCF
# paper's initialisation (He et al. 2017: N(0, 0.01)); GMF++ and FOREC so in both stages. ACMR's
# search keeps only the early stopping (tools/tune.py's ACMR_FIXED).
STOPPED_AS_NCF = {"patience_resets": True, "patience": 10, "finetune_epochs": 100}
TRAINED_AS_NCF = {"embedding_init_std": 0.01, **STOPPED_AS_NCF}
TRAINED_AS_NCF_IN_EVERY_STAGE = {**TRAINED_AS_NCF, "pretrain_epochs": 100}


def read_tuned(path: Path = SEARCH_DIR / "chosen.json") -> dict[tuple[str, str], dict[str, object]]:
    """(model, market) -> the settings tools/tune.py chose on validation (chosen.json): the model's
    preset with the fixed and searched settings that differ from config.py's defaults. Empty
    without the file (a copy of the code without results/): then there are no tuned presets."""
    if not path.is_file():
        return {}
    chosen = json.loads(path.read_text())
    return {(model, market): settings for model, markets in chosen.items() for market, settings in markets.items()}


def tuned_names(tuned: dict[tuple[str, str], dict[str, object]]) -> dict[tuple[str, str], str]:
    """(model, market) -> its preset's name, `<model>-tuned-<market>`; markets whose searches chose
    the same settings share one, e.g. `mlp-tuned-jp+mx`."""
    names = {}
    for model, market in tuned:
        same = sorted(other_market for (other_model, other_market), settings in tuned.items()
                      if other_model == model and settings == tuned[(model, market)])
        names[(model, market)] = f"{model}-tuned-{'+'.join(same)}"
    return names


TUNED = read_tuned()
TUNED_NAMES = tuned_names(TUNED)


UNTUNED = tuple(PRESETS)  # the tuned presets follow, in the order of their models here, market by market
PRESETS.update({TUNED_NAMES[(model, market)]: {**PRESETS[model], **TUNED[(model, market)]}
                for model, market in sorted(TUNED, key=lambda key: (UNTUNED.index(key[0]), key[1]))})

# The cross-market baselines with FOREC's code's settings instead of a search (Adam at lr 5e-3 for
# GMF, 1e-2 for NMF; weight decay 1e-7 and the sizes are config.py's defaults), NCF's initialisation
# and conventional early stopping in both stages, beside their tuned presets above. GMF++ is GMF
# on all markets; FOREC is NMF on all markets, then fine-tuned (its results after pre-training
# are NMF++'s).
PRESETS.update({"gmf++-trained": {**PRESETS["gmf++"], **TRAINED_AS_NCF_IN_EVERY_STAGE, "lr": 5e-3},
                "forec-trained": {**PRESETS["forec"], **TRAINED_AS_NCF_IN_EVERY_STAGE, "lr": 1e-2}})
