"""Every setting of the ACMR reproduction, in one place.

Edit the defaults below, or override any of them on the command line of
`train_model.py` / `data_loader.py` with `--key=value` (e.g. `--target_market=jp --seeds=1`);
`--help` lists them, from the fields below. The defaults reproduce the paper's protocol
(docs/SPEC.md in this repo documents it, with the authors' quirks that are kept on purpose).
The named combinations of settings (the models, ablations and tuned baselines: gmf, forec,
gmf-tuned-in, ...) are plans/presets.py's; an older run folder's config.json is read by
runfolder/migration.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent
# The markets of the XMarket Electronics release (data/SHA256SUMS holds their files' checksums):
# data_markets' default, and the only markets of docs/SPEC.md, the authors' numbers and their weights
ELECTRONICS_MARKETS = ("ca", "de", "fr", "in", "jp", "mx", "uk")
STAGES = ("pretrain", "finetune")  # training on all markets, then on the target market
DATA_URL = "https://raw.githubusercontent.com/hamedrab/FOREC/main/DATA/proc_data/{market}_5core.txt"


EXPERIMENT, SPEED, SELECTION = "experiment", "speed", "selection"  # the kinds of settings:
# what changes results; where and how fast things run (never results, may change on --resume);
# which markets and seeds to run


def setting(default: Any, help_line: str, kind: str = EXPERIMENT) -> Any:
    """A Config field: its default, its line of --help, and its kind."""
    return dataclasses.field(default=default, metadata={"help": help_line, "kind": kind})


@dataclass
class Config:
    # ---- what to run ----
    target_market: str = setting("in", "one of data_markets, or all to run each of them in turn", SELECTION)
    data_markets: str = setting(",".join(ELECTRONICS_MARKETS), "the markets read from data_dir, comma separated "
                                "(pre-training uses them all); market ids follow their names' sorted order")
    seeds: int = setting(5, "number of seeded runs; seeds first_seed .. first_seed+seeds-1, results are "
                            "averaged over them", SELECTION)
    first_seed: int = setting(0, "the first seed (e.g. one seed per process: the report merges the folders "
                                 "of one market and setting)", SELECTION)
    device: str = setting("auto", "auto (GPU when present, else CPU), cpu, cuda or cuda:N", SPEED)
    num_threads: int = setting(0, "CPU threads for torch; 0 = torch's default (all cores)", SPEED)
    keep_freed_memory: bool = setting(True, "glibc keeps freed memory for the next tensors instead of "
                                            "returning it to the kernel (speed/host.py's configure_host)", SPEED)

    # ---- where things are ----
    data_dir: str = setting("data", "folder of the market files (data_file); else $XMREC_DIR; else the XMarket "
                                    "Electronics files are downloaded here. The default `data` is the "
                                    "repository's data/ wherever you run from; any other relative path is "
                                    "relative to the current folder", SPEED)
    data_file: str = setting("{market}_5core.txt", "each market's file name, {market} replaced by its name; "
                                                   "XMarket's format: a header `userId itemId rate date`, then "
                                                   "`USER ITEM RATING(1-5) YYYY-MM-DD` lines. Files of "
                                                   "data/SHA256SUMS are checksum-verified, others used as "
                                                   "they are", SPEED)
    data_url: str = setting(DATA_URL, "public source of the files, {market} is replaced; files are "
                                      "checksum-verified", SPEED)
    log_dir: str = setting("log", "one run folder <log_dir>/<label>-<target>-<seeds>-<timestamp>/ per "
                                  "target market (the label: the preset its settings match, "
                                  "reporting/runs.run_label). The default `log` is the repository's log/ "
                                  "wherever you run from; any other relative path is relative to the "
                                  "current folder", SPEED)

    # ---- model (SPEC section 4) ----
    model: str = setting("acmr", "acmr, or a baseline of baselines/models.py: popularity, gmf, mlp, nmf")
    market_embedding: str = setting("shared", "ACMR's market-specific part: shared (one vector per market, "
                                              "the paper's), none (ablation) or item (one vector per item "
                                              "and market, our extension)")
    hidden_size: int = setting(32, "width of the item and market embeddings and of the encoder")
    num_layers: int = setting(4, "encoder layers")
    num_heads: int = setting(8, "attention heads; must divide hidden_size")
    ff_size: int = setting(128, "width of each layer's feed-forward part")
    dropout: float = setting(0.3, "dropout probability, in [0, 1)")
    max_history: int = setting(50, "longer histories are randomly subsampled to this many items")
    history_repeats: bool = setting(True, "a history lists an item once per training purchase, as the "
                                          "authors' code does (SPEC 3.6); false = each distinct training "
                                          "item once")
    embedding_size: int = setting(8, "GMF, MLP, NMF: width of the user and item embeddings (NMF: of each "
                                     "tower's)")
    mlp_layers: str = setting("64,32,16,8", "MLP and NMF's MLP tower: widths of the layers over the concatenated "
                                            "user and item embeddings, comma separated (FOREC's 16 -> 64 -> 32 "
                                            "-> 16 -> 8 at embedding_size 8)")
    embedding_init_std: float = setting(1.0, "GMF, MLP, NMF: their embeddings start normal with this std; 1 = "
                                             "torch's default (FOREC's code), 0.01 = the NCF paper's")

    # ---- training (SPEC section 5) ----
    stages: str = setting("pretrain+finetune", "pre-train on all markets, then fine-tune on the target; "
                                               "pretrain = all markets only, finetune = target market only")
    init_weights: str = setting("", "start each seed's model from these weights instead of a fresh "
                                    "initialisation: a run folder's weights file (a {seed} in the path is "
                                    "replaced by the seed) or authors:<market>:<stage>, the authors' "
                                    "released checkpoint; the model settings must match (runfolder/initial_weights.py)")
    lr: float = setting(1e-3, "Adam's learning rate")
    weight_decay: float = setting(1e-7, "Adam's weight decay")
    batch_size: int = setting(1024, "training rows per optimizer step")
    pretrain_epochs: int = setting(50, "cap on the epochs of pre-training")
    finetune_epochs: int = setting(50, "cap on the epochs of fine-tuning")
    patience: int = setting(3, "early-stopping budget of non-improving epochs")
    num_train_negatives: int = setting(4, "training negatives per unit of train_negatives_per")
    train_negatives_per: str = setting("distinct_item", "a user gets num_train_negatives x his number of "
                                                        "distinct training items, as the authors' code "
                                                        "(SPEC 3.5); positive_row: x his training rows")
    max_batches_per_epoch: int = setting(0, "0 = all; a cap makes smoke runs fast (never in real runs)")
    train_chunk_floats: int = setting(6_000_000, "a batch whose layer activations exceed this runs as "
                                                 "chunks (same gradient, bounded memory); see "
                                                 "model.activation_floats", SPEED)
    bucket_pretrain_batches: bool = setting(True, "pre-training batches group rows of similar history "
                                                  "length (~10x faster on CPU, docs/SPEED.md; results within "
                                                  "seed noise); false = uniform shuffling. Both trim each "
                                                  "batch to its longest history")
    bucket_finetune_batches: bool = setting(False, "the same for fine-tuning; the authors shuffle uniformly "
                                                   "(and bucketing saves nothing there: ~8 batches per "
                                                   "epoch on in)")
    cuda_graphs: bool = setting(True, "on a GPU, replay each training step as a CUDA graph "
                                      "(speed/cuda_graphs.py's CudaGraphSteps; other dropout masks, as another device "
                                      "draws); false = eager steps. No effect on CPU", SPEED)
    fast_kernels: bool = setting(True, "on CPU, ACMR's dropout, attention and evaluation layers run as "
                                       "compiled kernels (speed/cpu_kernels.py, docs/SPEED.md): the same results to "
                                       "float rounding, other dropout masks; false = plain torch everywhere "
                                       "(model.py), the reference path. No effect on GPU", SPEED)

    # ---- evaluation (SPEC section 6) ----
    num_eval_negatives: int = setting(99, "sampled negatives per held-out positive")
    eval_batch_floats: int = setting(0, "activations of one layer in an evaluation forward pass, sequences "
                                        "x tokens x (ff_size + num_heads x tokens): bounds memory. 0 = per device: "
                                        "4 M on CPU, 32 M on GPU", SPEED)
    # (uk validation on CPU: 3.95 s at 4 M against 4.3 s at 2 M and 16 M)

    # ---- protocol (SPEC section 7): defaults are the authors' behaviour ----
    eval_negative_pool: str = setting("global", "global: evaluation negatives from all markets' "
                                                "items; target: from the target's")
    eval_mode: str = setting("sampled", "sampled: 1 + num_eval_negatives candidates; full: all target "
                                        "items")
    split: str = setting("random", "random: leave-one-out in shuffled order; temporal: the latest by date")
    history_includes_candidate: bool = setting(True, "a training positive's own item is in its history")
    resample_train_negatives: bool = setting(False, "redraw the training negatives every epoch")
    patience_resets: bool = setting(False, "an improvement resets the early-stopping budget")
    held_out_in_negatives: bool = setting(True, "a user's test item may be a negative of his valid item "
                                                "and vice versa (the authors' code does not prevent it)")


RUN_ONLY_SETTINGS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["kind"] == SPEED)
SELECTION_SETTINGS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["kind"] == SELECTION)
KIND_TITLES = {SELECTION: "what to run",
               SPEED: "where and how fast it runs, and where the data files are (a --resume may change these): "
                      "the same computation up to the order of floating-point sums and, with fast_kernels or "
                      "cuda_graphs, the dropout masks' random stream; data files the project does not know are "
                      "used with a note, unchecked",
               EXPERIMENT: "what changes results (config.py's defaults are the paper's)"}
MAX_INT = 2**63 - 1  # integer settings, seeds included, are 64-bit in numpy and torch


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the key and what is allowed."""


