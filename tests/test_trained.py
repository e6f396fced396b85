"""A trained model loads from its run folder, recommends, and scores again to its run's results."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from config import STAGES, Config, ConfigError
from data_loader import build_dataset
from reporting import documents
from reporting.metrics import METRICS
from reporting.runs import RunFolderError
from runfolder.checkpoints import CheckpointError, save_torch, weights_path
from runfolder.environment import start_run_folder
from tests.conftest import REPO, synthetic_frames
from tools import trained
from train_model import run_seeds

TINY = dict(max_history=50, num_eval_negatives=20, num_train_negatives=2, batch_size=128, seeds=1,
            pretrain_epochs=2, finetune_epochs=2, hidden_size=16, num_layers=2, num_heads=2, ff_size=32,
            fast_kernels=False, target_market="in")


def tiny_run(folder: Path, frames, **settings) -> Path:
    config = Config(**{**TINY, **settings})
    folder.mkdir(parents=True)
    start_run_folder(folder, config, torch.device("cpu"), "tiny run")
    run_seeds(folder, frames, config, torch.device("cpu"), None)
    return folder


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames()


@pytest.fixture(scope="module")
def run_dir(frames, tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("runs") / "in-acmr", frames)


@pytest.fixture(scope="module")
def gmf_run_dir(frames, tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("runs") / "in-gmf", frames, model="gmf", stages="finetune",
                    finetune_epochs=1)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- loading

def test_a_run_folder_loads_its_last_stage_by_default_in_eval_mode_on_the_cpu(run_dir):
    model = trained.load_trained(run_dir)
    assert (model.seed, model.stage, model.target_market) == (0, "finetune", "in")
    assert not model.model.training and all(p.device.type == "cpu" for p in model.model.parameters())
    assert model.markets == ("ca", "de", "in") and model.item_ids[0] == "" and model.config.hidden_size == 16
    pretrained = trained.load_trained(run_dir, seed=0, stage="pretrain")
    by_file = trained.load_trained(weights_path(run_dir, 0, "pretrain"))
    for a, b in zip(pretrained.model.state_dict().values(), by_file.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(pretrained.model.score.weight, model.model.score.weight)


def test_the_default_weights_are_the_numerically_first_seed_and_its_last_stage(run_dir, tmp_path):
    for seed, stages in ((10, STAGES), (9, STAGES), (2, ("pretrain",))):
        for stage in stages:
            shutil.copy(weights_path(run_dir, 0, stage), weights_path(tmp_path, seed, stage))
    assert trained.resolve_weights(tmp_path) == weights_path(tmp_path, 2, "pretrain")
    weights_path(tmp_path, 2, "pretrain").unlink()
    assert trained.resolve_weights(tmp_path) == weights_path(tmp_path, 9, "finetune")


def test_loading_errors_are_one_line(run_dir, tmp_path):
    with pytest.raises(CheckpointError) as error:
        trained.load_trained(tmp_path / "nowhere")
    assert one_line(error).endswith("no such run folder")
    with pytest.raises(CheckpointError) as error:
        trained.load_trained(run_dir, seed=4)
    assert "no weights of seed 4 finetune; it keeps seed 0 pretrain, seed 0 finetune" in one_line(error)
    with pytest.raises(CheckpointError) as error:
        trained.load_trained(tmp_path / "missing.pt")
    assert one_line(error).endswith("no such weights file")
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(weights_path(run_dir, 0, "finetune").read_bytes()[:5000])
    with pytest.raises(CheckpointError) as error:
        trained.load_trained(corrupted)
    assert "unreadable weights file" in one_line(error)
    payload = torch.load(weights_path(run_dir, 0, "finetune"), weights_only=True)
    payload["config"]["hidden_size"] = 32  # the settings of another size than the weights
    save_torch(tmp_path / "other_size.pt", payload)
    with pytest.raises(CheckpointError) as error:
        trained.load_trained(tmp_path / "other_size.pt")
    assert "weights of another model size than its settings (hidden_size=32" in one_line(error)


# ---------------------------------------------------------------- recommending

def direct_scores(model: trained.Trained, frames, user: str, market: str = "in") -> pd.Series:
    """The model's logit of every item of the market the user has not bought, one forward pass."""
    history, length, (bought,) = trained.histories(model, frames[market], [user], market, seed=0)
    items = np.setdiff1d(trained.item_rows(model, frames[market]["itemId"].unique().astype(str), market), bought)
    with torch.inference_mode():
        logits = model.model(torch.zeros(len(items), dtype=torch.long),
                             torch.as_tensor(history[:, :length[0]]).expand(len(items), -1),
                             torch.as_tensor(items), torch.full((len(items),), model.markets.index(market)))
    return pd.Series(logits.numpy(), index=model.item_ids[items])


