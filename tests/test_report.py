"""runs, report, figures, documents: tables, figures and generated blocks built from fabricated run folders,
every number checked."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from config import Config
from reporting import documents, report, runs
from reporting.report import candidates_line, comparison_text, paper_table, study_table
from reporting.runs import collect, summary_table
from tests.conftest import REPO, without_write_override

AUTHORS = json.loads((REPO / "data" / "authors_logged_runs.json").read_text())["markets"]
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")


def fabricate(log_dir: Path, name: str, market: str, values: dict[int, float],
              candidates: dict[int, str] | None = None, complete: bool | None = None, **settings) -> Path:
    """A run folder whose seed S scores values[S] + offset on every test metric (offset: HR@5 0,
    HR@10 0.1, NDCG@5 -0.1, NDCG@10 -0.05; fine-tuning adds 0.02), keeps epoch 2 of 3 in each
    stage, and whose validation metrics are 0.1 x epoch; `complete` goes to results.json."""
    offsets = dict(zip(METRICS, (0.0, 0.1, -0.1, -0.05)))
    folder = log_dir / name
    folder.mkdir(parents=True)
    config = dataclasses.asdict(dataclasses.replace(Config(), target_market=market, **settings))
    (folder / "config.json").write_text(json.dumps(config))
    runs, records = [], []
    for seed, value in values.items():
        runs.append({"seed": seed, **{stage: {**{m: value + offsets[m] + bump for m in METRICS},
                                               "epochs": 3, "best_epoch": 2}
                                      for stage, bump in (("pretrain", 0.0), ("finetune", 0.02))}})
        if candidates is not None:
            runs[-1]["candidates_sha256"] = {"valid": "v" + candidates[seed], "test": candidates[seed]}
        records += [{"seed": seed, "stage": stage, "epoch": e, "loss": 0.5,
                     "valid": {m: 0.1 * e for m in METRICS}, "seconds": 1.0, "train_seconds": 1.0}
                    for stage in ("pretrain", "finetune") for e in (1, 2, 3)]
    stored = {"target_market": market, "runs": runs} | ({} if complete is None else {"complete": complete})
    (folder / "results.json").write_text(json.dumps(stored))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def log_dir(tmp_path):
    fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.9})  # older copy of seed 0: ignored
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.60, 1: 0.70, 2: 0.80})
    fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.40, 1: 0.50})
    fabricate(tmp_path, "jp-20260103-000000", "jp", {0: 0.30}, lr=0.01)  # another variant
    return tmp_path


@pytest.mark.slow  # starts a process
def test_report_tables_hold_the_hand_computed_numbers(log_dir):
    result = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={log_dir}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(log_dir / "report.csv")
    default = table[table["variant"] == "acmr"].set_index(["stage", "market", "metric"])

    row = default.loc[("pretrain", "in", "HR@5")]
    assert (row["mean"], row["n"]) == (pytest.approx(0.70), 3)
    assert row["std"] == pytest.approx(0.10)  # sample std of 0.6, 0.7, 0.8
    assert row["authors"] == AUTHORS["in"]["pretrain"]["HR@5"] == 0.6695
    assert row["valid"] == pytest.approx(0.2)  # metrics.jsonl at best_epoch 2 (epoch 3 has 0.3)
    assert row["authors_valid"] == AUTHORS["in"]["pretrain"]["valid_at_best_epoch"]["HR@5"] == 0.6569
    assert row["difference"] == pytest.approx(0.70 - 0.6695)
    assert row["tolerance"] == pytest.approx(0.20) and not row["outside_tolerance"]  # 2 std > 0.03

    row = default.loc[("finetune", "jp", "NDCG@5")]  # 0.40, 0.50 - 0.1 + 0.02
    assert row["mean"] == pytest.approx(0.37) and row["n"] == 2
    assert row["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert row["authors"] == AUTHORS["jp"]["finetune"]["NDCG@5"] == 0.496
    assert not row["outside_tolerance"]  # |0.37 - 0.496| = 0.126 < 2 * 0.0707

    row = default.loc[("pretrain", "average", "HR@10")]  # mean of in 0.80 and jp 0.55
    assert row["mean"] == pytest.approx((0.80 + 0.55) / 2)
    assert row["authors"] == pytest.approx((0.7824 + 0.6201) / 2)
    assert row["valid"] == pytest.approx(0.2)
    assert row["authors_valid"] == pytest.approx((0.7448 + 0.6304) / 2)
    assert pd.isna(row["std"]) and row["tolerance"] == pytest.approx(0.03)
    assert not row["outside_tolerance"]  # |0.675 - 0.70125| = 0.02625 < 0.03

    other = table[table["variant"] == "acmr (lr=0.01)"]
    assert set(other["market"]) == {"jp", "average"} and (other["n"] == 1).all()
    assert other["std"].isna().all() and other["tolerance"].eq(0.03).all()
    assert len(table) == 2 * (3 + 2) * 4  # (default: in, jp, average; lr: jp, average) x stages x metrics

    report = (log_dir / "report.md").read_text()
    assert ("| in | after pre-training | 3 | 0.7000 ± 0.1000 [0.6695] | 0.2000 [0.6569] "
            "| 0.8000 ± 0.1000 [0.7824] | 0.2000 [0.7448] | 0.6000 ± 0.1000 [0.5580] | 0.2000 [0.5514] "
            "| 0.6500 ± 0.1000 [0.5942] | 0.2000 [0.5798] |") in report
    assert "| jp | after fine-tuning | 1 | 0.3200 [0.6386] **!** | 0.2000 [0.6489] |" in report  # lr=0.01
    assert "## acmr (lr=0.01)" in report
    assert "## All models: test HR@10 / NDCG@10 after each stage they have" in report
    assert "| acmr | after pre-training | 0.5500 ± 0.0707 (2) | 0.4000 ± 0.0707 (2) | 0.8000 ± 0.1000 (3) | 0.6500 ± 0.1000 (3) |" in report
    assert "| acmr | after fine-tuning | 0.5700 ± 0.0707 (2) | 0.4200 ± 0.0707 (2) | 0.8200 ± 0.1000 (3) | 0.6700 ± 0.1000 (3) |" in report
    assert "Seeds: acmr: in [0, 1, 2], jp [0, 1]; acmr (lr=0.01): jp [0]." in report
    assert "Markets without runs: de, fr, ca, mx, uk." in report
    assert "Every run here has" not in report and "Still going" not in report
    for name in ("authors_acmr", "curves_acmr", "authors_acmr_lr=0.01", "curves_acmr_lr=0.01",
                 "models_HR10", "models_NDCG10"):
        assert (log_dir / f"{name}.png").stat().st_size > 10_000
    runs = pd.read_csv(log_dir / "report_runs.csv")
    assert len(runs) == (3 + 2 + 1) * 2 and set(runs["folder"]) == {  # the older copy of in seed 0 is out
        "in-20260102-000000", "jp-20260102-000000", "jp-20260103-000000"}


def test_the_flag_marks_our_mean_further_than_two_std_or_the_floor_from_the_authors(log_dir):
    fabricate(log_dir, "mx-20260102-000000", "mx", {0: 0.70, 1: 0.702})  # std 0.0014: the floor counts
    results, _ = collect(sorted(log_dir.iterdir()))
    table = summary_table(results)
    default = table[table["variant"] == "acmr"].set_index(["stage", "market", "metric"])
    # in, pre-training NDCG@5: ours 0.60 +- 0.10 vs the authors' 0.558: inside
    assert not default.loc[("pretrain", "in", "NDCG@5"), "outside_tolerance"]
    # jp, pre-training HR@10: ours 0.55 +- 0.0707 vs 0.6201: inside (0.0701 < 0.1414)
    assert not default.loc[("pretrain", "jp", "HR@10"), "outside_tolerance"]
    # jp, fine-tuning HR@10: ours 0.57 +- 0.0707 vs 0.7351: outside (0.1651 > 0.1414)
    assert default.loc[("finetune", "jp", "HR@10"), "outside_tolerance"]
    # mx, pre-training HR@5: ours 0.701 +- 0.0014 vs 0.7194: inside (0.0184 < 0.03 > 2 std)
    row = default.loc[("pretrain", "mx", "HR@5")]
    assert row["tolerance"] == pytest.approx(0.03) and not row["outside_tolerance"]
    # mx, pre-training NDCG@5: ours 0.601 vs 0.6496: outside (0.0486 > 0.03)
    assert default.loc[("pretrain", "mx", "NDCG@5"), "outside_tolerance"]
    # one seed (lr=0.01, jp, pre-training HR@5): 0.30 vs 0.4887, outside the floor
    assert table.set_index(["variant", "stage", "market", "metric"]).loc[
        ("acmr (lr=0.01)", "pretrain", "jp", "HR@5"), "outside_tolerance"]


def test_validation_comes_from_results_json_where_the_run_wrote_it(tmp_path):
    folder = fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.5, 1: 0.5})
    stored = json.loads((folder / "results.json").read_text())
    stored["runs"][0]["finetune"]["valid"] = {m: 0.9 for m in METRICS}
    stored["runs"][1]["pretrain"]["best_epoch"] = 7  # no such record in metrics.jsonl
    (folder / "results.json").write_text(json.dumps(stored))
    results, _ = collect([folder])
    by_run = results.set_index(["seed", "stage"])
    assert by_run.loc[(0, "finetune"), "valid NDCG@5"] == 0.9  # results.json first
    assert by_run.loc[(1, "finetune"), "valid NDCG@5"] == pytest.approx(0.2)  # metrics.jsonl, epoch 2
    assert pd.isna(by_run.loc[(1, "pretrain"), "valid HR@10"])
    table = summary_table(results).set_index(["stage", "market", "metric"])
    assert table.loc[("finetune", "in", "HR@5"), "valid"] == pytest.approx((0.9 + 0.2) / 2)
    assert pd.isna(table.loc[("pretrain", "in", "HR@5"), "valid"])  # one seed without: no mean


@pytest.mark.slow  # starts a process
def test_a_run_still_going_is_marked_not_reported_as_finished(tmp_path):
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.6, 1: 0.7}, complete=False)
    fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.4, 1: 0.5}, complete=True)
    results, _ = collect(sorted(tmp_path.iterdir()))
    table = summary_table(results).set_index(["stage", "market", "metric"])
    assert not table.loc[("pretrain", "in", "HR@5"), "complete"]
    assert table.loc[("pretrain", "jp", "HR@5"), "complete"]
    assert not table.loc[("pretrain", "average", "HR@5"), "complete"]
    lines = paper_table(summary_table(results), "acmr")
    assert lines[2].startswith("| jp | after pre-training | 2 | ")
    assert lines[4].startswith("| in | after pre-training | 2† | ")
    assert lines[-1].startswith("† Some of these runs are not complete")
    result = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "† Still going: in-20260102-000000." in (tmp_path / "report.md").read_text()


def test_settings_every_run_shares_are_stated_once_not_in_every_name(tmp_path):
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.5}, lr=0.01)
    fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.5}, lr=0.01, stages="finetune")
    fabricate(tmp_path, "jp-20260103-000000", "jp", {0: 0.5}, lr=0.01, split="temporal")
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert set(results["variant"]) == {"acmr", "acmr-no-pretraining", "acmr (split=temporal)"}
    assert set(results["shared_settings"]) == {"lr=0.01"}
    assert comparison_text([tmp_path / "in-20260102-000000"]).count("lr=0.01") == 1  # said once, in no name


def test_a_run_from_given_weights_keeps_them_in_its_name_and_is_not_compared_with_the_authors_log(tmp_path):
    fabricate(tmp_path, "acmr-in-seed0-20260102-000000", "in", {0: 0.5})
    fabricate(tmp_path, "acmr-finetune-from-authors-in-pretrain-in-seed0-20260102-000000", "in", {0: 0.5},
              stages="finetune", init_weights="authors:in:pretrain")
    alone, _ = collect([tmp_path / "acmr-finetune-from-authors-in-pretrain-in-seed0-20260102-000000"])
    assert set(alone["variant"]) == {"acmr (stages=finetune init_weights=authors:in:pretrain)"}
    both, _ = collect(sorted(tmp_path.iterdir()))
    assert runs.comparable_variants(both) == ["acmr"]


def test_the_training_log_comparison_uses_the_same_numbers(log_dir):
    text = comparison_text([log_dir / "in-20260102-000000"])
    assert "0.7000+-0.1000 [0.6695]" in text
    assert "0.2000 [0.6569]" in text  # validation at the kept epoch [the authors']
    assert "after fine-tuning (settings: acmr)" in text


@pytest.mark.slow  # starts a process
def test_no_run_folder_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: no run folder with a results.json")
    assert result.stderr.count("\n") == 1, result.stderr



def report_files(folder: Path) -> dict[str, bytes]:
    """The files directly in `folder` (a report's, and whatever else is there), by name."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_a_report_interrupted_while_it_writes_a_figure_leaves_the_previous_report_whole(log_dir, monkeypatch):
    import matplotlib.figure
    report.build_report([log_dir], log_dir, "the previous report")
    before = report_files(log_dir)
    assert {"report.md", "report.csv", "authors_acmr.png"} <= before.keys()
    fabricate(log_dir, "mx-20260104-000000", "mx", {0: 0.5})  # the next report differs in every file
    original, saved = matplotlib.figure.Figure.savefig, []

    def savefig_cut_off(self, path, **kwargs):  # Ctrl-C with the second figure half written
        original(self, path, **kwargs)
        saved.append(Path(path))
        if len(saved) == 2:
            saved[-1].write_bytes(saved[-1].read_bytes()[:saved[-1].stat().st_size // 2])
            raise KeyboardInterrupt
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_cut_off)
    with pytest.raises(KeyboardInterrupt):
        report.build_report([log_dir], log_dir, "the interrupted report")
    assert len(saved) == 2 and all(path.parent != log_dir for path in saved)  # into temporaries elsewhere
    assert report_files(log_dir) == before
    assert not [path.name for path in log_dir.iterdir() if path.name.startswith(".") or path.suffix == ".tmp"]


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_the_report_is_one_line_and_exit_130_and_changes_no_file(signal_name, log_dir):
    subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={log_dir}"], cwd=REPO, check=True,
                   capture_output=True)
    before = report_files(log_dir)
    fabricate(log_dir, "mx-20260104-000000", "mx", {0: 0.5})
    script = ("import os, runpy, signal, sys, matplotlib.figure\n"  # the signal arrives after the first figure
              "original = matplotlib.figure.Figure.savefig\n"
              "def savefig(self, *args, **kwargs):\n"
              "    original(self, *args, **kwargs)\n"
              f"    os.kill(os.getpid(), signal.{signal_name})\n"
              "matplotlib.figure.Figure.savefig = savefig\n"
              f"sys.argv = ['evaluate.py', 'report', '--log_dir={log_dir}']\n"
              "runpy.run_path('evaluate.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip() == f"interrupted: no report written; the files in {log_dir} are as they were"
    assert report_files(log_dir) == before
    assert not [path.name for path in log_dir.iterdir() if path.name.startswith(".")]


@pytest.mark.slow
def test_a_report_that_cannot_read_a_run_folder_or_write_its_files_says_which_path_in_one_line(log_dir):
    def report_error(*args: str, **kwargs) -> str:
        result = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={log_dir}", *args],
                                cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)
        assert result.returncode == 1, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        return line

    (log_dir / "a_file").write_text("not a folder")
    assert report_error(f"--out={log_dir}/a_file/report") == (
        f"error: cannot write into {log_dir}/a_file/report: Not a directory")
    log_dir.chmod(0o555)  # a read-only log folder
    try:
        assert report_error(preexec_fn=without_write_override) == (
            f"error: cannot write into {log_dir}: Permission denied")
    finally:
        log_dir.chmod(0o755)
    assert not (log_dir / "report.md").exists()
    metrics = log_dir / "jp-20260102-000000" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace("}\n", "\n", 1))  # its first line cut short
    assert report_error().startswith(f"error: {metrics}:1: not valid JSON (Expecting ',' delimiter")
    config = log_dir / "jp-20260103-000000" / "config.json"
    config.write_text(config.read_text()[:40])  # cut off
    assert report_error().startswith(f"error: {config}: not valid JSON (")

