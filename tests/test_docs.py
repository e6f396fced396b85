"""The documents' tables of numbers are what the committed runs give, and their prose copies none."""
from __future__ import annotations

import re

import pytest

import report
from tests.conftest import REPO

FOUR_DECIMALS = re.compile(r"(?<![\w.])\d*\.\d{4}(?!\d)")  # 0.7796, .6656: a metric typed by hand


@pytest.mark.parametrize("name", report.DOCUMENTS)
def test_the_generated_tables_of_each_document_are_what_the_committed_runs_give(name):
    text = (REPO / name).read_text()
    assert report.render_document(text) == text, (
        f"{name}: a generated table differs from the committed runs; `python evaluate.py report --docs` "
        "rewrites it")


@pytest.mark.parametrize("name", report.DOCUMENTS)
def test_no_metric_is_copied_by_hand_into_the_prose(name):
    prose = report.BLOCK.sub("", (REPO / name).read_text())
    assert FOUR_DECIMALS.findall(prose) == [], f"{name}: refer to a generated table instead"


def test_every_run_folder_the_protocol_study_borrows_is_committed():
    for path in report.protocol_sources():
        assert report.find_run_folders([REPO / path]), path


def test_a_document_with_an_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="unknown block"):
        report.render_document("<!-- report:no-such-table -->\n<!-- /report:no-such-table -->\n")
