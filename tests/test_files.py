"""runfolder/files.py: a file is written whole or not at all, as strict JSON."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from runfolder import files
from runfolder.files import WriteError, append_line, json_text, write_file, write_text


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


@pytest.mark.parametrize("failure", ["partial write", "error after half"])
def test_an_appended_line_that_fails_halfway_is_cut_back_to_the_lines_before(failure, tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_line(path, '{"epoch": 1}')
    write = os.write

    def half(descriptor: int, content: bytes) -> int:
        written = write(descriptor, content[:len(content) // 2])
        if failure == "error after half":
            raise OSError(28, "No space left on device")
        return written
    monkeypatch.setattr(files.os, "write", half)
    with pytest.raises(WriteError, match=f"cannot write {path}: "):
        append_line(path, '{"epoch": 2}')
    monkeypatch.undo()
    assert path.read_text() == '{"epoch": 1}\n'
    append_line(path, '{"epoch": 2}')
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
