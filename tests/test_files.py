"""runfolder/files.py: a file is written whole or not at all, as strict JSON."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from runfolder.files import WriteError, json_text, write_file, write_text


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "old\n")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device \\(\\d+ MB free there\\)"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(WriteError, match="cannot write .*results.json/x.json: File exists"):
        write_text(tmp_path / "results.json" / "x.json", "{}")


def test_json_is_strict_a_number_that_is_not_finite_is_null():
    assert json_text({"loss": float("nan"), "valid": [float("inf"), 0.5]}) == '{"loss": null, "valid": [null, 0.5]}'
