"""The README's smoke run, as printed there: the whole pipeline in about a minute."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from tests.conftest import REPO


def test_the_readme_smoke_run_trains_both_stages_and_reports(real_config, tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("**Smoke run first**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert readme.index("**Smoke run first**") < 3000, "not on the README's first screen"
    started = time.time()
    for line in block.strip().splitlines():
        argv = shlex.split(line.replace("/tmp/smoke", str(tmp_path)))
        assert argv[0] == "python"
        result = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "XMREC_DIR": real_config.data_dir}, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    print(f"smoke run: {time.time() - started:.0f} s")  # 12 s on an idle 2-core Intel Xeon
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    log = (run_dir / "train.log").read_text()
    assert "seed 0 pretrain test" in log and "seed 0 finetune test" in log
    assert (tmp_path / "report.md").is_file()