@pytest.mark.parametrize("users", [["Uin010"], ["Uin003", "Uin010", "Uin017"]])
def test_recommendations_are_the_arg_top_k_of_the_models_scores_without_bought_items(run_dir, frames, users):
    model = trained.load_trained(run_dir)
    table = trained.recommend(model, users, k=7, frames=frames)
    assert list(table["user"].unique()) == users
    for user, mine in table.groupby("user"):
        bought = set(frames["in"].loc[frames["in"]["userId"] == user, "itemId"])
        assert not bought & set(mine["item"]) and list(mine["rank"]) == list(range(1, 8))
        assert (np.diff(mine["score"].to_numpy()) <= 0).all()
        expected = direct_scores(model, frames, user).sort_values(ascending=False, kind="stable")[:7]
        assert list(mine["item"]) == list(expected.index)
        np.testing.assert_allclose(mine["score"], expected.to_numpy(), rtol=1e-5, atol=1e-6)


def test_a_long_history_is_subsampled_the_same_whoever_else_is_asked_for(run_dir, frames):
    model = trained.load_trained(run_dir)
    user = "Uin010"  # 70 purchases (conftest.synthetic_frames), over max_history
    assert (frames["in"]["userId"] == user).sum() > model.config.max_history
    alone = trained.recommend(model, [user], k=5, frames=frames)
    together = trained.recommend(model, ["Uin003", user], k=5, frames=frames)
    pd.testing.assert_frame_equal(alone, together[together["user"] == user].reset_index(drop=True))
    history, length, _ = trained.histories(model, frames["in"], [user], "in", seed=0)
    assert length[0] == model.config.max_history
    assert not np.array_equal(history, trained.histories(model, frames["in"], [user], "in", seed=1)[0])


def test_a_baseline_recommends_the_top_k_unbought_items_by_each_users_embedding_row(gmf_run_dir, frames):
    model = trained.load_trained(gmf_run_dir)
    users = ["Uin004", "Uin001", "Uin007"]
    table = trained.recommend(model, users, k=5, frames=frames)
    market_items = trained.item_rows(model, frames["in"]["itemId"].unique().astype(str), "in")
    for user in users:
        row = list(zip(model.user_markets, model.user_ids)).index(("in", user))  # the weights' own order
        bought = trained.item_rows(model, frames["in"].loc[frames["in"]["userId"] == user, "itemId"].to_numpy(dtype=str), "in")
        items = np.setdiff1d(market_items, bought)
        with torch.inference_mode():
            logits = model.model(torch.full((len(items),), row), None, torch.as_tensor(items), None).numpy()
        best = np.argsort(-logits, kind="stable")[:5]
        mine = table[table["user"] == user]
        assert list(mine["item"]) == list(model.item_ids[items[best]])
        np.testing.assert_allclose(mine["score"], logits[best], rtol=1e-6)


def test_recommendation_errors_are_one_line(run_dir, frames):
    model = trained.load_trained(run_dir)
    with pytest.raises(ConfigError) as error:
        trained.recommend(model, ["Uin003", "nobody"], frames=frames)
    assert one_line(error) == "unknown user 'nobody': no purchase in market in"
    with pytest.raises(ConfigError) as error:
        trained.recommend(model, ["Uin003"], market="br", frames=frames)
    assert one_line(error) == "unknown market 'br': the model knows ca, de, in"
    with pytest.raises(ConfigError) as error:
        trained.recommend(model, ["Uin003"], frames=frames, seed=-1)
    assert one_line(error) == "history seed -1: must be >= 0 (--history_seed)"


