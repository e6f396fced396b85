"""The progress line train_model.py prints: where the run is and about how long is left."""
from __future__ import annotations

import train_model
from config import Config
from runfolder.checkpoints import Progress
from train_model import run_line


def test_the_progress_line_counts_seeds_and_estimates_the_time_left():
    config = Config(seeds=5, first_seed=10)
    progress = Progress(seed=12, stage="finetune", epoch=3, seconds=30.0, runs=[{"seconds": 100.0}, {"seconds": 120.0}])
    assert run_line(config, progress) == ("  in: seed 12 (3 of 5), finetune epoch 3 of at most 50, 4m10s elapsed, "
                                          "about 5m00s left")  # 80 s of this seed, 2 x 110 s
    assert run_line(config, Progress(seed=10, epoch=1, seconds=65.0)).endswith(
        "seed 10 (1 of 5), pretrain epoch 1 of at most 50, 1m05s elapsed, time left: estimated when seed 10 ends")


def test_the_progress_line_of_all_markets_counts_the_markets_and_estimates_the_time_left_for_all():
    """Market 2 of 7, its seed 0 of 2 at 30 s; the earlier market's seeds took 100 and 120 s:
    110 s per seed, 80 + 110 s left for de, and 2 x 110 s for each of the 5 markets after it."""
    config = Config(target_market="de", seeds=2)
    turn = train_model.Turn(number=2, markets=7, earlier_seeds=[100.0, 120.0])
    assert run_line(config, Progress(seed=0, epoch=3, seconds=30.0), turn) == (
        "  de (market 2 of 7): seed 0 (1 of 2), pretrain epoch 3 of at most 50, 0m30s elapsed, about 3m10s left "
        "for de, 21m30s for all 7 markets")
