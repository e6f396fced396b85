"""config: --key=value overrides are type-checked; bad values stop with one clear line."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from config import (
    RUN_ONLY_SETTINGS,
    SELECTION_SETTINGS,
    Config,
    ConfigError,
    market_names,
    parse_overrides,
    target_markets,
)
from runfolder.migration import config_from_saved, upgrade_saved
from tests.conftest import REPO


def test_defaults_are_the_papers_settings():
    config = Config()
    assert (config.hidden_size, config.num_layers, config.num_heads, config.ff_size) == (32, 4, 8, 128)
    assert (config.dropout, config.lr, config.weight_decay, config.batch_size) == (0.3, 1e-3, 1e-7, 1024)
    assert (config.pretrain_epochs, config.finetune_epochs, config.patience, config.max_history) == (50, 50, 3, 50)
    assert (config.num_train_negatives, config.num_eval_negatives, config.seeds) == (4, 99, 5)
    assert (config.eval_negative_pool, config.eval_mode, config.split) == ("global", "sampled", "random")
    assert config.history_includes_candidate and not config.resample_train_negatives
    assert not config.patience_resets and config.held_out_in_negatives
    # the authors' data side (SPEC 3.5, 3.6) and their uniformly shuffled fine-tuning batches
    assert config.history_repeats and config.train_negatives_per == "distinct_item"
    assert config.bucket_pretrain_batches and not config.bucket_finetune_batches


def test_a_config_json_from_before_a_setting_existed_means_that_times_behaviour():
    """Run folders committed before the per-stage caps and the authors' data-side defaults
    still read as what they ran: distinct histories, negatives per row, bucketing in both stages."""
    old = {key: value for key, value in vars(Config()).items()
           if key not in ("pretrain_epochs", "finetune_epochs", "bucket_pretrain_batches",
                          "bucket_finetune_batches", "history_repeats", "train_negatives_per")}
    config = config_from_saved({**old, "num_epochs": 7, "bucket_batches": True})
    assert (config.pretrain_epochs, config.finetune_epochs) == (7, 7)
    assert config.bucket_pretrain_batches and config.bucket_finetune_batches
    assert not config.history_repeats and config.train_negatives_per == "positive_row"
    assert config_from_saved(vars(Config())) == Config()  # files of the current version read as they are


def test_every_committed_config_json_reads_as_a_whole_config_with_no_guessed_setting():
    """A setting added later (but a run-only one) must say what folders without it ran (BEFORE_ADDED): otherwise an
    old checkpoint cannot be resumed ("written by a run with other settings") and an old run
    would be reported under config.py's default."""
    fields = {field.name for field in dataclasses.fields(Config)} - set(RUN_ONLY_SETTINGS)  # where, how fast
    saved_files = sorted((REPO / "results").glob("**/config.json"))
    assert saved_files
    for path in saved_files:
        upgraded = upgrade_saved(json.loads(path.read_text()))
        assert fields <= set(upgraded), f"{path}: no {fields - set(upgraded)}"


def test_an_old_command_line_num_epochs_caps_both_stages():
    config, _ = parse_overrides(["--num_epochs=3", "--bucket_batches=false"])
    assert (config.pretrain_epochs, config.finetune_epochs) == (3, 3)
    assert not config.bucket_pretrain_batches and not config.bucket_finetune_batches


def test_overrides_are_parsed_with_the_settings_types():
    config, extra = parse_overrides(["--target_market=jp", "--seeds=2", "--lr=0.01",
                                     "--bucket_pretrain_batches=false", "--seed=3"], extra={"seed": int})
    assert (config.target_market, config.seeds, config.lr, config.bucket_pretrain_batches) == ("jp", 2, 0.01, False)
    assert extra == {"seed": 3}
    assert target_markets(parse_overrides(["--target_market=all"])[0]) == ["ca", "de", "fr", "in", "jp", "mx", "uk"]
    other = parse_overrides(["--data_markets=cc,aa,bb", "--target_market=all"])[0]
    assert market_names(other) == ("aa", "bb", "cc") and target_markets(other) == ["aa", "bb", "cc"]  # ids by name
    assert other.data_markets == "aa,bb,cc"  # as config.json records it: one name per set of markets


