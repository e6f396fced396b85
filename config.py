"""Every setting of the ACMR reproduction, in one place.

Edit the defaults below, or override any of them on the command line of
`train_model.py` / `data_loader.py` with `--key=value` (e.g. `--target_market=jp --seeds=1`).
The defaults reproduce the paper's protocol (SPEC.md in this repo documents it, with
the authors' quirks that are kept on purpose).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MARKETS = ("ca", "de", "fr", "in", "jp", "mx", "uk")  # sorted: this order fixes the market ids
STAGES = ("pretrain", "finetune")  # training on all markets, then on the target market
DATA_URL = "https://raw.githubusercontent.com/hamedrab/FOREC/main/DATA/proc_data/{market}_5core.txt"


@dataclass
class Config:
    # ---- what to run ----
    target_market: str = "in"  # one of ca de fr in jp mx uk, or "all" to run the seven in turn
    seeds: int = 5  # number of seeded runs; seeds 0 .. seeds-1, results are averaged over them
    first_seed: int = 0  # run seeds first_seed .. first_seed+seeds-1 instead (e.g. one seed per
    # process: the report merges the folders of one market and setting)
    device: str = "auto"  # "auto" (GPU when present, else CPU), "cpu", "cuda" or "cuda:N"
    num_threads: int = 0  # CPU threads for torch; 0 = torch's default (all cores)
    keep_freed_memory: bool = True  # glibc keeps freed memory for the next tensors instead of
    # returning it to the kernel (speed only; train_model.configure_host has the measurements)

    # ---- where things are ----
    data_dir: str = "data"  # the <market>_5core.txt files; else $XMREC_DIR; else downloaded here
    data_url: str = DATA_URL  # public source, {market} is replaced; files are checksum-verified
    log_dir: str = "log"  # one run folder <log_dir>/<target>-<timestamp>/ per target market

    # ---- model (SPEC section 4) ----
    model: str = "acmr"  # acmr, or a baseline of baselines.py: popularity, gmf, mlp, nmf
    market_embedding: str = "shared"  # ACMR's market-specific part: shared (one vector per market,
    # the paper's), none (ablation) or item (one vector per item and market, our extension)
    hidden_size: int = 32
    num_layers: int = 4
    num_heads: int = 8
    ff_size: int = 128
    dropout: float = 0.3
    max_history: int = 50  # longer histories are randomly subsampled to this many items
    history_repeats: bool = True  # a history lists an item once per training purchase, as the
    # authors' code does (SPEC 3.6); False = each distinct training item once

    # ---- training (SPEC section 5) ----
    stages: str = "pretrain+finetune"  # pre-train on all markets, then fine-tune on the target;
    # "pretrain" = all markets only (no fine-tuning), "finetune" = target market only
    lr: float = 1e-3
    weight_decay: float = 1e-7
    batch_size: int = 1024
    pretrain_epochs: int = 50  # cap on the epochs of pre-training
    finetune_epochs: int = 50  # cap on the epochs of fine-tuning
    patience: int = 3  # early-stopping budget of non-improving epochs
    num_train_negatives: int = 4  # training negatives per unit of train_negatives_per
    train_negatives_per: str = "distinct_item"  # a user gets num_train_negatives x his number of
    # distinct training items, as the authors' code (SPEC 3.5); "positive_row": x his training rows
    max_batches_per_epoch: int = 0  # 0 = all; a cap makes smoke tests fast (never in real runs)
    train_chunk_floats: int = 6_000_000  # a batch whose layer activations exceed this runs as
    # chunks (same gradient, bounded memory); see model.activation_floats
    bucket_pretrain_batches: bool = True  # pre-training batches group rows of similar history
    # length (~10x faster on CPU, SPEED.md; results within seed noise); False = uniform shuffling.
    # Both trim each batch to its longest history
    bucket_finetune_batches: bool = False  # the same for fine-tuning; the authors shuffle uniformly
    # (and bucketing saves nothing there: ~8 batches per epoch on in)
    cuda_graphs: bool = True  # on a GPU, replay each training step as a CUDA graph (speed only;
    # train_model.CudaGraphSteps); False = eager steps. No effect on CPU

    # ---- evaluation (SPEC section 6) ----
    num_eval_negatives: int = 99  # sampled negatives per held-out positive
    eval_batch_floats: int = 0  # activations of one layer in an evaluation forward pass,
    # sequences x tokens x (128 + 8 x tokens) (feed-forward and attention): bounds memory.
    # 0 = per device: 4 M on CPU (uk validation 3.95 s against 4.3 s at 2 M and 16 M),
    # 32 M on GPU (fewer, larger launches)

    # ---- protocol (SPEC section 7): defaults are the authors' behaviour ----
    eval_negative_pool: str = "global"  # "global": all seven markets' items; "target": the target's
    eval_mode: str = "sampled"  # "sampled": 1 + 99 candidates; "full": all target items
    split: str = "random"  # "random" leave-one-out in shuffled order; "temporal": latest by date
    history_includes_candidate: bool = True  # a training positive's own item is in its history
    resample_train_negatives: bool = False  # redraw the training negatives every epoch
    patience_resets: bool = False  # an improvement resets the early-stopping budget
    held_out_in_negatives: bool = True  # a user's test item may be a negative of his valid item
    # and vice versa (the authors' code does not prevent it)


# Named settings for the models and ablations that sweep.py runs and the report names
PRESETS: dict[str, dict[str, str]] = {
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


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the key and what is allowed."""


