"""Run several models and ablations on several markets and seeds, then build the report.

    python sweep.py --models=acmr,popularity,gmf,nmf,forec --markets=in,jp,mx --seeds=3
    python sweep.py --models=gmf,nmf --markets=in --seeds=3 --log_dir=log/sweep --num_epochs=20
    python sweep.py --plan=plans/gpu.txt --jobs=10 --deadline_minutes=8

Models are the presets of config.PRESETS. Every (model, market, seed) is one job, a
`python train_model.py --first_seed=S --seeds=1 ...` process with its own run folder under
--log_dir (default log/sweep); all models see the same seeds, hence the same splits and
candidates. The report (evaluate.py report) of each log_dir is written at the end, one table
row per model.

--plan=FILE lists several grids, one per line, in the order they should run:
    MODELS MARKETS SEEDS [--key=value ...]     e.g.  acmr in,jp,mx 3 --split=temporal
where SEEDS is a count N (seeds 0..N-1) or a range A-B; '#' starts a comment. The
--models/--markets/--seeds form is a plan of one line. Other --key=value settings on the
command line go to every job.

A sweep skips a job whose (variant, market, seed) already has results in its log_dir and
resumes one that has a checkpoint there (`--redo=true` runs every job afresh), so the same
command continues an interrupted or extended sweep. Do not run two sweeps on one log_dir at
once. `--dry_run=true` lists what would run, resume or be skipped, and runs nothing.

--jobs=N runs N jobs at a time (each with --num_threads=1 unless given): on a GPU, small
jobs leave the device mostly idle, so several share it. --deadline_minutes=M stops the
sweep after M minutes: running jobs are interrupted (their last epoch is checkpointed and
`train_model.py --resume=FOLDER` continues them), jobs not started are listed. Ctrl-C, or
SIGINT / SIGTERM sent to the sweep process alone, does the same at once (exit 130).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import report
from config import MARKETS, PRESETS, ConfigError, parse_overrides, upgrade_saved
from train_model import CHECKPOINT, RESUMABLE_SETTINGS

REPO = Path(__file__).resolve().parent


class Interrupted(Exception):
    """The sweep was interrupted; `jobs` are those not finished."""

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__(f"interrupted with {len(jobs)} job(s) not finished")
        self.jobs = jobs


@dataclass
class Job:
    model: str
    market: str
    seed: int
    settings: list[str]  # --key=value for train_model.py
    resume: Path | None = None  # the run folder of this job's interrupted run, if any

    @property
    def name(self) -> str:
        extra = " ".join(s for s in self.settings if not s.startswith(("--log_dir=", "--num_threads=")))
        return f"{self.model} {self.market} seed {self.seed}" + (f" {extra}" if extra else "")

    def command(self) -> list[str]:
        if self.resume is not None:  # where and how fast to run may change; nothing else
            where = [s for s in self.settings if s[2:].split("=", 1)[0] in RESUMABLE_SETTINGS]
            return [sys.executable, str(REPO / "train_model.py"), f"--resume={self.resume}", *where]
        preset = [f"--{k}={v}" for k, v in PRESETS[self.model].items()]
        return [sys.executable, str(REPO / "train_model.py"), *preset, f"--target_market={self.market}",
                f"--first_seed={self.seed}", "--seeds=1", *self.settings]


@functools.cache
def run_folders(log_dir: str, market: str) -> list[tuple[Path, dict, set[int]]]:
    """(folder, its config.json, the seeds with results) of each run folder of `market` in
    `log_dir`, newest first; read once per sweep, however many jobs ask."""
    folders = []
    for folder in sorted(Path(log_dir).glob(f"{market}-*"), reverse=True):
        try:
            saved = upgrade_saved(json.loads((folder / "config.json").read_text()))
            results = folder / "results.json"
            done = {run["seed"] for run in json.loads(results.read_text())["runs"]} if results.is_file() else set()
        except (OSError, ValueError, KeyError):
            continue
        folders.append((folder, saved, done))
    return folders


def previous_run(job: Job) -> tuple[str, Path] | None:
    """("done", folder) if a run folder in the job's log_dir holds this job's test results,
    ("resume", folder) if one holds its checkpoint, else None. A folder is this job's when the
    report would count it as the same (variant, market, seed)."""
    config, _ = parse_overrides(job.command()[2:])
    variant = report.variant_name(dataclasses.asdict(config))
    for folder, saved, done in run_folders(config.log_dir, job.market):
        if saved.get("target_market") != job.market or report.variant_name(saved) != variant:
            continue
        if job.seed in done:
            return "done", folder
        if (folder / CHECKPOINT).is_file() and (saved.get("first_seed", 0), saved.get("seeds")) == (job.seed, 1):
            return "resume", folder
    return None


def parse_seeds(text: str) -> list[int]:
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not match:
        raise ConfigError(f"seeds {text!r}: expected a count N or a range A-B")
    first, last = match.groups()
    return list(range(int(first))) if last is None else list(range(int(first), int(last) + 1))


def plan_jobs(lines: list[str], common: list[str]) -> list[Job]:
    """The jobs of plan lines `MODELS MARKETS SEEDS [--key=value ...]`, in order."""
    jobs = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 3 or any(not f.startswith("--") for f in fields[3:]):
            raise ConfigError(f"plan line {line.strip()!r}: expected MODELS MARKETS SEEDS [--key=value ...]")
        models, markets = fields[0].split(","), fields[1].split(",")
        for name, values, allowed in (("model", models, PRESETS), ("market", markets, MARKETS)):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ConfigError(f"unknown {name} {unknown[0]!r}; allowed: {', '.join(allowed)}")
        own = {f[2:].split("=", 1)[0] for f in fields[3:]}  # a line's setting overrides the command's
        settings = [s for s in common if s[2:].split("=", 1)[0] not in own] + fields[3:]
        jobs += [Job(model, market, seed, settings)
                 for model in models for market in markets for seed in parse_seeds(fields[2])]
    return jobs


def setting(job: Job, key: str, default: str) -> str:
    values = [s.split("=", 1)[1] for s in job.settings if s.startswith(f"--{key}=")]
    return values[-1] if values else default


def run_jobs(jobs: list[Job], parallel: int, deadline: float | None) -> list[Job]:
    """Run the jobs, `parallel` at a time, until done or the deadline; returns those not
    finished (failed, interrupted or never started)."""
    waiting, running, unfinished = list(jobs), [], []
    try:
        while waiting or running:
            while waiting and len(running) < parallel and (deadline is None or time.time() < deadline):
                job = waiting.pop(0)
                output = tempfile.TemporaryFile("w+") if parallel > 1 else None
                process = subprocess.Popen(job.command(), stdout=output, stderr=subprocess.STDOUT if output else None,
                                           cwd=Path.cwd())
                running.append((job, process, output, time.time()))
                what = f"resume {job.name} from {job.resume}" if job.resume else f"start {job.name}"
                print(f"[{len(jobs) - len(waiting)}/{len(jobs)}] {what}", flush=True)
            if deadline is not None and time.time() >= deadline and running:
                print(f"deadline: interrupting {len(running)} running job(s)", flush=True)
                for _, process, _, _ in running:
                    process.send_signal(signal.SIGINT)
                deadline = None
                waiting, unfinished = [], unfinished + waiting
            time.sleep(0.5)
            for entry in [e for e in running if e[1].poll() is not None]:
                job, process, output, started = entry
                running.remove(entry)
                seconds = time.time() - started
                if process.returncode == 0:
                    print(f"done {job.name} ({seconds:.0f} s)", flush=True)
                else:
                    unfinished.append(job)
                    what = "stopped" if process.returncode == 130 else "FAILED"
                    print(f"{what} (exit {process.returncode}) {job.name} ({seconds:.0f} s)", flush=True)
                    if output is not None and process.returncode != 130:
                        output.seek(0)
                        print("".join(output.readlines()[-15:]), flush=True)
                if output is not None:
                    output.close()
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT / SIGTERM sent to the sweep alone
        for _, process, _, _ in running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # the job checkpoints and exits
        for job, process, _, _ in running:
            if process.wait() == 0:
                print(f"done {job.name}", flush=True)
            else:
                unfinished.append(job)
                print(f"stopped (exit {process.returncode}) {job.name}", flush=True)
        raise Interrupted(unfinished + waiting) from None
    return unfinished + waiting


def main(argv: list[str]) -> None:
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    unknown = [arg for arg in argv if not (arg.startswith("--") and "=" in arg)]
    if unknown:
        raise ConfigError(f"bad argument {unknown[0]!r}: expected --key=value")
    parallel = int(options.pop("jobs", "1"))
    if parallel < 1:
        raise ConfigError(f"jobs={parallel}: must be an integer >= 1")
    minutes = options.pop("deadline_minutes", None)
    redo, dry_run = (options.pop(key, "false") for key in ("redo", "dry_run"))
    for key, value in (("redo", redo), ("dry_run", dry_run)):
        if value not in ("true", "false"):
            raise ConfigError(f"{key}={value}: expected true or false")
    redo, dry_run = redo == "true", dry_run == "true"
    deadline = time.time() + 60 * float(minutes) if minutes else None
    options.setdefault("log_dir", "log/sweep")
    if parallel > 1:
        options.setdefault("num_threads", "1")  # N jobs on N cores, not N x all cores
    if "plan" in options:
        path = Path(options.pop("plan"))
        if not path.is_file():
            raise ConfigError(f"--plan={path}: no such file")
        lines = path.read_text().splitlines()
    else:
        lines = [" ".join([options.pop("models", "acmr"), options.pop("markets", "in"),
                           options.pop("seeds", "1")])]
    jobs = plan_jobs(lines, [f"--{k}={v}" for k, v in options.items()])
    if not redo:
        run_folders.cache_clear()  # what is on disk now
        for job in list(jobs):
            previous = previous_run(job)
            if previous is not None and previous[0] == "done":
                print(f"skip {job.name}: done in {previous[1]}")
                jobs.remove(job)
            elif previous is not None:
                job.resume = previous[1]
    if dry_run:
        for job in jobs:
            print(f"{'resume' if job.resume else 'run'} {job.name}: python train_model.py "
                  f"{shlex.join(job.command()[2:])}")
        print(f"{len(jobs)} jobs to run")
        return
    try:
        unfinished, interrupted = run_jobs(jobs, parallel, deadline), False
    except Interrupted as stop:
        unfinished, interrupted = stop.jobs, True
    for job in unfinished:
        print(f"not finished: python train_model.py {shlex.join(job.command()[2:])}")
    print(f"finished {len(jobs) - len(unfinished)} of {len(jobs)} jobs", flush=True)
    if unfinished:
        print("the same sweep command continues: finished jobs are skipped, interrupted ones resumed")
    for log_dir in dict.fromkeys(setting(job, "log_dir", "log/sweep") for job in jobs):
        if report.find_run_folders([Path(log_dir)]):
            path = report.build_report([Path(log_dir)], Path(log_dir), "python sweep.py " + " ".join(argv))
            print(f"report: {path}")
    if interrupted:
        sys.exit(130)
    if unfinished:
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop = Ctrl-C
    try:
        main(sys.argv[1:])
    except ConfigError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
