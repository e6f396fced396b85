"""The documents' tables of numbers are what the committed runs give, and their prose copies none."""
from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

from reporting import documents, runs
from tests.conftest import REPO

DECIMALS = re.compile(r"(?<![\w.])\d*\.\d{2,}(?!\d)")  # 0.7796, .6656, 0.015, 0.03: a result typed by hand
CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.S | re.M)  # commands, settings and printed messages
# Numbers in prose that are not results, each with its reason; nothing else with 2+ decimals may stand in prose.
NOT_RESULTS = (
    r"max\(2 std, 0\.03\)", r"\(0\.03 alone",  # the flag's tolerance (reporting.runs)
    r"arXiv 2305\.15145",  # the paper's earlier preprint
    r"Python 3\.11", r"torch 2\.11\.0", r"Ray Tune 2\.60",  # versions
    r"N\(0, 0\.01\)",  # the NCF paper's initialisation, a setting
)
METRIC_LIKE = re.compile(r"(?<![\w.])0?\.\d{3,}(?!\d)")  # 0.109, .835: a metric, rounded or not


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_the_generated_tables_of_each_document_are_what_the_committed_runs_give(name):
    text = (REPO / name).read_text()
    assert documents.render_document(text, name) == text, (
        f"{name}: a generated table differs from the committed runs; `python evaluate.py report --docs` "
        "rewrites it")


def typed_numbers(text: str) -> list[str]:
    """The numbers of 2 or more decimals in `text`'s prose: outside the generated blocks, the code
    and the phrases of NOT_RESULTS."""
    prose = CODE.sub("", documents.BLOCK.sub("", text))
    for allowed in NOT_RESULTS:
        prose = re.sub(allowed, "", prose)
    return DECIMALS.findall(prose)


def test_the_prose_guard_finds_numbers_of_two_and_more_decimals_but_not_settings():
    assert typed_numbers("within 0.015 of theirs, 0.03 below, +0.017 `in`, .6656") == ["0.015", "0.03", "0.017", ".6656"]
    assert typed_numbers("`--lr=0.001`, max(2 std, 0.03), N(0, 0.01), lr 1e-3, 0.5 s, 45%") == []
    assert typed_numbers("<!-- report:x -->\n0.7796\n<!-- /report:x -->") == []


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_no_number_is_copied_by_hand_into_the_prose(name):
    assert typed_numbers((REPO / name).read_text()) == [], (
        f"{name}: generate it (documents.DOC_BLOCKS) or say it in words ('within a hundredth')")


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_no_table_of_metrics_is_typed_by_hand(name):
    """A table row outside the generated blocks holds at most one metric-like number (3+ decimals)."""
    prose = documents.BLOCK.sub("", (REPO / name).read_text())
    typed = [line for line in prose.splitlines() if line.startswith("|") and len(METRIC_LIKE.findall(line)) > 1]
    assert typed == [], f"{name}: generate the table (a <!-- report:NAME --> block of documents.DOC_BLOCKS)"


def test_every_run_folder_the_protocol_study_borrows_is_committed():
    for path in documents.protocol_sources():
        assert runs.find_run_folders([REPO / path]), path


def test_a_document_with_an_unknown_block_is_a_one_line_error_of_the_docs_command(monkeypatch):
    with pytest.raises(documents.DocumentError, match="^README.md: unknown block <!-- report:no-such-table -->"):
        documents.render_document("<!-- report:no-such-table -->\n<!-- /report:no-such-table -->\n")
    monkeypatch.setattr(documents, "update_documents", lambda write: documents.render_document(
        "<!-- report:no-such-table -->\n<!-- /report:no-such-table -->\n", "docs/X.md"))
    with pytest.raises(SystemExit, match="^error: docs/X.md: unknown block <!-- report:no-such-table -->; known: "):
        documents.main(check=True)


@pytest.mark.slow  # starts a process
def test_the_docs_check_finds_every_document_up_to_date_and_rewrites_nothing():
    before = {name: (REPO / name).stat().st_mtime_ns for name in documents.DOCUMENTS}
    result = subprocess.run([sys.executable, "evaluate.py", "report", "--docs", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "every document's generated tables are up to date"
    assert {name: (REPO / name).stat().st_mtime_ns for name in documents.DOCUMENTS} == before


def test_the_docs_check_names_a_stale_document_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(documents, "render_document", lambda text, name=None: text + "stale")
    with pytest.raises(SystemExit, match="generated tables out of date in README.md"):
        documents.main(check=True)


def test_a_block_indented_inside_a_list_item_is_generated_with_the_same_indentation(monkeypatch):
    monkeypatch.setitem(documents.DOC_BLOCKS, "two-lines", lambda: ["first", "second"])
    text = "- item:\n  <!-- report:two-lines -->\n  stale\n  <!-- /report:two-lines -->\n- next\n"
    assert documents.render_document(text) == \
        "- item:\n  <!-- report:two-lines -->\n  first\n  second\n  <!-- /report:two-lines -->\n- next\n"
    assert documents.render_document("<!-- report:two-lines -->\n<!-- /report:two-lines -->") == \
        "<!-- report:two-lines -->\nfirst\nsecond\n<!-- /report:two-lines -->"


def test_the_percentile_of_a_value_among_runs_counts_those_below_it_and_ties_as_half():
    values = pd.Series([0.1, 0.2, 0.3, 0.3])
    assert documents.percentile_among(values, 0.35) == 100.0  # above all four
    assert documents.percentile_among(values, 0.3) == 75.0  # 2 below, 2 tied: (2 + 1) / 4
    assert documents.percentile_among(values, 0.15) == 25.0
    assert documents.percentile_among(values, 0.05) == 0.0
