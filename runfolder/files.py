"""Files written whole or not at all: every file the project writes goes through `write_file`,
and every file it downloads through `download_verified`.

The content goes to `<name>.tmp` next to the file, which is then renamed over the final name:
a crash leaves the previous version (or nothing) under the name, never half a file. A write
that fails (a full disk, no permission) removes the temporary and raises WriteError, one line
that names the file. Files that belong together (a report's) are written into a `staged`
folder and replace their namesakes only once all of them are written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

CHECKPOINT = "checkpoint.pt"  # a run folder's resumable state (train_model.py; tools/sweep.py looks for it)
DIVERGED = "diverged.txt"  # in a run folder whose training diverged: why (a resume refuses; the report says so)


class WriteError(RuntimeError):
    """A file that could not be written; the message names it, the reason and the free space."""


def write_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary)` writes the content to a temporary path, then it takes the name `path`
    (the folder is created if need be). On failure no temporary is left behind."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as a RuntimeError
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "the write failed"
        raise WriteError(f"cannot write {path}: {reason} ({free_space(path)})") from None
    finally:
        with contextlib.suppress(OSError):  # the temporary is still there only if something failed
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A staging folder inside `folder` (created if need be) for files that belong together:
    each is written there (write_file), and only when the block ends without an error do they
    replace their namesakes in `folder`, all renamed in a moment. An error or an interrupt
    before that leaves `folder` as it was; the staging folder goes either way. Raises
    WriteError, naming `folder`, where it cannot be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    except OSError as error:
        raise WriteError(f"cannot write into {folder}: {error.strerror or error}") from None
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            try:
                os.replace(path, folder / path.name)
            except OSError as error:
                raise WriteError(f"cannot write {folder / path.name}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class DownloadError(RuntimeError):
    """A download that failed or is not the expected file; the message says why."""


def download_verified(url: str, dest: Path, sha256: str, release: str) -> None:
    """Download `url` (a progress bar on a terminal's stderr), check its SHA-256, and only then
    write it to `dest` (write_bytes): a failed or wrong download leaves neither a file nor a
    new folder. Raises DownloadError (the reason; a wrong file is "not `release`") or WriteError."""
    from tqdm import tqdm  # here: importing this module loads nothing heavy
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            content = bytearray()
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=None) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    content += block
                    bar.update(len(block))
    except OSError as error:
        raise DownloadError(str(error)) from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != sha256:
        raise DownloadError(f"SHA-256 mismatch (expected {sha256}, got {actual}); not {release}")
    write_bytes(dest, bytes(content))


def free_space(path: Path) -> str:
    """`N MB free` on the disk of `path` (or of its nearest existing folder)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free there"
    except OSError:
        return "free space unknown"


def write_bytes(path: Path, content: bytes) -> None:
    write_file(path, lambda temporary: temporary.write_bytes(content))


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda temporary: temporary.write_text(text))


def json_text(payload: object, indent: int | None = None) -> str:
    """Strict JSON (as any JSON reader accepts it): a number that is not finite becomes null."""
    def finite(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value
    return json.dumps(finite(payload), indent=indent, allow_nan=False)


def write_json(path: Path, payload: object) -> None:
    write_text(path, json_text(payload, indent=1) + "\n")


def append_line(path: Path, line: str) -> None:
    """Add `line` and a newline at the end of `path` (created if need be) with one write. A write
    that fails, or writes only part of the line, cuts the file back to what it was: the file
    never ends in half a line. Raises WriteError, one line that names the file."""
    content = (line + "\n").encode()
    descriptor = None
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        size = os.fstat(descriptor).st_size
        try:
            if os.write(descriptor, content) != len(content):
                raise OSError("only part of the line was written")
        except OSError:
            os.ftruncate(descriptor, size)
            raise
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error} ({free_space(path)})") from None
    finally:
        if descriptor is not None:
            os.close(descriptor)
