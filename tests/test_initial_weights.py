"""init_weights: a run starts each seed's model from given weights (a run folder's weights file or
the authors' released checkpoint), rows translated by raw item id and market name; a resume
continues exactly; bad sources stop with one clear line.

The authors' files are read from $ACMR_AUTHORS_RELEASE, else ../shared/authors_release beside the
repository; the tests that need them skip when they are absent."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_model
from config import ConfigError
from data_loader import DeviceData, build_dataset
from evaluate import score_candidates
from model import build_model
from runfolder.checkpoints import Progress, save_weights, weights_path
from runfolder.initial_weights import RECORD_FILE, check_sources, initialise
from tests.conftest import REPO, synthetic_frames

RELEASE_ENV = "ACMR_AUTHORS_RELEASE"
RELEASE = Path(os.environ.get(RELEASE_ENV) or REPO.parent / "shared" / "authors_release")


def base_config(small_config, tmp_path, **changes):
    settings = dict(target_market="in", seeds=1, num_threads=1, pretrain_epochs=2, finetune_epochs=2,
                    log_dir=str(tmp_path / "log"), fast_kernels=False, max_batches_per_epoch=3)  # fast
    return dataclasses.replace(small_config, **{**settings, **changes})


def run(config, frames, monkeypatch) -> Path:
    """train_model.start on the synthetic frames; returns the new run folder."""
    monkeypatch.setattr(train_model, "load_markets", lambda _config: frames)
    before = set(Path(config.log_dir).glob("*")) if Path(config.log_dir).is_dir() else set()
    train_model.start(config, "test")
    (run_dir,) = set(Path(config.log_dir).glob("*")) - before
    return run_dir


def outcome(run_dir: Path) -> tuple[list, list]:
    """The results and the per-epoch records without their timings."""
    runs = json.loads((run_dir / "results.json").read_text())["runs"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for item in (*runs, *records):
        item.pop("seconds", None), item.pop("train_seconds", None)
    return runs, records


@pytest.fixture
def pretrained(frames, small_config, tmp_path, monkeypatch) -> Path:
    """A run folder of two seeds, pre-training only."""
    return run(base_config(small_config, tmp_path, seeds=2, stages="pretrain"), frames, monkeypatch)


@pytest.mark.slow  # two training runs of the synthetic markets
def test_a_finetune_run_starts_each_seed_from_its_pretrain_weights(pretrained, frames, small_config, tmp_path,
                                                                   monkeypatch):
    started = []  # the model's weights when its optimizer is made: after the hook, before any step
    make_optimizer = train_model.make_optimizer
    monkeypatch.setattr(train_model, "make_optimizer", lambda model, *args: (
        started.append({k: v.clone() for k, v in model.state_dict().items()}), make_optimizer(model, *args))[1])
    source = str(pretrained / "seed{seed}_pretrain_weights.pt")
    run_dir = run(base_config(small_config, tmp_path, seeds=2, stages="finetune", init_weights=source),
                  frames, monkeypatch)
    runs = json.loads((run_dir / "results.json").read_text())["runs"]
    for seed, state in zip((0, 1), started, strict=True):
        path = weights_path(pretrained, seed, "pretrain")
        saved = torch.load(path, weights_only=True)["state_dict"]
        assert state.keys() == saved.keys()
        for key in saved:
            assert torch.equal(state[key], saved[key]), key
        record = {"source": source, "path": str(path.resolve()),
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert runs[seed]["init_weights"] == record
        assert json.loads((run_dir / RECORD_FILE).read_text())[str(seed)] == record
        assert runs[seed]["finetune"]["epochs"] >= 1
    assert json.loads((run_dir / "config.json").read_text())["init_weights"] == source


def test_rows_are_translated_by_item_id_and_market_name(frames, small_config, tmp_path):
    """Weights saved with their items and markets in another order (and some of the others'
    too) load into the dataset's rows: the same model, the same scores."""
    for kind in ("shared", "item"):
        config = dataclasses.replace(small_config, market_embedding=kind)
        dataset = build_dataset(frames, "in", 0, config)
        torch.manual_seed(1)
        original = build_model(config, dataset)
        path = save_weights(tmp_path, config, 0, "pretrain", 1, original.state_dict(), dataset)
        saved = torch.load(path, weights_only=True)
        # rows shuffled, 3 items and a market of other data added
        items = len(dataset.item_names)
        order = np.concatenate([[0], 1 + np.random.default_rng(2).permutation(items + 2)])  # row -> old row
        markets = [2, 3, 0, 1]  # new market row -> old row (3: a market the dataset lacks)
        item_ids = [*saved["item_ids"], "X1", "X2", "X3"]
        old_markets = [*saved["markets"], "br"]
        state = dict(saved["state_dict"])
        hidden = config.hidden_size
        extended = torch.cat([state["item_embedding.weight"], torch.randn(3, hidden)])
        state["item_embedding.weight"] = extended[order]
        if kind == "shared":
            state["market_embedding.weight"] = torch.cat([state["market_embedding.weight"],
                                                          torch.randn(1, hidden)])[markets]
        else:
            table = state["market_embedding.weight"].view(items, 3, hidden)
            table = torch.cat([torch.cat([table, torch.randn(3, 3, hidden)]), torch.randn(items + 3, 1, hidden)], 1)
            state["market_embedding.weight"] = table[order][:, markets].reshape(-1, hidden)
        torch.save({**saved, "state_dict": state, "item_ids": [item_ids[i] for i in order],
                    "markets": [old_markets[m] for m in markets]}, tmp_path / "shuffled.pt")
        torch.manual_seed(3)
        model = build_model(dataclasses.replace(config, init_weights=str(tmp_path / "shuffled.pt")), dataset)
        (tmp_path / kind).mkdir()
        initialise(model, dataclasses.replace(config, init_weights=str(tmp_path / "shuffled.pt")), dataset, frames,
                   0, tmp_path / kind)
        for key, value in original.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (kind, key)
        data = DeviceData.from_dataset(dataset, torch.device("cpu"))
        original.eval(), model.eval()
        assert torch.equal(score_candidates(model, data, data.valid_candidates, 0),
                           score_candidates(original, data, data.valid_candidates, 0))


