"""The README's smoke run, as printed there: both stages train and the report holds the run's score."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from tests.conftest import REPO


def test_the_readme_smoke_run_trains_both_stages_and_reports(real_config, tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("**Smoke run first**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert readme.index("**Smoke run first**") < 3000, "not on the README's first screen"
    for line in block.strip().splitlines():
        argv = shlex.split(line.replace("/tmp/smoke", str(tmp_path)))
        assert argv[0] == "python"
        result = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "XMREC_DIR": real_config.data_dir}, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    log = (run_dir / "train.log").read_text()
    assert "seed 0 pretrain test" in log and "seed 0 finetune test" in log
    finetuned = json.loads((run_dir / "results.json").read_text())["runs"][0]["finetune"]
    assert f"{finetuned['HR@5']:.4f}" in (tmp_path / "report.md").read_text()  # the report holds the run's score
