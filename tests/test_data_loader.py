"""data_loader: reading and validating files, finding / downloading / verifying them, the
seeded split, the sampled negatives, the histories, the candidate export."""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import data_loader
from config import ELECTRONICS_MARKETS, Config, ConfigError, repository_or_given
from data_loader import (
    DataError,
    build_dataset,
    check_train_negatives,
    export_candidates,
    locate_data_file,
    read_market_file,
    sample_negatives,
)
from tests.conftest import REPO

HEADER = "userId itemId rate date\n"


# ---------------------------------------------------------------- the split and the samples

def interactions_of(frames, dataset, user):
    market = dataset.markets[dataset.user_market[user]]
    frame = frames[market]
    return Counter(frame.loc[frame["userId"] == dataset.user_names[user], "itemId"])


def test_split_holds_out_exactly_one_valid_and_one_test_item_per_target_user(frames, small_config):
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    assert len(dataset.target_users) == frames["in"]["userId"].nunique()
    positive = dataset.train_label == 1
    for row, user in enumerate(dataset.target_users):
        train_items = Counter(dataset.item_names[dataset.train_item[positive & (dataset.train_user == user)]])
        valid_item = dataset.item_names[dataset.valid_candidates[row, 0]]
        test_item = dataset.item_names[dataset.test_candidates[row, 0]]
        assert train_items + Counter([valid_item, test_item]) == interactions_of(frames, dataset, user)


def test_source_markets_keep_all_interactions_for_training(frames, small_config):
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    positive = dataset.train_label == 1
    source_rows = positive & (dataset.user_market[dataset.train_user] != dataset.target_id)
    users, items = dataset.train_user[source_rows], dataset.train_item[source_rows]
    kept = Counter(zip(np.array(dataset.markets)[dataset.user_market[users]], dataset.user_names[users],
                       dataset.item_names[items]))
    assert kept == Counter((market, user, item) for market in ("ca", "de")
                           for user, item in zip(frames[market]["userId"], frames[market]["itemId"]))
    assert len(dataset.target_rows()) == (dataset.user_market[dataset.train_user] == dataset.target_id).sum()


@pytest.mark.parametrize("per", ["distinct_item", "positive_row"])
def test_training_negatives_avoid_the_users_positives_and_have_the_configured_count(frames, small_config, per):
    config = dataclasses.replace(small_config, train_negatives_per=per)
    dataset = build_dataset(frames, "de", seed=1, config=config)
    positive = dataset.train_label == 1
    saw_repeat = False
    for user in range(len(dataset.user_names)):
        mine = dataset.train_user == user
        positives = dataset.train_item[mine & positive]
        negatives = dataset.train_item[mine & ~positive]
        units = len(set(positives)) if per == "distinct_item" else len(positives)
        assert len(negatives) == config.num_train_negatives * units
        assert len(set(negatives)) == len(negatives)
        assert not set(negatives) & set(positives)
        assert negatives.min() >= 1 and negatives.max() <= dataset.num_items
        saw_repeat |= len(set(positives)) < len(positives)
    assert saw_repeat, "the synthetic data must hold repeat purchases, where the two counts differ"


def test_evaluation_negatives_avoid_training_items_and_the_held_out_item(frames, small_config):
    dataset = build_dataset(frames, "in", seed=2, config=small_config)
    positive = dataset.train_label == 1
    for candidates in (dataset.valid_candidates, dataset.test_candidates):
        assert candidates.shape == (len(dataset.target_users), 1 + small_config.num_eval_negatives)
        for row, user in enumerate(dataset.target_users):
            negatives = candidates[row, 1:]
            train_items = set(dataset.train_item[positive & (dataset.train_user == user)])
            assert len(set(negatives)) == len(negatives)
            assert candidates[row, 0] not in negatives
            assert not set(negatives) & train_items
            # global pool: any item of any market
            assert negatives.min() >= 1 and negatives.max() <= dataset.num_items


def test_global_pool_draws_items_the_target_market_does_not_sell(frames, small_config):
    frames = dict(frames)
    target = frames["in"][frames["in"]["itemId"] < "I0100"]  # the target sells I0000-I0099 only
    frames["in"] = target[target.groupby("userId")["userId"].transform("size") >= 3]
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    target_items = set(np.searchsorted(dataset.item_names, frames["in"]["itemId"].unique()))
    assert not set(dataset.test_candidates[:, 1:].ravel()) <= target_items