def test_the_candidates_line_says_whether_each_market_and_seed_saw_one_candidate_set(tmp_path):
    fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.5, 1: 0.5}, candidates={0: "a", 1: "b"})
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.5, 1: 0.5}, candidates={0: "a", 1: "b"}, lr=0.01)
    fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.5}, candidates={0: "c"})
    fabricate(tmp_path, "jp-20260103-000000", "jp", {1: 0.5})  # records none: not counted
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert candidates_line(results) == ("Test candidates (SHA-256 in results.json): 5 runs of 2 variant(s) "
                                        "over 3 (market, seed) pairs; every pair's runs saw the same "
                                        "candidates.")
    fabricate(tmp_path, "in-20260104-000000", "in", {1: 0.5}, candidates={1: "d"}, split="temporal")
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert candidates_line(results).endswith("different candidate sets (expected where protocol settings "
                                             "differ) for in seed 1 (2 sets).")


def add_breakdowns(folder: Path, by_seed: dict[int, dict[str, tuple[float, int] | None]]) -> None:
    """Give the fine-tuning stage of seed S the break-down by_seed[S]: group -> (HR@10, users),
    NDCG@10 = HR@10 / 2; None for an empty group."""
    results = json.loads((folder / "results.json").read_text())
    for run in results["runs"]:
        if run["seed"] in by_seed:
            run["finetune"]["breakdown"] = {
                group: None if value is None else {"HR@5": 0.0, "HR@10": value[0], "NDCG@5": 0.0,
                                                   "NDCG@10": value[0] / 2, "users": value[1]}
                for group, value in by_seed[run["seed"]].items()}
    (folder / "results.json").write_text(json.dumps(results))