@pytest.mark.slow  # two training runs of the synthetic markets
def test_a_resumed_run_continues_exactly_and_does_not_read_the_weights_again(
        pretrained, frames, small_config, tmp_path, monkeypatch):
    source = tmp_path / "start.pt"
    source.write_bytes(weights_path(pretrained, 0, "pretrain").read_bytes())
    config = base_config(small_config, tmp_path, stages="finetune", finetune_epochs=3, patience=3,
                         init_weights=str(source))
    straight = outcome(run(config, frames, monkeypatch))

    save_checkpoint, saves = train_model.save_checkpoint, []

    def interrupted(run_dir, config, progress, *args, **kwargs):  # after the first epoch's checkpoint
        save_checkpoint(run_dir, config, progress, *args, **kwargs)
        saves.append(progress.epoch)
        if progress.epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(train_model, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config, frames, monkeypatch)
    monkeypatch.setattr(train_model, "save_checkpoint", save_checkpoint)
    (run_dir,) = [d for d in Path(config.log_dir).iterdir() if (d / "checkpoint.pt").is_file()]
    source.write_bytes(b"changed")  # a resume mid-seed must not need the file
    train_model.resume(run_dir, config, set(), "test")
    assert outcome(run_dir) == straight

    # a seed that starts again must find the same file
    source.write_bytes(weights_path(pretrained, 1, "pretrain").read_bytes())
    monkeypatch.setattr(train_model, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config, frames, monkeypatch)
    (run_dir,) = [d for d in Path(config.log_dir).iterdir() if (d / "checkpoint.pt").is_file()]
    monkeypatch.setattr(train_model, "save_checkpoint", save_checkpoint)
    # as if killed before the seed's first epoch ended: the run folder's first checkpoint
    save_checkpoint(run_dir, train_model.resume_config(run_dir, config, set()), Progress(stage="finetune"))
    source.write_bytes(weights_path(pretrained, 0, "pretrain").read_bytes())
    with pytest.raises(ConfigError, match="changed since seed 0 first read it"):
        train_model.resume(run_dir, config, set(), "test")