CHOICES = {
    "model": ("acmr", "popularity", "gmf", "mlp", "nmf"),
    "market_embedding": ("shared", "none", "item"),
    "stages": ("pretrain+finetune", "pretrain", "finetune"),
    "train_negatives_per": ("distinct_item", "positive_row"),
}

# Settings renamed since runs were first committed: an old command line (a committed command.txt)
# or config.json (runfolder/migration.py) sets the new ones. `num_epochs` capped both stages;
# `bucket_batches` bucketed both stages.
RENAMED = {"num_epochs": ("pretrain_epochs", "finetune_epochs"),
           "bucket_batches": ("bucket_pretrain_batches", "bucket_finetune_batches")}

PROTOCOL_SETTINGS = ("eval_negative_pool", "eval_mode", "split", "history_includes_candidate",
                     "resample_train_negatives", "patience_resets", "held_out_in_negatives")  # SPEC section 7
PROTOCOL_CHOICES = {  # the sound variants are documented in docs/PROTOCOL.md
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


def help_text(extra: dict[str, type]) -> str:
    """--help: the running script's docstring, then every setting of Config with its default and
    its help line, by kind, then the script's own options (`extra`)."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)  # run as `python -m tools.sweep`: the module's name
    command = f"-m {spec.name}" if spec is not None else Path(sys.argv[0]).name
    lines = [(main.__doc__ or "").strip(), "",
             f"usage: python {command} [--key=value ...]   settings of config.py, defaults shown:"]
    for kind, title in KIND_TITLES.items():
        lines += ["", f"{title}:"]
        for f in dataclasses.fields(Config):
            if f.metadata["kind"] != kind:
                continue
            default = str(f.default).lower() if isinstance(f.default, bool) else f.default
            option = f"  --{f.name}={default}"
            if len(option) > 32:  # the help on the lines below
                lines.append(option)
                option = ""
            lines += textwrap.wrap(f.metadata["help"], 100, initial_indent=option.ljust(33),
                                   subsequent_indent=" " * 33)
    if extra:
        lines += ["", *textwrap.wrap(f"options of {command} (see above): " + ", ".join(
            f"--{key}={kind.__name__.upper()}" for key, kind in extra.items()), 100)]
    return "\n".join(lines)


def parse_overrides(args: list[str], config: Config | None = None,
                    extra: dict[str, type] | None = None) -> tuple[Config, dict[str, object]]:
    """Apply `--key=value` arguments to a Config (type-checked) and validate it.

    `extra` names additional keys a script accepts (e.g. `seed`, `export`); their parsed
    values are returned separately. Raises ConfigError on anything unknown or invalid.
    `-h` or `--help` prints help_text and exits.
    """
    config = dataclasses.replace(config) if config is not None else Config()
    types = {f.name: type(f.default) for f in dataclasses.fields(Config)}
    extra = extra or {}
    if "-h" in args or "--help" in args:
        print(help_text(extra), flush=True)  # a reader that went away (`| head -1`): the error is raised here
        sys.exit(0)
    extras: dict[str, object] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument {arg!r}: expected --key=value (--help lists the settings)")
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
    config.data_markets = ",".join(market_names(config))  # one spelling per set of markets (config.json, reports)
    return config, extras


def validate(config: Config) -> None:
    """Raise ConfigError (one line, naming the key and the allowed values) on a bad setting."""
    c = config
    names = c.data_markets.split(",")
    if not all(re.fullmatch(r"\w[\w-]*", name) for name in names) or "all" in names:
        raise ConfigError(f"data_markets={c.data_markets!r}: expected market names (letters, digits, _ or -; not "
                          f"all) separated by commas, e.g. {','.join(ELECTRONICS_MARKETS)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"data_markets={c.data_markets!r}: a market is named twice")
    if c.target_market not in (*names, "all"):
        raise ConfigError(f"target_market={c.target_market!r}: allowed {', '.join(sorted(names))} or all "
                          f"(the markets of data_markets)")
    if "{market}" not in c.data_file or "/" in c.data_file:
        raise ConfigError(f"data_file={c.data_file!r}: must contain {{market}} and name a file of data_dir, "
                          f"without a folder")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise ConfigError(f"device={c.device!r}: allowed auto, cpu, cuda, cuda:N")
    if "{market}" not in c.data_url:
        raise ConfigError(f"data_url={c.data_url!r}: must contain {{market}}")
    positive_ints = ("seeds", "hidden_size", "embedding_size", "num_layers", "num_heads", "ff_size", "max_history",
                     "batch_size", "pretrain_epochs", "finetune_epochs", "patience", "num_train_negatives",
                     "num_eval_negatives", "train_chunk_floats")
    for key in positive_ints:
        if getattr(c, key) < 1:
            raise ConfigError(f"{key}={getattr(c, key)}: must be an integer >= 1")
    for key in ("first_seed", "num_threads", "max_batches_per_epoch", "eval_batch_floats"):
        if getattr(c, key) < 0:
            raise ConfigError(f"{key}={getattr(c, key)}: must be >= 0 (0 = default / no cap)")
    for f in dataclasses.fields(Config):
        value = getattr(c, f.name)
        if isinstance(value, int) and value > MAX_INT:
            raise ConfigError(f"{f.name}={value}: must be below 2**63 (a 64-bit integer)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value}: must be a finite number")
    if c.first_seed + c.seeds - 1 > MAX_INT:
        raise ConfigError(f"first_seed={c.first_seed}: the last seed, first_seed + seeds - 1, must be below "
                          f"2**63 (torch's seeds are 64-bit)")
    if c.hidden_size % c.num_heads:
        raise ConfigError(f"num_heads={c.num_heads}: must divide hidden_size={c.hidden_size}")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"dropout={c.dropout}: must be in [0, 1)")
    if not c.lr > 0:
        raise ConfigError(f"lr={c.lr}: must be > 0")
    if not c.weight_decay >= 0:
        raise ConfigError(f"weight_decay={c.weight_decay}: must be >= 0")
    if not all(w.isdigit() and int(w) > 0 for w in c.mlp_layers.split(",")):
        raise ConfigError(f"mlp_layers={c.mlp_layers!r}: expected positive integers separated by commas, e.g. 64,32,16,8")
    if not c.embedding_init_std > 0:
        raise ConfigError(f"embedding_init_std={c.embedding_init_std}: must be > 0")
    for key, choices in {**CHOICES, **PROTOCOL_CHOICES}.items():
        if getattr(c, key) not in choices:
            raise ConfigError(f"{key}={getattr(c, key)!r}: allowed {', '.join(choices)}")


def active_stages(config: Config) -> tuple[str, ...]:
    """The training stages a run goes through, in order."""
    return tuple(config.stages.split("+"))


def market_names(config: Config) -> tuple[str, ...]:
    """The markets of the data, sorted by name: market id i is the i-th (so the seven Electronics
    markets keep the ids they always had, whatever order data_markets lists them in)."""
    return tuple(sorted(config.data_markets.split(",")))


def target_markets(config: Config) -> list[str]:
    """The target markets a run covers, in order."""
    return list(market_names(config)) if config.target_market == "all" else [config.target_market]


def repository_or_given(config: Config, key: str) -> Path:
    """The folder of setting `key` (data_dir, log_dir): its default (`data`, `log`) is the
    repository's folder of that name wherever the program runs from; any other path is taken as
    given (a relative one: relative to the current folder)."""
    value = getattr(config, key)
    return REPO / value if value == Config.__dataclass_fields__[key].default else Path(value)


def run_command(main: Callable[[list[str]], None], errors: tuple[type[BaseException], ...] = (ConfigError,)) -> None:
    """A script's entry, `main(sys.argv[1:])`: an expected error (`errors`) is one line `error: ...`
    and exit 1; Ctrl-C exits 130; a reader that went away (`--help | head -1`) exits 141, as a
    process that SIGPIPE ends, without a traceback."""
    try:
        main(sys.argv[1:])
        sys.stdout.flush()  # here, where a reader that went away is handled below
    except errors as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's final flush: no second error
        sys.exit(141)