@pytest.mark.slow  # starts a process
def test_the_breakdown_table_averages_each_groups_metrics_over_the_seeds_where_it_has_users(tmp_path):
    folder = fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.5, 1: 0.5, 2: 0.5})
    groups = ("repeat_purchase", "new_purchase", "item_seen_in_target_training", "item_unseen_in_target_training")
    add_breakdowns(folder, {0: dict(zip(groups, ((1.0, 6), (0.6, 233), (0.8, 200), (0.2, 39)))),
                            1: dict(zip(groups, (None, (0.7, 240), (0.9, 210), (0.4, 30))))})  # seed 2: none
    result = subprocess.run([sys.executable, "evaluate.py", "report", f"--log_dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "report_breakdown.csv").set_index(["stage", "market", "group"])
    assert set(table.index.get_level_values("stage")) == {"finetune"}  # pre-training has none
    new = table.loc[("finetune", "in", "new_purchase")]
    assert (new["HR@10"], new["NDCG@10"], new["users"], new["seeds"]) == (
        pytest.approx(0.65), pytest.approx(0.325), pytest.approx(236.5), 2)
    repeat = table.loc[("finetune", "in", "repeat_purchase")]  # no user on seed 1: its metrics are seed 0's
    assert (repeat["HR@10"], repeat["scored"], repeat["seeds"], repeat["users"]) == (pytest.approx(1.0), 1, 2, 3.0)
    report = (tmp_path / "report.md").read_text()
    assert ("| acmr | after fine-tuning | in | 1.0000 / 0.5000 (3; 1 of 2 seeds) | 0.6500 / 0.3250 (236) "
            "| 0.8500 / 0.4250 (205) | 0.3000 / 0.1500 (34) | 2 |") in report


def test_the_protocol_study_table_has_a_row_per_protocol_and_a_column_per_model_and_market(tmp_path):
    fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.5, 1: 0.7})
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.3}, eval_negative_pool="target")
    fabricate(tmp_path, "in-20260103-000000", "in", {0: 0.2, 1: 0.4}, eval_mode="full", split="temporal")
    fabricate(tmp_path, "jp-20260101-000000", "jp", {0: 0.6}, model="popularity", stages="finetune",
              split="temporal")
    pretrain_only = fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.4}, stages="pretrain", lr=0.01)
    stored = json.loads((pretrain_only / "results.json").read_text())
    for run in stored["runs"]:
        del run["finetune"]  # its last stage is pre-training
    (pretrain_only / "results.json").write_text(json.dumps(stored))
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert set(zip(results["model"], results["protocol"])) == {
        ("acmr", ""), ("acmr", "eval_negative_pool=target"), ("acmr", "eval_mode=full split=temporal"),
        ("popularity", "split=temporal"), ("acmr-no-finetuning (lr=0.01)", "")}
    lines = study_table(results)
    # last stage: fine-tuning adds 0.02; HR@10 = value + 0.1 + 0.02, NDCG@10 = value - 0.05 + 0.02
    assert lines == [
        "| protocol | acmr, `in` | acmr-no-finetuning (lr=0.01), `jp` | popularity, `jp` |",
        "|---|---|---|---|",
        "| authors (default) | 0.7200 ± 0.1414 / 0.5700 ± 0.1414 (2) | 0.5000 / 0.3500 (1) |  |",
        "| `eval_negative_pool=target` | 0.4200 / 0.2700 (1) |  |  |",
        "| `split=temporal` |  |  | 0.7200 / 0.5700 (1) |",
        "| `eval_mode=full split=temporal` | 0.4200 ± 0.1414 / 0.2700 ± 0.1414 (2) |  |  |"]
    assert study_table(results[results["protocol"] == ""]) == []  # one protocol: no study