@pytest.mark.parametrize("repeats", [True, False])
def test_histories_are_the_training_purchases_or_distinct_items_capped_at_max_history(frames, small_config, repeats):
    config = dataclasses.replace(small_config, max_history=50, history_repeats=repeats)
    dataset = build_dataset(frames, "in", seed=0, config=config)
    positive = dataset.train_label == 1
    assert dataset.user_history.shape[1] == 50
    saw_long = saw_repeat = False
    for user in range(len(dataset.user_names)):
        purchases = dataset.train_item[positive & (dataset.train_user == user)]
        length = dataset.history_length[user]
        history = dataset.user_history[user]
        assert (history[length:] == 0).all() and (history[:length] > 0).all()
        entries = Counter(history[:length].tolist())
        bought = Counter(purchases.tolist())
        if repeats:  # a sub-multiset of the purchases; all of them when there are at most 50
            assert length == min(50, len(purchases))
            assert all(entries[item] <= bought[item] for item in entries)
        else:
            assert length == min(50, len(bought)) and max(entries.values()) == 1
            assert set(entries) <= set(bought)
        saw_long |= len(purchases) > 50
        saw_repeat |= length < 50 and max(entries.values()) > 1
    assert saw_long, "the synthetic data must exercise the subsampling"
    assert saw_repeat == repeats


def test_same_seed_gives_identical_data_and_another_seed_a_different_split(frames, small_config):
    first = build_dataset(frames, "in", seed=3, config=small_config)
    again = build_dataset(frames, "in", seed=3, config=small_config)
    other = build_dataset(frames, "in", seed=4, config=small_config)
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(again, field.name)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
    assert not np.array_equal(first.test_candidates[:, 0], other.test_candidates[:, 0])
    assert not np.array_equal(first.train_item, other.train_item)


def test_ids_do_not_depend_on_the_order_of_the_markets(frames, small_config):
    reordered = {m: frames[m] for m in reversed(list(frames))}
    a = build_dataset(frames, "in", seed=0, config=small_config)
    b = build_dataset(reordered, "in", seed=0, config=small_config)
    assert a.markets == b.markets == ("ca", "de", "in")
    assert np.array_equal(a.item_names, b.item_names)
    assert np.array_equal(a.test_candidates, b.test_candidates)


def test_sample_negatives_draws_distinct_allowed_items_and_refuses_the_impossible():
    rng = np.random.default_rng(0)
    pool = np.arange(1, 11)
    excluded_user = np.array([0, 0, 1])
    excluded_item = np.array([1, 2, 10])
    items = sample_negatives(rng, np.array([8, 3]), pool, excluded_user, excluded_item)
    assert sorted(items[:8]) == list(range(3, 11))  # every allowed item of user 0
    assert len(set(items[8:])) == 3 and 10 not in items[8:]
    with pytest.raises(ValueError, match="needs 9 negatives but only 8"):
        sample_negatives(rng, np.array([9, 0]), pool, excluded_user, excluded_item)


def test_export_writes_raw_ids_one_row_per_target_user(frames, small_config, tmp_path):
    dataset = build_dataset(frames, "in", seed=0, config=small_config)
    sums = export_candidates(dataset, tmp_path)
    test_path = tmp_path / "test_candidates.tsv.gz"
    for split in ("valid", "test"):  # the sum is the uncompressed table's
        assert sums[split] == hashlib.sha256(gzip.decompress((tmp_path / f"{split}_candidates.tsv.gz")
                                                             .read_bytes())).hexdigest()
    first_bytes = test_path.read_bytes()
    assert export_candidates(dataset, tmp_path / "again") == sums  # same candidates, same bytes
    assert (tmp_path / "again" / "test_candidates.tsv.gz").read_bytes() == first_bytes
    assert export_candidates(build_dataset(frames, "in", seed=1, config=small_config), tmp_path / "other") != sums
    with gzip.open(test_path, "rt") as f:
        assert f.readline() == "user_id\tpositive\tnegatives\n"
    table = pd.read_csv(test_path, sep="\t")
    assert list(table["user_id"]) == list(dataset.user_names[dataset.target_users])
    assert list(table["positive"]) == list(dataset.item_names[dataset.test_candidates[:, 0]])
    negatives = table["negatives"].str.split(" ")
    assert (negatives.str.len() == small_config.num_eval_negatives).all()
    assert negatives.tolist() == dataset.item_names[dataset.test_candidates[:, 1:]].tolist()
    valid = pd.read_csv(tmp_path / "valid_candidates.tsv.gz", sep="\t")
    assert list(valid["user_id"]) == list(dataset.user_names[dataset.target_users])
    assert valid["negatives"].str.split(" ").tolist() == dataset.item_names[dataset.valid_candidates[:, 1:]].tolist()
    assert list(valid["positive"]) == list(dataset.item_names[dataset.valid_candidates[:, 0]])


