"""authors_weights: the authors' released checkpoints load into our ACMR unchanged and give the
logits of their own model on every code path, with fast_kernels on and off; our ids translate
into their rows; the command scores our split far above chance; a download is verified before
it is kept.

The released files are read from $ACMR_AUTHORS_RELEASE, else ../shared/authors_release beside
the repository (never copied into it); tests that need them skip when they are absent."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data_loader import DataError, DeviceData, build_dataset, load_markets
from evaluate import ranking_metrics, score_candidates
from runfolder import authors_release
from runfolder.authors_release import (
    RELEASE_ENV,
    authors_model,
    authors_order,
    locate_checkpoint,
    read_checkpoint,
    to_checkpoint_rows,
)
from speed.cpu_kernels import _LANE_KERNEL_MAX_TOKENS
from tools import authors_weights

REPO = Path(__file__).resolve().parent.parent
RELEASE = Path(os.environ.get(RELEASE_ENV) or REPO.parent / "shared" / "authors_release")
GOLDEN = sorted(RELEASE.glob("golden_*_*.npz")) or [None]
PATHS = ("training", "eval_with_autograd", "inference_padded", "inference_trimmed", "score_candidates")
TOLERANCE = 1e-5


def released(name: str) -> Path:
    path = RELEASE / name
    if not path.is_file():
        pytest.skip(f"{path} not found: set {RELEASE_ENV} to the folder of the authors' released checkpoints")
    return path


def checkpoint_of(golden: Path | None) -> Path:
    """ACMR_<market>_<stage>.pt beside golden_<market>_<stage>.npz."""
    if golden is None:
        pytest.skip(f"no golden_<market>_<stage>.npz in {RELEASE}: set {RELEASE_ENV} to the release folder")
    return released(golden.name.replace("golden_", "ACMR_").replace(".npz", ".pt"))


def logits_on_path(state: dict, golden: dict[str, np.ndarray], path: str, fast_kernels: bool) -> np.ndarray:
    """Our logits of the golden inputs along one code path of model.py. With fast_kernels off,
    every path is torch ops; on, they are speed/cpu_kernels.py's: "training" training mode with
    dropout 0 (`attention`, `dropout`); "eval_with_autograd" eval mode with autograd on (the
    training attention kernel); "inference_padded" evaluation (`encoder_layer_inference`) on the
    50-slot padded inputs (51 tokens: `_AttentionCPU`); "inference_trimmed" evaluation with each
    history trimmed to its length, as the evaluator batches them (up to _LANE_KERNEL_MAX_TOKENS
    tokens `_attention_inference_cpu`, beyond `_AttentionCPU`); "score_candidates" the project's
    evaluation function, each input one user with one candidate."""
    history, candidate, market, lengths = (torch.as_tensor(golden[key].astype(np.int64)) for key in
                                           ("history_items", "candidate_item", "market", "history_length"))
    users = torch.arange(len(candidate))
    model = authors_model(state, dropout_p=0.0 if path == "training" else 0.3, fast_kernels=fast_kernels)
    if path == "training":
        return model.train()(users, history, candidate, market).detach().numpy()
    if path == "eval_with_autograd":
        with torch.enable_grad():
            return model.eval()(users, history, candidate, market).detach().numpy()
    if path == "score_candidates":
        data = SimpleNamespace(target_users=users, user_history=history, history_length=lengths, user_market=market)
        return score_candidates(model, data, candidate[:, None], 0)[:, 0].numpy()
    model.eval()
    with torch.no_grad():
        if path == "inference_padded":
            return model(users, history, candidate, market).numpy()
        out = np.empty(len(candidate), dtype=np.float32)
        for length in torch.unique(lengths).tolist():
            rows = lengths == length
            out[rows.numpy()] = model(users[rows], history[rows, :length], candidate[rows], market[rows]).numpy()
        return out


@pytest.mark.parametrize("fast_kernels", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("golden_file", GOLDEN, ids=lambda p: p.stem if p else "none")
def test_released_checkpoint_gives_the_authors_logits_on_every_path(golden_file, path, fast_kernels):
    checkpoint = checkpoint_of(golden_file)
    golden = dict(np.load(golden_file))
    lengths = golden["history_length"]
    assert lengths.min() + 1 <= _LANE_KERNEL_MAX_TOKENS < lengths.max() + 1  # both inference kernels run
    logits = logits_on_path(read_checkpoint(checkpoint), golden, path, fast_kernels)
    difference = np.abs(logits - golden["logit"])
    assert difference.max() <= TOLERANCE, (f"{path}: {np.sum(difference > TOLERANCE)} of {len(logits)} inputs "
                                           f"off, worst {difference.max():.2e} at input {difference.argmax()}")
    assert np.abs(torch.sigmoid(torch.as_tensor(logits)).numpy() - golden["probability"]).max() <= TOLERANCE


def test_every_weight_is_loaded_unchanged_and_only_the_template_layer_is_ignored():
    state = read_checkpoint(released("ACMR_in_finetune.pt"))
    ours = authors_model(state).state_dict()
    ignored = sorted(key for key in state if authors_release.our_key(key) is None)
    assert ignored == sorted(key for key in state if key.startswith("bert.encoder_layer."))
    assert len(ours) == len(state) - len(ignored)
    for key, value in state.items():
        if key not in ignored:
            assert torch.equal(ours[authors_release.our_key(key)], value), key
    assert ours["item_embedding.weight"].shape == (8309, 32) and ours["market_embedding.weight"].shape == (8, 32)


def test_a_checkpoint_that_does_not_fit_is_refused():
    state = read_checkpoint(released("ACMR_in_finetune.pt"))
    with pytest.raises(DataError, match="neither mapped nor ignored"):
        authors_model({**state, "bert.extra.weight": torch.zeros(1)})
    del state["out.bias"]
    with pytest.raises(DataError, match=r"missing \['score.bias'\]"):
        authors_model(state)


# ---------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def real_frames(real_config):
    return load_markets(real_config)


def test_item_and_market_order_is_the_authors_and_our_ids_translate(real_frames, real_config):
    names, markets = authors_order(real_frames, "in")
    assert markets == ("de", "jp", "uk", "fr", "mx", "ca", "in")
    assert names[0] == real_frames["de"]["itemId"].iloc[0] and len(names) == len(set(names)) == 8304
    first_jp_only = real_frames["jp"]["itemId"][~real_frames["jp"]["itemId"].isin(real_frames["de"]["itemId"])].iloc[0]
    assert names[real_frames["de"]["itemId"].nunique()] == first_jp_only  # jp's new items follow de's
    dataset = build_dataset(real_frames, "in", 0, real_config)
    theirs = to_checkpoint_rows(dataset, real_frames)
    for field in ("user_history", "train_item", "valid_candidates", "test_candidates"):
        assert np.array_equal(theirs.item_names[getattr(theirs, field)], dataset.item_names[getattr(dataset, field)])
    assert np.array_equal(np.array(theirs.markets)[theirs.user_market], np.array(dataset.markets)[dataset.user_market])
    assert theirs.markets.index("in") == 6


@pytest.mark.slow
def test_the_command_scores_our_split_far_above_chance_and_wrong_ids_at_chance(real_frames, real_config,
                                                                               tmp_path, capsys):
    checkpoint = released("ACMR_in_finetune.pt")
    out = tmp_path / "result.json"
    authors_weights.main(["--target_market=in", "--stage=finetune", "--seed=0", f"--data_dir={real_config.data_dir}",
                          f"--authors_dir={RELEASE}", f"--out={out}"])
    result = json.loads(out.read_text())["in"]
    assert result["checkpoint"] == "ACMR_in_finetune.pt"  # its name and SHA-256, not a path of this machine
    assert result["test"]["HR@10"] > 0.7 and result["valid"]["HR@10"] > 0.7
    assert 0.5 < result["expected_share_in_checkpoint_training"]["test"] < 1
    assert "not a held-out test" in capsys.readouterr().out
    dataset = build_dataset(real_frames, "in", 0, real_config)  # our sorted item ids, untranslated
    data = DeviceData.from_dataset(dataset, torch.device("cpu"))
    data.user_market = torch.full_like(data.user_market, 6)
    wrong = ranking_metrics(score_candidates(authors_model(read_checkpoint(checkpoint)), data, data.test_candidates, 0))
    assert wrong["HR@10"] < 0.25


# ---------------------------------------------------------------- files

@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local HTTP server of a folder, and a checkpoint URL pattern pointing at it."""
    folder = tmp_path / "served"
    folder.mkdir()
    monkeypatch.delenv(RELEASE_ENV, raising=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/ACMR_{{market}}_{{stage}}.pt"
    server.shutdown()
    server.server_close()


def test_a_checkpoint_is_downloaded_verified_and_cached(served, tmp_path, monkeypatch):
    folder, url = served
    (folder / "ACMR_in_finetune.pt").write_bytes(b"weights")
    monkeypatch.setattr(authors_release, "expected_checksums",
                        lambda: {"ACMR_in_finetune.pt": hashlib.sha256(b"weights").hexdigest()})
    cache = tmp_path / "cache"
    assert locate_checkpoint("in", "finetune", None, cache, url) == cache / "ACMR_in_finetune.pt"
    assert [p.name for p in cache.iterdir()] == ["ACMR_in_finetune.pt"]
    (folder / "ACMR_in_finetune.pt").unlink()  # now found in the cache
    assert locate_checkpoint("in", "finetune", None, cache, url).read_bytes() == b"weights"


@pytest.mark.slow  # starts a process
def test_a_download_with_the_wrong_checksum_is_refused_in_one_line_and_not_kept(served, tmp_path):
    folder, url = served
    (folder / "ACMR_in_finetune.pt").write_bytes(b"not the authors' weights")
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "tools.authors_weights", "--target_market=in", f"--cache_dir={cache}",
               f"--checkpoint_url={url}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != RELEASE_ENV})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: could not download")
    assert "SHA-256 mismatch" in done.stderr and "not the authors' release of ACMR_in_finetune.pt" in done.stderr
    assert not cache.exists()  # not even an empty folder