def test_a_run_folder_from_before_the_authors_data_defaults_is_named_by_what_it_ran(tmp_path):
    """A config.json without history_repeats / train_negatives_per / the per-stage settings
    (committed before they existed) is not config.py's default ACMR."""
    old = fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.5})
    saved = json.loads((old / "config.json").read_text())
    for key in ("history_repeats", "train_negatives_per", "pretrain_epochs", "finetune_epochs",
                "bucket_pretrain_batches", "bucket_finetune_batches"):
        del saved[key]
    (old / "config.json").write_text(json.dumps({**saved, "num_epochs": 50, "bucket_batches": True}))
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.6})
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert sorted(set(results["variant"])) == [
        "acmr", "acmr (history_repeats=False train_negatives_per=positive_row bucket_finetune_batches=True)"]


def test_the_study_table_of_a_group_holds_its_users_metrics_and_number(tmp_path):
    groups = ("repeat_purchase", "new_purchase", "item_seen_in_target_training", "item_unseen_in_target_training")
    default = fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.5, 1: 0.5})
    add_breakdowns(default, {0: dict(zip(groups, (None, (0.5, 239), (0.6, 199), (0.2, 40)))),
                             1: dict(zip(groups, (None, (0.5, 239), (0.6, 209), (0.4, 30))))})
    temporal = fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.5}, split="temporal")
    add_breakdowns(temporal, {0: dict(zip(groups, (None, (0.5, 239), (0.6, 189), (0.1, 50))))})
    results, _ = collect(sorted(tmp_path.iterdir()))
    assert study_table(results, "item_unseen_in_target_training") == [
        "| protocol | acmr, `in` |", "|---|---|",
        "| authors (default) | 0.3000 ± 0.1414 / 0.1500 ± 0.0707 (2; 35 users) |",
        "| `split=temporal` | 0.1000 / 0.0500 (1; 50 users) |"]


