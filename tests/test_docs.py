"""The documents' tables of numbers are what the committed runs give, and their prose copies none."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from reporting import documents, runs
from tests.conftest import REPO

FOUR_DECIMALS = re.compile(r"(?<![\w.])\d*\.\d{4}(?!\d)")  # 0.7796, .6656: a metric typed by hand
METRIC_LIKE = re.compile(r"(?<![\w.])0?\.\d{3,}(?!\d)")  # 0.109, .835: a metric, rounded or not


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_the_generated_tables_of_each_document_are_what_the_committed_runs_give(name):
    text = (REPO / name).read_text()
    assert documents.render_document(text, name) == text, (
        f"{name}: a generated table differs from the committed runs; `python evaluate.py report --docs` "
        "rewrites it")


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_no_metric_is_copied_by_hand_into_the_prose(name):
    prose = documents.BLOCK.sub("", (REPO / name).read_text())
    assert FOUR_DECIMALS.findall(prose) == [], f"{name}: refer to a generated table instead"


@pytest.mark.parametrize("name", documents.DOCUMENTS)
def test_no_table_of_metrics_is_typed_by_hand(name):
    """A table row outside the generated blocks holds at most one metric-like number (3+ decimals)."""
    prose = documents.BLOCK.sub("", (REPO / name).read_text())
    typed = [line for line in prose.splitlines() if line.startswith("|") and len(METRIC_LIKE.findall(line)) > 1]
    assert typed == [], f"{name}: generate the table (a <!-- report:NAME --> block of documents.DOC_BLOCKS)"


def test_every_run_folder_the_protocol_study_borrows_is_committed():
    for path in documents.protocol_sources():
        assert runs.find_run_folders([REPO / path]), path


def test_a_document_with_an_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="unknown block"):
        documents.render_document("<!-- report:no-such-table -->\n<!-- /report:no-such-table -->\n")


@pytest.mark.slow  # starts a process
def test_the_docs_command_finds_every_document_up_to_date():
    result = subprocess.run([sys.executable, "evaluate.py", "report", "--docs"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "rewrote the generated tables of no document: all up to date"