# ---------------------------------------------------------------- reading and validating files

def write(path: Path, body: str) -> Path:
    path.write_text(HEADER + body)
    return path


def test_read_market_file_parses_a_good_file(tmp_path):
    frame = read_market_file(write(tmp_path / "in_5core.txt", "u1 i1 5.0 2016-01-03\nu1 i2 1.0 2017-12-31\n"))
    assert list(frame.columns) == ["userId", "itemId", "rate", "date"]
    assert frame["rate"].tolist() == [5.0, 1.0]
    assert frame["date"].iloc[1] == pd.Timestamp("2017-12-31")


@pytest.mark.parametrize("body, line, message", [
    ("u1 i1 5.0 2016-01-03\nu2 i2 4.0\n", 3, "expected 4 space-separated fields"),
    ("u1 i1 5.0 2016-01-03\nu2 i2 4.0 2016-01-03 extra\n", 3, "expected 4 space-separated fields"),
    ("u1 i1 5.0 2016-01-03\nu1 i2 7.0 2016-01-03\n", 3, "rating must be a number in"),
    ("u1 i1 0.5 2016-01-03\n", 2, "rating must be a number in"),
    ("u1 i1 abc 2016-01-03\n", 2, "rating must be a number in"),
    ("u1 i1 5.0 2016-01-03\nu1 i1 5.0 2016-01-03\nu1 i2 5.0 03/01/2016\n", 4, "date must be YYYY-MM-DD"),
    ("u1 i1 5.0 2016-13-03\n", 2, "date must be YYYY-MM-DD"),
])
def test_malformed_lines_are_reported_with_file_and_line_number(tmp_path, body, line, message):
    path = write(tmp_path / "in_5core.txt", body)
    with pytest.raises(DataError, match=rf"in_5core\.txt:{line}: .*{message}"):
        read_market_file(path)


def test_a_wrong_header_is_reported(tmp_path):
    path = tmp_path / "in_5core.txt"
    path.write_text("user item rating time\nu1 i1 5.0 2016-01-03\n")
    with pytest.raises(DataError, match=r"in_5core\.txt:1: header must be"):
        read_market_file(path)


def test_a_file_without_interactions_or_not_utf8_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"in_5core\.txt: no interaction after the header$"):
        read_market_file(write(tmp_path / "in_5core.txt", ""))
    path = tmp_path / "jp_5core.txt"
    path.write_bytes(HEADER.encode() + b"u1 i\xff1 5.0 2016-01-03\n")
    with pytest.raises(DataError, match=r"jp_5core\.txt: not UTF-8 text \(byte 28\)"):
        read_market_file(path)


def test_a_target_user_with_one_interaction_is_a_data_error_of_the_checks_and_of_the_split(tmp_path):
    frames = {"aa": read_market_file(write(tmp_path / "aa_5core.txt", "u1 i1 5.0 2016-01-03\nu1 i2 5.0 2016-01-04\n"
                                                                       "u2 i1 5.0 2016-01-03\n")),
              "bb": read_market_file(write(tmp_path / "bb_5core.txt", "u3 i3 5.0 2016-01-03\nu3 i4 5.0 2016-01-04\n"))}
    config = Config(data_markets="aa,bb", num_train_negatives=1, num_eval_negatives=1)
    data_loader.check_data(frames, ["bb"], config)  # every bb user has two
    with pytest.raises(DataError, match=r"^aa: every user needs at least 2 interactions \(validation and test\); "
                                        r"user u2 has 1$"):
        data_loader.check_data(frames, ["aa"], config)
    with pytest.raises(DataError, match="user u2 has 1"):
        build_dataset(frames, "aa", 0, config)


# ---------------------------------------------------------------- finding, downloading, verifying

@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """A served folder with a valid in_5core.txt, whose checksum the project expects."""
    served = tmp_path / "served"
    served.mkdir()
    body = HEADER + "u1 i1 5.0 2016-01-03\nu1 i2 4.0 2016-02-03\n"
    (served / "in_5core.txt").write_text(body)
    digest = hashlib.sha256(body.encode()).hexdigest()
    monkeypatch.setattr(data_loader, "expected_checksums", lambda: {"in_5core.txt": digest})
    monkeypatch.delenv("XMREC_DIR", raising=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{market}}_5core.txt"
    yield served, url
    server.shutdown()
    server.server_close()