def test_the_headline_comes_from_results_paper_once_it_has_runs_and_says_how_many(tmp_path, monkeypatch, request):
    documents.committed.cache_clear()  # it caches by path, which this test points elsewhere
    request.addfinalizer(documents.committed.cache_clear)
    monkeypatch.setattr(documents, "REPO", tmp_path)
    monkeypatch.setattr(documents, "RESULTS", tmp_path / "results")
    fabricate(tmp_path / "results" / "archive" / "reproduction", "acmr-in-seeds0-1-20260101-000000", "in", {0: 0.5, 1: 0.6})
    assert "results/archive/reproduction" in documents.headline()[1]
    fabricate(tmp_path / "results" / "paper", "acmr-in-seed0-20260102-000000", "in", {0: 0.7})
    fabricate(tmp_path / "results" / "paper", "acmr-jp-seed0-20260102-000000", "jp", {0: 0.7})
    results, source = documents.headline()
    assert set(results["market"]) == {"in", "jp"}
    assert "2 of the 35 (market, seed) runs" in source and "still to run" in source


def test_the_tuned_table_puts_each_markets_preset_on_one_row():
    rows = [{"variant": v, "market": m, "seed": s, "stage": "finetune", "HR@10": hr, "NDCG@10": hr / 2}
            for v, m, hr in [("gmf", "in", 0.1), ("gmf-tuned-in (patience_resets=True)", "in", 0.8),
                             ("gmf-tuned-jp (patience_resets=True)", "jp", 0.6)] for s in (0, 1)]
    lines = report.tuned_table(pd.DataFrame(rows))
    assert lines[0] == "| model | jp HR@10 | jp NDCG@10 | in HR@10 | in NDCG@10 |"
    assert lines[2] == "| gmf |  |  | 0.1000 ± 0.0000 (2) | 0.0500 ± 0.0000 (2) |"
    assert lines[3] == ("| gmf, tuned (gmf-tuned-<market>) | 0.6000 ± 0.0000 (2) | 0.3000 ± 0.0000 (2) | "
                        "0.8000 ± 0.0000 (2) | 0.4000 ± 0.0000 (2) |")
    assert report.tuned_table(pd.DataFrame(rows[:2])) == []