@pytest.mark.parametrize("argument, message", [
    ("--target_market=xx", "target_market='xx': allowed ca, de, fr, in, jp, mx, uk or all"),
    ("--lr=0", "lr=0.0: must be > 0"),
    ("--lr=fast", "--lr: expected float, got 'fast'"),
    ("--seeds=0", "seeds=0: must be an integer >= 1"),
    ("--num_heads=5", "num_heads=5: must divide hidden_size=32"),
    ("--dropout=1.5", "dropout=1.5: must be in [0, 1)"),
    ("--bucket_finetune_batches=maybe", "--bucket_finetune_batches: expected true or false"),
    ("--device=tpu", "device='tpu': allowed auto, cpu, cuda, cuda:N"),
    ("--learning_rate=0.1", "unknown setting --learning_rate; allowed: batch_size, "),
    ("lr=0.1", "bad argument 'lr=0.1': expected --key=value"),
    ("--split=weekly", "split='weekly': allowed random, temporal"),
    ("--eval_mode=all", "eval_mode='all': allowed sampled, full"),
    ("--eval_negative_pool=market", "eval_negative_pool='market': allowed global, target"),
    ("--lr=inf", "lr=inf: must be a finite number"),
    ("--weight_decay=nan", "weight_decay=nan: must be a finite number"),
    ("--first_seed=99999999999999999999", "first_seed=99999999999999999999: must be below 2**63"),
    ("--first_seed=9223372036854775807", "the last seed, first_seed + seeds - 1, must be below 2**63"),
    ("--data_markets=aa,bb", "target_market='in': allowed aa, bb or all (the markets of data_markets)"),
    ("--data_markets=aa,,bb", "data_markets='aa,,bb': expected market names (letters, digits, _ or -; not all)"),
    ("--data_markets=in,in", "data_markets='in,in': a market is named twice"),
    ("--data_file=ratings.txt", "data_file='ratings.txt': must contain {market}"),
])
def test_bad_settings_name_the_key_and_what_is_allowed(argument, message):
    with pytest.raises(ConfigError) as error:
        parse_overrides([argument])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.slow  # starts processes
def test_the_command_line_prints_one_error_line_and_exits_nonzero():
    result = subprocess.run([sys.executable, "train_model.py", "--num_heads=3"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: num_heads=3: must divide hidden_size=32"


def test_every_setting_has_a_help_line_and_a_kind_and_the_run_only_ones_are_derived_from_them():
    for f in dataclasses.fields(Config):
        assert f.metadata["help"] and f.metadata["kind"] in ("experiment", "speed", "selection"), f.name
    assert set(RUN_ONLY_SETTINGS) >= {"device", "num_threads", "keep_freed_memory", "data_dir", "data_url", "log_dir",
                                      "train_chunk_floats", "cuda_graphs", "eval_batch_floats"}
    assert not set(RUN_ONLY_SETTINGS) & {"lr", "max_batches_per_epoch", "bucket_pretrain_batches", "model"}
    assert SELECTION_SETTINGS == ("target_market", "seeds", "first_seed")


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("script, flag", [("train_model.py", "--help"), ("train_model.py", "-h"),
                                          ("data_loader.py", "--help"), ("-m tools.bench", "--help"),
                                          ("-m tools.authors_weights", "-h"), ("-m tools.sweep", "--help")])
def test_help_lists_every_setting_from_config_py(script, flag):
    result = subprocess.run([sys.executable, *script.split(), flag], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr[-2000:]
    assert f"usage: python {script} [--key=value ...]" in result.stdout
    text = " ".join(result.stdout.split())  # the help lines are wrapped
    for f in dataclasses.fields(Config):
        assert f"--{f.name}=" in text and " ".join(f.metadata["help"].split()) in text, f.name


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("script, commands", [
    ("evaluate.py", ["python evaluate.py report --log_dir=", "python evaluate.py report --docs --check"]),
    ("-m tools.trained", ["python -m tools.trained recommend --run=", "python -m tools.trained rescore --run=",
                          "python -m tools.trained protocol-table --runs="]),
    ("-m tools.tune", ["python -m tools.tune --models=acmr --markets=in,jp,mx"]),
])
def test_the_help_of_a_command_without_config_settings_shows_its_own_commands(script, commands):
    result = subprocess.run([sys.executable, *script.split(), "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr[-2000:]
    for command in commands:
        assert command in result.stdout, command
