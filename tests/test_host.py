"""speed/host.py's configure_host: the heap keeps freed memory when asked, and num_threads holds
for torch and numba (processes of their own: they change the whole process)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow  # starts processes
def test_keep_freed_memory_takes_blocks_from_the_heap_and_keeps_them_when_freed():
    script = """
import ctypes, sys, torch
from config import Config
from speed.host import configure_host
class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
configure_host(Config(keep_freed_memory=sys.argv[1] == "true"))
before = mallinfo2()
block = torch.empty(2**24)  # 64 MB
mapped = mallinfo2().hblkhd - before.hblkhd  # bytes in blocks with a mapping of their own
del block
kept = mallinfo2().fordblks - before.fordblks  # free bytes the heap holds on to
print(mapped, kept)
"""
    result = {}
    for setting in ("true", "false"):
        output = subprocess.run([sys.executable, "-c", script, setting], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        result[setting] = [int(number) for number in output.split()]
    assert result["true"][0] == 0 and result["true"][1] > 60 * 2**20  # the 64 MB, give or take
    assert result["false"][0] >= 2**26 and result["false"][1] < 32 * 2**20  # unmapped, not kept


@pytest.mark.slow  # starts processes
def test_num_threads_holds_for_torch_and_numba_after_a_dropout_pass():
    """Starting numba's OpenMP pool used to put torch back on all cores, whatever num_threads said."""
    script = """
import numba, torch
from config import Config
from model import dropout
from speed.host import configure_host
configure_host(Config(num_threads=1))
dropout(torch.ones(64, 8), 0.5, True, compiled=True)
print(torch.get_num_threads(), numba.get_num_threads())
"""
    output = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True,
                            text=True, env={**os.environ, "NUMBA_NUM_THREADS": "2"}).stdout
    assert output.split() == ["1", "1"]