def test_the_tuned_table_shows_the_trained_cross_market_baselines_and_forec_after_each_stage():
    forec = "forec-trained (patience_resets=True)"
    rows = [{"variant": v, "market": "jp", "seed": 0, "stage": stage, "HR@10": hr, "NDCG@10": hr / 2}
            for v, stage, hr in [(forec, "pretrain", 0.5), (forec, "finetune", 0.7),
                                 ("gmf++-trained (patience_resets=True)", "pretrain", 0.6),
                                 ("nmf-tuned-jp+mx (patience_resets=True)", "finetune", 0.8),
                                 ("forec-tuned-jp (patience_resets=True)", "pretrain", 0.55),
                                 ("forec-tuned-jp (patience_resets=True)", "finetune", 0.75)]]
    lines = report.tuned_table(pd.DataFrame(rows))
    assert lines[2:] == ["| forec, trained (forec-trained) | 0.7000 (1) | 0.3500 (1) |",
                         "| forec, tuned (forec-tuned-<market>) | 0.7500 (1) | 0.3750 (1) |",
                         "| gmf++, trained (gmf++-trained) | 0.6000 (1) | 0.3000 (1) |",
                         "| nmf++ (forec after pre-training), trained (forec-trained) | 0.5000 (1) | 0.2500 (1) |",
                         "| nmf++ (forec after pre-training), tuned (forec-tuned-<market>) | 0.5500 (1) | 0.2750 (1) |",
                         "| nmf, tuned (nmf-tuned-<market>) | 0.8000 (1) | 0.4000 (1) |"]


def test_the_authors_weights_table_puts_their_log_beside_each_split(tmp_path):
    metrics = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
    logged = {"test": dict(zip(metrics, (0.7, 0.8, 0.6, 0.65))), "valid": dict(zip(metrics, (0.1, 0.2, 0.3, 0.4)))}
    for seed, test in ((2, (0.5, 0.6, 0.25, 0.3)), (0, (0.7, 0.6, 0.35, 0.3))):
        scored = {"target_market": "uk", "stage": "finetune", "seed": seed, "authors_logged": logged,
                  "test": dict(zip(metrics, test)), "valid": dict(zip(metrics, (0.4, 0.5, 0.2, 0.25))),
                  "expected_share_in_checkpoint_training": {"test": 0.774 + seed / 100, "valid": 0.5}}
        (tmp_path / f"uk_finetune_seed{seed}.json").write_text(json.dumps({"uk": scored}))
    lines = documents.authors_weights_table(tmp_path)
    assert lines[2:] == [  # std over the two seeds: 0.1 * 2 ** 0.5 = 0.1414 and 0.0707
        "| uk | after fine-tuning | test | 0 | 0.7000 [0.7000] | 0.6000 [0.8000] | 0.3500 [0.6000] | 0.3000 [0.6500] | 77% |",
        "| uk | after fine-tuning | test | 2 | 0.5000 [0.7000] | 0.6000 [0.8000] | 0.2500 [0.6000] | 0.3000 [0.6500] | 79% |",
        "| uk | after fine-tuning | test | mean of 0, 2 | 0.6000 ± 0.1414 [0.7000] | 0.6000 ± 0.0000 [0.8000] | "
        "0.3000 ± 0.0707 [0.6000] | 0.3000 ± 0.0000 [0.6500] | 78% |",
        "| uk | after fine-tuning | valid | mean of 0, 2 | 0.4000 ± 0.0000 [0.1000] | 0.5000 ± 0.0000 [0.2000] | "
        "0.2000 ± 0.0000 [0.3000] | 0.2500 ± 0.0000 [0.4000] | 50% |"]