def test_missing_files_are_downloaded_verified_and_kept(fake_release, tmp_path):
    served, url = fake_release
    config = Config(data_dir=str(tmp_path / "data"), data_url=url)
    path = locate_data_file("in", config)
    assert path == tmp_path / "data" / "in_5core.txt"
    assert path.read_text() == (served / "in_5core.txt").read_text()
    assert not list((tmp_path / "data").glob("*.part"))


def test_a_download_that_fails_verification_leaves_nothing_behind(fake_release, tmp_path):
    served, url = fake_release
    (served / "in_5core.txt").write_text(HEADER + "u1 i1 5.0 2016-01-03\n")  # truncated
    config = Config(data_dir=str(tmp_path / "data"), data_url=url)
    with pytest.raises(DataError, match="could not download .*SHA-256 mismatch"):
        locate_data_file("in", config)
    assert not (tmp_path / "data").exists()  # not even an empty folder


def test_an_unreachable_source_is_a_clear_error(fake_release, tmp_path):
    _, url = fake_release
    config = Config(data_dir=str(tmp_path / "data"), data_url=url.replace("{market}_5core", "missing/{market}"))
    with pytest.raises(DataError, match="could not download .*set XMREC_DIR"):
        locate_data_file("in", config)


def test_data_dir_comes_first_then_xmrec_dir(fake_release, tmp_path, monkeypatch):
    served, url = fake_release
    config = Config(data_dir=str(tmp_path / "empty"), data_url="http://127.0.0.1:9/{market}")
    monkeypatch.setenv("XMREC_DIR", str(served))
    assert locate_data_file("in", config) == served / "in_5core.txt"
    assert locate_data_file("in", dataclasses.replace(config, data_dir=str(served))) == served / "in_5core.txt"


def test_a_local_file_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    """In data_dir without XMREC_DIR: deleting it downloads the release's file on the next run."""
    monkeypatch.delenv("XMREC_DIR", raising=False)
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "in_5core.txt", "u1 i1 5.0 2016-01-03\n")
    with pytest.raises(DataError, match=r"in_5core\.txt: SHA-256 mismatch .*delete it and the next run downloads"):
        locate_data_file("in", Config(data_dir=str(folder)))


@pytest.mark.parametrize("corrupt_in", ["data_dir", "XMREC_DIR"])
def test_a_wrong_checksum_with_xmrec_dir_set_is_not_told_to_delete_the_file(corrupt_in, tmp_path, monkeypatch):
    """With XMREC_DIR set nothing is downloaded: deleting the file would not bring it back."""
    folders = {"data_dir": tmp_path / "data", "XMREC_DIR": tmp_path / "xmrec"}
    for folder in folders.values():
        folder.mkdir()
    write(folders[corrupt_in] / "in_5core.txt", "u1 i1 5.0 2016-01-03\n")
    monkeypatch.setenv("XMREC_DIR", str(folders["XMREC_DIR"]))
    with pytest.raises(DataError) as error:
        locate_data_file("in", Config(data_dir=str(folders["data_dir"])))
    message = str(error.value)
    assert message.startswith(f"{folders[corrupt_in] / 'in_5core.txt'}: SHA-256 mismatch")
    assert "replace it with the release's file (https://" in message and "delete" not in message


def test_without_the_checksum_file_the_error_names_it_not_the_data_file(tmp_path, monkeypatch):
    """A copy without data/SHA256SUMS: the data file is readable, the checksum file is missing."""
    monkeypatch.delenv("XMREC_DIR", raising=False)
    monkeypatch.setattr(data_loader, "CHECKSUM_FILE", tmp_path / "SHA256SUMS")
    data_file = write(tmp_path / "in_5core.txt", "u1 i1 5.0 2016-01-03\n")
    with pytest.raises(DataError) as error:
        locate_data_file("in", Config(data_dir=str(tmp_path)))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'SHA256SUMS'}: cannot be read (No such file or directory)")
    assert "restore it" in message and str(data_file) not in message