def test_recommendations_are_written_as_tsv_and_json(run_dir, frames, tmp_path):
    table = trained.recommend(trained.load_trained(run_dir), ["Uin003", "Uin004"], k=3, frames=frames)
    trained.write_recommendations(table, tmp_path / "top.tsv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "top.tsv", sep="\t"), table, check_dtype=False)
    trained.write_recommendations(table, tmp_path / "top.json")
    saved = json.loads((tmp_path / "top.json").read_text())
    assert list(saved) == ["Uin003", "Uin004"]
    for user, entries in saved.items():
        mine = table[table["user"] == user]
        assert [entry["item"] for entry in entries] == list(mine["item"])
        assert [entry["score"] for entry in entries] == pytest.approx(list(mine["score"]))


# ---------------------------------------------------------------- rescoring

def test_rescoring_a_run_on_its_own_settings_gives_its_test_metrics_exactly(run_dir, frames):
    path, rescored = trained.rescore_run(run_dir, frames=frames)
    assert path == run_dir / "rescored" / "own.json" and json.loads(path.read_text())["runs"] == rescored["runs"]
    results = json.loads((run_dir / "results.json").read_text())
    for ours, theirs in zip(rescored["runs"], results["runs"], strict=True):
        for stage in ("pretrain", "finetune"):
            assert {m: ours[stage][m] for m in METRICS} == {m: theirs[stage][m] for m in METRICS}
            assert ours[stage]["breakdown"] == theirs[stage]["breakdown"]
            assert ours[stage]["best_epoch"] == theirs[stage]["best_epoch"]
    with pytest.raises(ConfigError) as error:  # an earlier rescoring is never replaced silently
        trained.rescore_run(run_dir, frames=frames)
    assert "exists (an earlier rescoring); --overwrite=true replaces it" in one_line(error)


@pytest.mark.parametrize("changes", [{"eval_mode": "full"}, {"eval_negative_pool": "target"},
                                     {"num_eval_negatives": 10}, {"held_out_in_negatives": False}])
def test_evaluation_settings_keep_the_split_the_histories_and_the_training_data(frames, changes):
    config = Config(**TINY)
    before, after = (build_dataset(frames, "in", 0, c) for c in (config, dataclasses.replace(config, **changes)))
    for field in ("user_history", "history_length", "train_user", "train_item", "train_label", "target_users",
                  "item_names"):
        assert np.array_equal(getattr(before, field), getattr(after, field)), field
    for split in ("valid_candidates", "test_candidates"):
        assert np.array_equal(getattr(before, split)[:, 0], getattr(after, split)[:, 0])
    assert set(changes) <= set(trained.EVALUATION_SETTINGS)


@pytest.mark.parametrize("changes", [{"split": "temporal"}, {"max_history": 20}, {"history_repeats": False},
                                     {"num_train_negatives": 3}])
def test_settings_that_change_the_training_part_do_change_it_and_rescoring_refuses_them(run_dir, frames, changes):
    config = Config(**TINY)
    before, after = (build_dataset(frames, "in", 0, c) for c in (config, dataclasses.replace(config, **changes)))
    assert any(not np.array_equal(getattr(before, field), getattr(after, field))
               for field in ("user_history", "train_item", "test_candidates"))
    with pytest.raises(ConfigError) as error:
        trained.rescore_run(run_dir, changes, frames=frames)
    key = next(iter(changes))
    assert one_line(error).startswith(f"--{key}={changes[key]}: the weights were trained with {key}=")
    assert not (run_dir / "rescored" / f"{key}={changes[key]}.json").exists()


def test_the_protocol_table_rescores_seed_0_fine_tuned_and_renders_in_a_document(run_dir, frames, tmp_path):
    said = []
    lines = trained.protocol_rescorings([run_dir], frames=frames, say=said.append)
    assert said == [f"wrote {run_dir / 'rescored' / name}.json" for name in trained.PROTOCOL_RESCORINGS]
    full = json.loads((run_dir / "rescored" / "eval_mode=full.json").read_text())
    assert full["changed"] == {"eval_mode": "full"} and list(full["runs"][0]) == ["seed", "finetune"]
    results = json.loads((run_dir / "results.json").read_text())["runs"][0]["finetune"]
    assert lines[2] == ("| in | 1 + 20 sampled, negatives from all markets (the run's) | "
                        + " | ".join(f"{results[m]:.4f}" for m in METRICS) + " |")
    assert lines[3].startswith("| in | full ranking of the target's items | " + f"{full['runs'][0]['finetune']['HR@5']:.4f}")
    assert lines[4].startswith("| in | 1 + 20 sampled, negatives from the target market | ") and len(lines) == 5
    said.clear()
    assert trained.protocol_rescorings([run_dir], frames=frames, say=said.append) == lines  # reused
    assert all(line.startswith("kept the earlier") for line in said)
    assert documents.rescored_protocol_table(run_dir.parent) == lines
    assert documents.rescored_protocol_table(tmp_path)[0].startswith("No run folder here is rescored yet")
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    (other / "rescored" / "eval_negative_pool=target.json").unlink()
    trained.rescore_run(other, {"num_eval_negatives": 10}, name="eval_negative_pool=target", frames=frames)
    with pytest.raises(ConfigError) as error:  # not what the table needs: refused, not replaced
        trained.protocol_rescorings([other], frames=frames)
    assert "an earlier rescoring, but not of seed 0 finetune with eval_negative_pool=target alone" in one_line(error)
    (other / "rescored" / "eval_negative_pool=target.json").write_text('{"changed": ')  # damaged
    with pytest.raises(RunFolderError) as error:
        trained.protocol_rescorings([other], frames=frames)
    assert one_line(error).startswith(f"{other / 'rescored' / 'eval_negative_pool=target.json'}: not valid JSON")


# ---------------------------------------------------------------- the command, on the real data

def run_command(args: list[str], real_config, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.trained", *args, "--num_threads=1"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XMREC_DIR": real_config.data_dir, **env})