def test_the_search_prose_groups_the_models_trained_with_the_same_fixed_settings():
    records = [{"model": model, "fixed": fixed} for model, fixed in
               [("gmf", {"stages": "finetune", "patience": 10}), ("mlp", {"stages": "finetune", "patience": 10}),
                ("gmf++", {"patience": 10, "pretrain_epochs": 100}), ("gmf", {"stages": "finetune", "patience": 10})]]
    assert report.trained_with(records) == {"stages=finetune, patience=10": ["gmf", "mlp"],
                                            "patience=10, pretrain_epochs=100": ["gmf++"]}


def test_a_row_flagged_on_a_metric_the_table_leaves_out_names_it():
    rows = [{"variant": "acmr", "market": market, "stage": stage, "metric": metric, "mean": 0.5, "std": 0.01,
             "authors": 0.5, "valid": 0.5, "authors_valid": 0.5, "n": 5, "complete": True,
             "outside_tolerance": (market, stage, metric) in {("in", "finetune", "HR@5"), ("jp", "pretrain", "HR@10")}}
            for market in ("jp", "in") for stage in ("pretrain", "finetune") for metric in METRICS]
    lines = paper_table(pd.DataFrame(rows), "acmr", ("HR@10", "NDCG@10"))
    by_row = {tuple(line.split(" | ")[:2]): line for line in lines if line.startswith("| ")}
    assert "(**!** HR@5)" in by_row[("| in", "after fine-tuning (**!** HR@5)")]
    assert by_row[("| jp", "after pre-training")].count("**!**") == 1  # shown metric: its own cell's mark
    assert sum("(**!**" in line for line in lines) == 2  # the in row and the note under the table
    assert lines[-1].startswith("(**!** M): on this row M, one of HR@5, NDCG@5 (not shown here)")
    assert not any("(**!**" in line for line in paper_table(pd.DataFrame(rows), "acmr", METRICS))


def test_a_run_in_two_folders_counts_once_and_the_report_says_which_folder_it_kept_and_why(tmp_path):
    fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.9})
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.6, 1: 0.7})
    text = report.build_report([tmp_path], tmp_path, "report").read_text()
    assert ("from 1 run folder(s) (1 more left out: each of their runs is in a newer folder too, listed at the "
            "end).") in text
    assert ("Runs in several folders count once, from the newest folder (the start time that ends its name): "
            "acmr in seed 0: in-20260102-000000 kept, in-20260101-000000 left out.") in text
    assert "| in | after pre-training | 2 | 0.6500 ± 0.0707 [" in text  # seeds 0.6 and 0.7: not 0.9


def test_a_config_json_without_a_setting_is_named_when_it_makes_one_run_replace_another(tmp_path):
    """A run of lr=0.01 whose config.json lost `lr` counts as a default run, newer than the real one."""
    fabricate(tmp_path, "in-20260101-000000", "in", {0: 0.6})
    folder = fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.3}, lr=0.01)
    config = json.loads((folder / "config.json").read_text())
    del config["lr"]
    (folder / "config.json").write_text(json.dumps(config))
    text = report.build_report([tmp_path], tmp_path, "report").read_text()
    assert "acmr in seed 0: in-20260102-000000 kept, in-20260101-000000 left out." in text
    assert ("Run folders whose config.json lacks settings, which count as config.py's defaults in their variant's "
            "name (so their runs may count as, and replace, another variant's): in-20260102-000000 (lr).") in text


def test_a_diverged_run_folder_is_reported_as_diverged_not_as_still_going(tmp_path):
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.6}, complete=False)
    diverged = fabricate(tmp_path, "jp-20260102-000000", "jp", {0: 0.4}, complete=False)
    (diverged / "diverged.txt").write_text("seed 1 pretrain epoch 1: the training loss is nan: ...\n")
    text = report.build_report([tmp_path], tmp_path, "report").read_text()
    assert "† Still going: in-20260102-000000." in text
    assert ("† Diverged (their diverged.txt says where and why; the seeds before count, and a resume refuses them): "
            "jp-20260102-000000.") in text


def test_runs_on_other_markets_have_no_authors_numbers_said_once(tmp_path):
    """Only runs on the seven Electronics markets stand beside the authors' numbers: not runs on
    other markets, nor on a subset of the seven (other pre-training data)."""
    fabricate(tmp_path, "in-20260102-000000", "in", {0: 0.60})
    fabricate(tmp_path, "in-20260103-000000", "in", {0: 0.50}, data_markets="in,jp")
    fabricate(tmp_path, "bb-20260102-000000", "bb", {0: 0.40}, data_markets="aa,bb")
    results, _ = collect(sorted(tmp_path.iterdir()))
    table = summary_table(results)
    with_authors = table.dropna(subset=["authors"])
    assert set(with_authors["variant"]) == {"acmr"} and set(with_authors["market"]) == {"in", "average"}
    assert list(dict.fromkeys(table.loc[table["variant"] == "acmr (data_markets=aa,bb)", "market"])) == ["bb", "average"]
    line = ("No authors' numbers for the runs on data_markets=aa,bb and in,jp: the authors logged runs on the "
            "seven XMarket Electronics markets (ca,de,fr,in,jp,mx,uk) only.")
    assert runs.without_authors_numbers(results) == line
    text = comparison_text(sorted(tmp_path.iterdir()))
    assert text.count(line) == 1 and "nan" not in text and "0.7000 [0.7824]!" in text
    assert runs.market_order(["bb", "average", "uk", "aa", "de"]) == ["de", "uk", "aa", "bb", "average"]