CHOICES = {
    "model": ("acmr", "popularity", "gmf", "mlp", "nmf"),
    "market_embedding": ("shared", "none", "item"),
    "stages": ("pretrain+finetune", "pretrain", "finetune"),
    "train_negatives_per": ("distinct_item", "positive_row"),
}

# Settings renamed or added since runs were first committed: what a config.json or command line
# without them meant. `num_epochs` capped both stages; `bucket_batches` bucketed both stages.
RENAMED = {"num_epochs": ("pretrain_epochs", "finetune_epochs"),
           "bucket_batches": ("bucket_pretrain_batches", "bucket_finetune_batches")}
BEFORE_ADDED = {"history_repeats": False, "train_negatives_per": "positive_row"}


def upgrade_saved(saved: dict[str, object]) -> dict[str, object]:
    """A config.json's settings in today's names. A file written before a setting existed
    meant that setting's behaviour of the time (BEFORE_ADDED, RENAMED), not today's default."""
    upgraded = dict(saved)
    for old, new_keys in RENAMED.items():
        if old in upgraded:
            value = upgraded.pop(old)
            upgraded.update({key: value for key in new_keys})
    for key, value in BEFORE_ADDED.items():
        upgraded.setdefault(key, value)
    return upgraded


def config_from_saved(saved: dict[str, object]) -> Config:
    """The Config of a run folder's config.json (upgrade_saved), validated."""
    config = Config(**upgrade_saved(saved))
    validate(config)
    return config
PROTOCOL_SETTINGS = ("eval_negative_pool", "eval_mode", "split", "history_includes_candidate",
                     "resample_train_negatives", "patience_resets", "held_out_in_negatives")  # SPEC section 7
PROTOCOL_CHOICES = {  # the sound variants are documented in PROTOCOL.md
    "eval_negative_pool": ("global", "target"),
    "eval_mode": ("sampled", "full"),
    "split": ("random", "temporal"),
}


def _parse_value(key: str, text: str, kind: type) -> object:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{key}: expected {kind.__name__}, got {text!r}") from None


def parse_overrides(args: list[str], config: Config | None = None,
                    extra: dict[str, type] | None = None) -> tuple[Config, dict[str, object]]:
    """Apply `--key=value` arguments to a Config (type-checked) and validate it.

    `extra` names additional keys a script accepts (e.g. `seed`, `export`); their parsed
    values are returned separately. Raises ConfigError on anything unknown or invalid.
    """
    config = dataclasses.replace(config) if config is not None else Config()
    types = {f.name: type(f.default) for f in dataclasses.fields(Config)}
    extra = extra or {}
    extras: dict[str, object] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument {arg!r}: expected --key=value")
        key, text = arg[2:].split("=", 1)
        if key in RENAMED:  # an old command line (a committed command.txt) still runs
            for new_key in RENAMED[key]:
                setattr(config, new_key, _parse_value(key, text, types[new_key]))
        elif key in types:
            setattr(config, key, _parse_value(key, text, types[key]))
        elif key in extra:
            extras[key] = _parse_value(key, text, extra[key])
        else:
            allowed = ", ".join(sorted([*types, *extra]))
            raise ConfigError(f"unknown setting --{key}; allowed: {allowed}")
    validate(config)
    return config, extras


def validate(config: Config) -> None:
    """Raise ConfigError (one line, naming the key and the allowed values) on a bad setting."""
    c = config
    if c.target_market not in (*MARKETS, "all"):
        raise ConfigError(f"target_market={c.target_market!r}: allowed {', '.join(MARKETS)} or all")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise ConfigError(f"device={c.device!r}: allowed auto, cpu, cuda, cuda:N")
    if "{market}" not in c.data_url:
        raise ConfigError(f"data_url={c.data_url!r}: must contain {{market}}")
    positive_ints = ("seeds", "hidden_size", "num_layers", "num_heads", "ff_size", "max_history",
                     "batch_size", "pretrain_epochs", "finetune_epochs", "patience", "num_train_negatives",
                     "num_eval_negatives", "train_chunk_floats")
    for key in positive_ints:
        if getattr(c, key) < 1:
            raise ConfigError(f"{key}={getattr(c, key)}: must be an integer >= 1")
    for key in ("first_seed", "num_threads", "max_batches_per_epoch", "eval_batch_floats"):
        if getattr(c, key) < 0:
            raise ConfigError(f"{key}={getattr(c, key)}: must be >= 0 (0 = default / no cap)")
    if c.hidden_size % c.num_heads:
        raise ConfigError(f"num_heads={c.num_heads}: must divide hidden_size={c.hidden_size}")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"dropout={c.dropout}: must be in [0, 1)")
    if not c.lr > 0:
        raise ConfigError(f"lr={c.lr}: must be > 0")
    if not c.weight_decay >= 0:
        raise ConfigError(f"weight_decay={c.weight_decay}: must be >= 0")
    for key, choices in {**CHOICES, **PROTOCOL_CHOICES}.items():
        if getattr(c, key) not in choices:
            raise ConfigError(f"{key}={getattr(c, key)!r}: allowed {', '.join(choices)}")


def active_stages(config: Config) -> tuple[str, ...]:
    """The training stages a run goes through, in order."""
    return tuple(config.stages.split("+"))


def target_markets(config: Config) -> list[str]:
    """The target markets a run covers, in order."""
    return list(MARKETS) if config.target_market == "all" else [config.target_market]