def test_a_local_checkpoint_with_the_wrong_checksum_is_refused(tmp_path):
    (tmp_path / "ACMR_uk_pretrain.pt").write_bytes(b"corrupt")
    with pytest.raises(DataError, match=r"ACMR_uk_pretrain\.pt: SHA-256 mismatch"):
        locate_checkpoint("uk", "pretrain", str(tmp_path), tmp_path / "cache", "http://127.0.0.1:9/{market}{stage}")


def test_the_release_folder_is_used_before_the_cache(tmp_path):
    checkpoint = released("ACMR_uk_finetune.pt")
    unreachable = "http://127.0.0.1:9/{market}{stage}"
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(checkpoint, cache)  # a verified copy in the cache too: the release folder still wins
    assert locate_checkpoint("uk", "finetune", str(RELEASE), cache, unreachable) == checkpoint
    empty = tmp_path / "empty_release"
    empty.mkdir()
    assert locate_checkpoint("uk", "finetune", str(empty), cache, unreachable) == cache / checkpoint.name


def test_the_checksum_file_lists_all_fourteen_checkpoints():
    sums = authors_release.expected_checksums()
    assert sorted(sums) == sorted(f"ACMR_{m}_{s}.pt" for m in authors_release.SOURCE_ORDER
                                  for s in ("pretrain", "finetune"))
    assert all(len(digest) == 64 for digest in sums.values())