def errors(frames, config) -> str:
    with pytest.raises(ConfigError) as error:
        check_sources(config, frames)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_bad_sources_are_one_clear_line(pretrained, frames, small_config, tmp_path):
    config = base_config(small_config, tmp_path, stages="finetune")
    good = weights_path(pretrained, 0, "pretrain")
    (tmp_path / "corrupt.pt").write_bytes(good.read_bytes()[:1000])
    torch.save({"state_dict": {}}, tmp_path / "other.pt")

    def message(init_weights, **changes):
        return errors(frames, dataclasses.replace(config, init_weights=init_weights, **changes))

    assert f"{tmp_path}/missing.pt (No such file or directory)" in message(str(tmp_path / "missing.pt"))
    assert "is a folder; name a weights file in it" in message(str(pretrained))
    assert "unreadable (" in message(str(tmp_path / "corrupt.pt"))
    assert "not a weights file of format acmr-weights/1" in message(str(tmp_path / "other.pt"))
    assert message(str(good), hidden_size=16, num_heads=4).endswith(
        "holds a model of another size: hidden_size=32, num_heads=8; this run's hidden_size=16, num_heads=4 "
        "(give the weights' settings, e.g. --hidden_size=32)")
    assert "model=acmr" in message(str(good), model="gmf")
    assert "seed2_pretrain_weights.pt" in message(str(pretrained / "seed{seed}_pretrain_weights.pt"), seeds=3)
    other_data = synthetic_frames(seed=5, num_items=900)
    assert "of the dataset's" in errors(other_data, dataclasses.replace(config, init_weights=str(good)))
    assert "market(s) uk of the dataset are not in" in errors({**frames, "uk": frames["in"]}, dataclasses.replace(config, init_weights=str(good)))
    assert "no authors' checkpoint of market 'br'" in message("authors:br:pretrain")
    assert "expected authors:<market>:<stage>" in message("authors:in:middle")
    check_sources(dataclasses.replace(config, init_weights=str(good)), frames)  # a good one passes


# ---------------------------------------------------------------- the authors' checkpoints, real data

def released(name: str) -> Path:
    path = RELEASE / name
    if not path.is_file():
        pytest.skip(f"{path} not found: set {RELEASE_ENV} to the folder of the authors' released checkpoints")
    return path


def test_the_authors_pretrain_checkpoint_gives_their_models_scores(real_config, tmp_path, monkeypatch):
    """Initialised from authors:in:pretrain, our model scores our candidates as authors_weights'
    own translation of ids into the checkpoint's rows does."""
    from data_loader import load_markets
    from runfolder.authors_release import (
        authors_model,
        read_checkpoint,
        to_checkpoint_rows,
    )

    monkeypatch.setenv(RELEASE_ENV, str(released("ACMR_in_pretrain.pt").parent))
    config = dataclasses.replace(real_config, init_weights="authors:in:pretrain")
    frames = load_markets(config)
    check_sources(config, frames)
    dataset = build_dataset(frames, "in", 0, config)
    model = build_model(config, dataset)
    record = initialise(model, config, dataset, frames, 0, tmp_path)
    assert record["sha256"] == hashlib.sha256(released("ACMR_in_pretrain.pt").read_bytes()).hexdigest()
    theirs = authors_model(read_checkpoint(released("ACMR_in_pretrain.pt"))).eval()
    data, their_data = (DeviceData.from_dataset(d, torch.device("cpu"))
                        for d in (dataset, to_checkpoint_rows(dataset, frames)))
    torch.testing.assert_close(score_candidates(model.eval(), data, data.valid_candidates, 0),
                               score_candidates(theirs, their_data, their_data.valid_candidates, 0))


def train(args: list[str], real_config, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XMREC_DIR": real_config.data_dir, RELEASE_ENV: str(RELEASE)}
    return subprocess.run([sys.executable, "train_model.py", "--target_market=in", "--seeds=1", "--num_threads=1",
                           f"--log_dir={tmp_path / 'log'}", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
def test_fine_tuning_the_authors_pretrained_in_model(real_config, tmp_path):
    released("ACMR_in_pretrain.pt")
    result = train(["--stages=finetune", "--init_weights=authors:in:pretrain", "--finetune_epochs=2",
                    "--max_batches_per_epoch=2"], real_config, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "log").iterdir()
    (seed_run,) = json.loads((run_dir / "results.json").read_text())["runs"]
    assert seed_run["init_weights"]["source"] == "authors:in:pretrain"
    assert seed_run["finetune"]["epochs"] == 2 and "pretrain" not in seed_run
    assert seed_run["finetune"]["HR@10"] > 0.3  # far above a fresh model's chance level (0.1)
    assert "seed 0: model initialised from" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("source, message", [
    ("{tmp}/missing.pt", "init_weights={tmp}/missing.pt: cannot read {tmp}/missing.pt (No such file or directory)"),
    ("{tmp}/corrupt.pt", "corrupt.pt: unreadable ("),
    ("authors:in:pretrain --hidden_size=64", "holds a model of another size: hidden_size=32; this run's hidden_size=64"),
    ("authors:br:pretrain", "init_weights=authors:br:pretrain: no authors' checkpoint of market 'br'"),
])
def test_bad_sources_stop_the_command_with_one_line_and_exit_1(source, message, real_config, tmp_path):
    if source.startswith("authors:in"):
        released("ACMR_in_pretrain.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x04 not a torch file")
    source, *more = source.format(tmp=tmp_path).split(" ")
    result = train([f"--init_weights={source}", "--stages=finetune", *more], real_config, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(tmp=tmp_path) in lines[0], lines
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").iterdir())