@pytest.fixture(scope="module")
def real_run_dir(real_config, tmp_path_factory) -> Path:
    from tests.test_identity import tiny_run as identity_run
    return identity_run(Path(real_config.data_dir), tmp_path_factory.mktemp("log"))


@pytest.mark.slow
def test_the_rescore_command_reproduces_a_real_runs_test_metrics(real_run_dir, real_config):
    result = run_command(["rescore", f"--run={real_run_dir}"], real_config)
    assert result.returncode == 0, result.stderr[-2000:]
    rescored = json.loads((real_run_dir / "rescored" / "own.json").read_text())["runs"][0]
    expected = json.loads((real_run_dir / "results.json").read_text())["runs"][0]
    for stage in ("pretrain", "finetune"):
        assert {m: rescored[stage][m] for m in METRICS} == {m: expected[stage][m] for m in METRICS}
    again = run_command(["rescore", f"--run={real_run_dir}", "--split=temporal"], real_config)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("error: --split=temporal: the weights were trained with split=random")


@pytest.mark.slow
def test_the_recommend_command_prints_and_writes_the_top_k(real_run_dir, real_config, tmp_path):
    frame = pd.read_csv(Path(real_config.data_dir) / "in_5core.txt", sep=" ")
    users = list(frame["userId"].unique()[:2])
    result = run_command(["recommend", f"--run={real_run_dir}", f"--users={','.join(users)}", "--k=10",
                          f"--out={tmp_path / 'top.tsv'}"], real_config)
    assert result.returncode == 0, result.stderr[-2000:]
    written = pd.read_csv(tmp_path / "top.tsv", sep="\t")
    assert list(written["user"].unique()) == users and len(written) == 20
    for user in users:
        assert not set(frame.loc[frame["userId"] == user, "itemId"]) & set(written.loc[written["user"] == user, "item"])
    assert all(item in result.stdout for item in written["item"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown user", "unknown market", "missing folder", "corrupted weights",
                                  "another model size", "empty folder option", "negative history seed"])
def test_the_recommend_commands_errors_are_one_line_and_exit_1(case, real_run_dir, real_config, tmp_path):
    weights = weights_path(real_run_dir, 3, "finetune")
    if case == "corrupted weights":
        (tmp_path / "w.pt").write_bytes(weights.read_bytes()[:-100])
    if case == "another model size":
        payload = torch.load(weights, weights_only=True)
        payload["config"].update(hidden_size=64, ff_size=256)
        save_torch(tmp_path / "w.pt", payload)
    args, message = {
        "unknown user": ([f"--run={real_run_dir}", "--users=NOBODY"], "unknown user 'NOBODY': no purchase in market in"),
        "unknown market": ([f"--run={real_run_dir}", "--users=X", "--market=br"], "unknown market 'br': the model knows"),
        "missing folder": ([f"--run={tmp_path / 'nowhere'}", "--users=X"], "no such run folder"),
        "corrupted weights": ([f"--weights={tmp_path / 'w.pt'}", "--users=X"], "unreadable weights file"),
        "another model size": ([f"--weights={tmp_path / 'w.pt'}", "--users=X"], "weights of another model size"),
        "empty folder option": (["--run=", "--users=X"], "--run= is empty"),
        "negative history seed": ([f"--run={real_run_dir}", "--users=X", "--history_seed=-1"],
                                  "history seed -1: must be >= 0"),
    }[case]
    result = run_command(["recommend", *args], real_config)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


@pytest.mark.slow
def test_the_authors_weights_recommend(real_config):
    release = os.environ.get("ACMR_AUTHORS_RELEASE")
    if not release:
        pytest.skip("ACMR_AUTHORS_RELEASE is not set")
    frame = pd.read_csv(Path(real_config.data_dir) / "in_5core.txt", sep=" ")
    user = frame["userId"].iloc[0]
    result = run_command(["recommend", "--authors=in", f"--users={user}", "--k=5"], real_config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ACMR_in_finetune.pt: top 5 of market in" in result.stdout and result.stdout.count(user) == 5