def test_a_run_in_two_folders_counts_from_the_one_started_last_whatever_the_names(tmp_path):
    """`acmr-in-seed0-...` (newer) sorts before `acmr-in-seeds0-1-...` (older) by name: the start
    time at the end of the name decides; `-1` is the second folder started in the same second."""
    fabricate(tmp_path, "acmr-in-seeds0-1-20260101-000000", "in", {0: 0.1, 1: 0.2}, seeds=2)
    fabricate(tmp_path, "acmr-in-seed0-20260102-000000", "in", {0: 0.3})
    fabricate(tmp_path, "acmr-in-seed1-20260102-000000", "in", {1: 0.4}, first_seed=1)
    fabricate(tmp_path, "acmr-in-seed1-20260102-000000-1", "in", {1: 0.5}, first_seed=1)
    results, _ = collect(sorted(tmp_path.iterdir()))
    kept = results[results["stage"] == "pretrain"].set_index("seed")
    assert kept.loc[0, "folder"] == "acmr-in-seed0-20260102-000000" and kept.loc[0, "HR@5"] == 0.3
    assert kept.loc[1, "folder"] == "acmr-in-seed1-20260102-000000-1" and kept.loc[1, "HR@5"] == 0.5
    assert kept.loc[1, "also_in"] == "acmr-in-seed1-20260102-000000 acmr-in-seeds0-1-20260101-000000"


def test_a_run_folder_is_named_by_preset_market_seeds_and_start_time():
    config = dataclasses.asdict(dataclasses.replace(Config(), target_market="jp", model="gmf", stages="finetune", seeds=1))
    assert runs.run_folder_name(config, "20260102-030405") == "gmf-jp-seed0-20260102-030405"
    several = dataclasses.asdict(dataclasses.replace(Config(), target_market="in", first_seed=2, seeds=3))
    assert runs.run_folder_name(several, "20260102-030405") == "acmr-in-seeds2-4-20260102-030405"


def test_a_run_from_given_weights_is_named_by_where_they_come_from_not_as_without_pretraining():
    fresh = dataclasses.asdict(dataclasses.replace(Config(), stages="finetune", seeds=5))
    assert runs.run_folder_name(fresh, "20260102-030405") == "acmr-no-pretraining-in-seeds0-4-20260102-030405"
    authors = {**fresh, "init_weights": "authors:in:pretrain"}
    assert runs.run_folder_name(authors, "20260102-030405") == \
        "acmr-finetune-from-authors-in-pretrain-in-seeds0-4-20260102-030405"
    assert runs.variant_parts(authors)[0] == "acmr (stages=finetune init_weights=authors:in:pretrain)"
    own = {**fresh, "stages": "pretrain+finetune", "init_weights": "log/x/seed{seed}_pretrain_weights.pt"}
    assert runs.run_label(own) == "acmr-pretrain+finetune-from-weights"
    gmf = {**fresh, "model": "gmf", "init_weights": "log/x/seed0_finetune_weights.pt"}
    assert runs.run_label(gmf) == "gmf-finetune-from-weights"


@pytest.mark.parametrize("argv, says", [
    (["--log_dir="], "error: --log_dir= is empty: give it a folder or leave it out"),
    (["--out="], "error: --out= is empty: give it a folder or leave it out"),
    (["{tmp}/nowhere"], "error: {tmp}/nowhere: no such run folder or folder of run folders"),
])
def test_an_empty_option_or_a_missing_folder_is_refused_in_one_line(argv, says, tmp_path):
    with pytest.raises(SystemExit) as stop:
        report.main([arg.format(tmp=tmp_path) for arg in argv])
    assert str(stop.value.code) == says.format(tmp=tmp_path)


@pytest.mark.parametrize("file, text, missing", [("results.json", "{}", "'runs'"), ("config.json", "[]", "'target_market'"),
                                                 ("metrics.jsonl", "{}\n", "'seed'")])
def test_a_run_folder_file_of_another_shape_is_one_line_naming_the_folder(file, text, missing, tmp_path):
    folder = fabricate(tmp_path, "acmr-in-seed0-20260102-000000", "in", {0: 0.5})
    (folder / file).write_text(text)
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path)])
    assert str(stop.value.code) == (f"error: {folder}: config.json, results.json or metrics.jsonl is not a run "
                                    f"folder's (KeyError: {missing}); repair it, or move the folder out of the "
                                    f"folders of the report")