def test_markets_the_release_does_not_know_are_read_with_a_note(tmp_path, monkeypatch, capsys):
    """Any markets in XMarket's format, under data_file's names; market ids sorted by name."""
    monkeypatch.delenv("XMREC_DIR", raising=False)
    write(tmp_path / "ratings_bb.txt", "u1 i1 5.0 2016-01-03\nu1 i2 4.0 2016-01-04\n")
    write(tmp_path / "ratings_aa.txt", "u2 i1 3.0 2016-01-03\nu2 i3 4.0 2016-01-05\nu3 i3 1.0 2016-02-01\n")
    config = Config(data_dir=str(tmp_path), data_markets="bb,aa", target_market="bb", data_file="ratings_{market}.txt")
    frames = data_loader.load_markets(config)
    assert list(frames) == ["aa", "bb"] and [len(f) for f in frames.values()] == [3, 2]
    note = capsys.readouterr().err.strip()
    assert note == (f"note: {tmp_path / 'ratings_aa.txt'}, {tmp_path / 'ratings_bb.txt'}: not files of the XMarket "
                    f"Electronics release (data/SHA256SUMS), used without a checksum")
    assert data_loader.market_statistics(frames).loc[["aa", "bb", "all"], "ratings"].tolist() == [3, 2, 5]
    missing = r"ratings_zz\.txt: no such file, and only the XMarket Electronics files .* are downloaded; put market zz's"
    with pytest.raises(DataError, match=missing):
        data_loader.load_markets(dataclasses.replace(config, data_markets="aa,bb,zz"))


@pytest.mark.slow  # starts a process
def test_the_default_data_dir_is_the_repositorys_from_any_working_folder(tmp_path):
    """`python /path/to/data_loader.py` run elsewhere looks in the repository's data/, not ./data."""
    env = {key: value for key, value in os.environ.items() if key != "XMREC_DIR"}
    result = subprocess.run([sys.executable, str(REPO / "data_loader.py"), "--data_url=http://127.0.0.1:9/{market}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    missing = [m for m in ELECTRONICS_MARKETS if not (REPO / "data" / f"{m}_5core.txt").is_file()]
    if missing:  # the repository's data/ lacks a file: it is downloaded there (and here, the source fails)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: could not download http://127.0.0.1:9/{missing[0]} to "
                                        f"{REPO / 'data' / f'{missing[0]}_5core.txt'}: ")
    else:
        assert result.returncode == 0 and "all" in result.stdout, result.stderr
    assert not (tmp_path / "data").exists()


def test_the_default_folders_are_the_repositorys_and_other_relative_ones_the_working_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repository_or_given(Config(), "data_dir") == REPO / "data"
    assert repository_or_given(Config(), "log_dir") == REPO / "log"
    assert repository_or_given(Config(log_dir="runs"), "log_dir").resolve() == tmp_path / "runs"
    assert repository_or_given(Config(data_dir="/x/data"), "data_dir") == Path("/x/data")


@pytest.mark.parametrize("per", ["distinct_item", "positive_row"])
def test_more_training_negatives_than_a_users_other_items_is_one_line_naming_the_most(frames, per):
    config = Config(num_train_negatives=50, train_negatives_per=per)
    with pytest.raises(ConfigError, match=r"num_train_negatives=50: user U\w+ of \w+ has \d+ of the \d+ items") as error:
        check_train_negatives(frames, config)
    most = int(str(error.value).rsplit(" ", 1)[1])
    check_train_negatives(frames, dataclasses.replace(config, num_train_negatives=most))
    with pytest.raises(ConfigError):
        check_train_negatives(frames, dataclasses.replace(config, num_train_negatives=most + 1))


SPEC_STATISTICS = {  # SPEC section 1: users / items / ratings
    "de": (1851, 2179, 17300), "jp": (487, 955, 4485), "in": (239, 470, 2015),
    "fr": (1838, 1879, 17624), "ca": (4668, 5735, 44779), "mx": (1878, 1645, 17095),
    "uk": (3352, 3251, 31547),
}


def test_real_data_statistics_match_the_spec(real_config):
    table = data_loader.market_statistics(data_loader.load_markets(real_config))
    for market, expected in SPEC_STATISTICS.items():
        assert tuple(table.loc[market, ["users", "items", "ratings"]]) == expected
    assert table.loc["all", "items"] == 8304


def test_data_loader_prints_the_statistics(real_config):
    result = subprocess.run([sys.executable, "data_loader.py"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "XMREC_DIR": real_config.data_dir})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: tuple(int(v) for v in line.split()[1:]) for line in lines[1:]}
    assert {m: rows[m] for m in SPEC_STATISTICS} == SPEC_STATISTICS
    assert rows["all"][1] == 8304
