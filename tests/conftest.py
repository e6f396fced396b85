"""Shared fixtures: small synthetic multi-market data, and the real data when it is present."""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from config import ELECTRONICS_MARKETS, Config  # noqa: E402


def synthetic_frames(seed: int = 0, markets: tuple[str, ...] = ("ca", "de", "in"),
                     users_per_market: int = 30, num_items: int = 400) -> dict[str, pd.DataFrame]:
    """Random interactions in the files' format: every user has 4-70 interactions (some repeat
    an item, a few users exceed 50 distinct items), items overlap across markets."""
    rng = np.random.default_rng(seed)
    frames = {}
    for m, market in enumerate(markets):
        rows = []
        for u in range(users_per_market):
            count = int(rng.integers(4, 12)) if u % 10 else 70
            items = rng.integers(0, num_items, size=count)
            dates = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 2000, count), "D")
            rows += [(f"U{market}{u:03d}", f"I{i:04d}", float(rng.integers(1, 6)), d)
                     for i, d in zip(items, dates)]
        frames[market] = pd.DataFrame(rows, columns=["userId", "itemId", "rate", "date"])
    return frames


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    return synthetic_frames()


@pytest.fixture
def small_config() -> Config:
    """Small enough that an epoch of the synthetic markets takes a fraction of a second."""
    return Config(max_history=50, num_eval_negatives=20, num_train_negatives=2, batch_size=128)


def real_data_dir() -> Path | None:
    for folder in (REPO / "data", os.environ.get("XMREC_DIR")):
        if folder and all((Path(folder) / f"{m}_5core.txt").is_file() for m in ELECTRONICS_MARKETS):
            return Path(folder)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the real data is slow (reading and splitting it alone takes seconds): marked
    so here, once, rather than by hand; tests that start processes carry the mark themselves."""
    for item in items:
        if "real_config" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_config() -> Config:
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real XMarket files not found in data/ or $XMREC_DIR (CI sets XMREC_DIR)")
    return Config(data_dir=str(folder))


def without_write_override() -> None:
    """subprocess's preexec_fn for a child that must meet file modes: root writes anywhere, unless
    its processes lose the capabilities that override them (CAP_DAC_OVERRIDE, CAP_FOWNER)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 3):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
