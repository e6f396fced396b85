"""Run several models and ablations on several markets and seeds, then build the report.

    python -m tools.sweep --models=acmr,popularity,gmf,nmf,forec --markets=in,jp,mx --seeds=3
    python -m tools.sweep --models=gmf,nmf --markets=in --seeds=3 --log_dir=log/sweep --finetune_epochs=20
    python -m tools.sweep --plan=plans/paper.txt --jobs=10 --deadline_minutes=8
    python -m tools.sweep --plan=plans/paper.txt --ray_address=auto --gpus_per_job=0.125   # on a Ray cluster

Models are the presets of plans/presets.py. Every (model, market, seed) is one job, a
`python train_model.py --first_seed=S --seeds=1 ...` process with its own run folder under
--log_dir (default log/sweep); all models see the same seeds, hence the same splits and
candidates. The report (evaluate.py report) of each log_dir is written at the end, one table
row per model.

--plan=FILE lists several grids, one per line, in the order they should run:
    MODELS MARKETS SEEDS [--key=value ...]     e.g.  acmr in,jp,mx 3 --split=temporal
where SEEDS is a count N (seeds 0..N-1) or a range A-B; '#' starts a comment. The
--models/--markets/--seeds form is a plan of one line. Other --key=value settings on the
command line go to every job, except those each job sets itself: --first_seed=S shifts the
grid's seeds by S (N: seeds S..S+N-1), and --target_market (or a plan's --seeds) is an error
that names the grid's own field.

A sweep skips a job whose (variant, market, seed) already has results in its log_dir and
resumes one that has a checkpoint there (`--redo=true` runs every job afresh), so the same
command continues an interrupted or extended sweep. Do not run two sweeps on one log_dir at
once. `--dry_run=true` lists what would run, resume or be skipped, and runs nothing.

Each job is a Ray task (docs.ray.io) that runs the job's process. --ray_address= (the default)
starts a Ray instance on this machine for the sweep; --ray_address=auto (the cluster this
machine is a node of) or HOST:PORT (the head node's GCS port, 6379 by default) runs the jobs
on a running Ray cluster, whose nodes must see the repository, the working directory and the
log folder at the same paths (docs/RUNNING.md, "On a cluster"). An address where no cluster
answers, or a cluster that refuses this client (token authentication), is an error at once.
The sweep's $XMREC_DIR goes to every job.

--jobs=N runs N jobs at a time on this machine; on a cluster, as many as its nodes' CPUs and
GPUs hold (at most N if given). --cpus_per_job=C reserves C CPUs for each job, which runs torch
on C threads (--num_threads=C unless given); by default 1, except for a lone job on this
machine (--jobs=1), which gets all its cores and torch's default threads. --gpus_per_job=F
reserves F of a GPU for each job: 0.125 puts eight jobs on each GPU (small jobs leave a GPU
mostly idle; eight at once measured best, docs/SPEED.md); 0 (the default) reserves none and lets
every job see every GPU. A job whose process, Ray worker or node dies (killed,
out of memory, node lost) runs again, resumed from its last checkpoint, up to --retries=R
times (default 3); a job that fails on its own (exit 1) is not run again.

--deadline_minutes=M stops the sweep after M minutes: running jobs are interrupted (their last
epoch is checkpointed and `train_model.py --resume=FOLDER` continues them), jobs not started
are listed. Ctrl-C, or SIGINT / SIGTERM sent to the sweep process alone, does the same at once
(exit 130).

The console lists each job's start and end, and below them a status line of the grid: jobs
done, running and waiting, failures, and an estimate of the time left (on a terminal, one line
redrawn in place; elsewhere printed whenever a job ends). A job's output goes to its run
folder's train.log; the last lines of a failed job's output are printed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from config import (
    REPO,
    RUN_ONLY_SETTINGS,
    Config,
    ConfigError,
    help_text,
    parse_overrides,
    run_command,
)
from plans.presets import PRESETS
from reporting import report, runs
from runfolder.files import CHECKPOINT, DIVERGED
from runfolder.migration import upgrade_saved

FORWARDED_ENV = ("XMREC_DIR",)  # the sweep's own goes to every job, on whichever node it runs
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
GRID_SETTINGS = {  # train_model.py settings that each job sets itself: what the sweep takes instead
    "target_market": "a sweep's markets are --markets=M1,M2,... (a plan line's second field), "
                     "e.g. --markets=in,jp (all seven: --markets=ca,de,fr,in,jp,mx,uk)",
    "seeds": "in a plan, a line's seeds are its third field (N: seeds 0 .. N-1, or a range A-B); "
             "--first_seed=S shifts them all by S",
}


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
    attempt: int = 1  # 2 and up: run again after its process, Ray worker or node died

    @property
    def name(self) -> str:
        extra = " ".join(s for s in self.settings if not s.startswith(("--log_dir=", "--num_threads=")))
        return f"{self.model} {self.market} seed {self.seed}" + (f" {extra}" if extra else "")

    def command(self) -> list[str]:
        if self.resume is not None:  # where and how fast to run may change; nothing else
            where = [s for s in self.settings if s[2:].split("=", 1)[0] in RUN_ONLY_SETTINGS]
            return [sys.executable, str(REPO / "train_model.py"), f"--resume={self.resume}", *where]
        preset = [f"--{k}={v}" for k, v in PRESETS[self.model].items()]
        return [sys.executable, str(REPO / "train_model.py"), *preset, f"--target_market={self.market}",
                f"--first_seed={self.seed}", "--seeds=1", *self.settings]


@dataclass
class Resources:
    """What each job reserves on the Ray cluster, and how many jobs may run at once."""
    cpus: int
    gpus: float
    most: int | None  # --jobs (on a cluster only if given); None: as many as the cluster holds


@functools.cache
def run_folders(log_dir: str, market: str) -> list[tuple[Path, dict, set[int]]]:
    """(folder, its config.json, the seeds with results) of each run folder of `market` in
    `log_dir` (its config.json's target_market), newest first (runs.start_time); read once per
    sweep, however many jobs ask."""
    folders = []
    found = (path.parent for path in Path(log_dir).glob("*/config.json"))
    for folder in sorted(found, key=lambda folder: runs.start_time(folder.name), reverse=True):
        try:
            saved = upgrade_saved(json.loads((folder / "config.json").read_text()))
            if saved.get("target_market") != market:
                continue
            results = folder / "results.json"
            done = {run["seed"] for run in json.loads(results.read_text())["runs"]} if results.is_file() else set()
        except (OSError, ValueError, KeyError):
            continue
        folders.append((folder, saved, done))
    return folders


def previous_run(job: Job) -> tuple[str, Path] | None:
    """("done", folder) if a run folder in the job's log_dir holds this job's test results,
    ("diverged", folder) if its training diverged there (diverged.txt: a resume refuses it, and
    the same seed would diverge again), ("resume", folder) if one holds its checkpoint, else None.
    A folder is this job's when the report would count it as the same (variant, market, seed)."""
    config, _ = parse_overrides(job.command()[2:])
    variant = runs.variant_name(dataclasses.asdict(config))
    for folder, saved, done in run_folders(config.log_dir, job.market):
        if saved.get("target_market") != job.market or runs.variant_name(saved) != variant:
            continue
        if job.seed in done:
            return "done", folder
        this_job = (saved.get("first_seed", 0), saved.get("seeds")) == (job.seed, 1)
        if (folder / DIVERGED).is_file() and this_job:
            return "diverged", folder
        if (folder / CHECKPOINT).is_file() and this_job:
            return "resume", folder
    return None


def parse_seeds(text: str) -> list[int]:
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not match:
        raise ConfigError(f"seeds {text!r}: expected a count N or a range A-B")
    first, last = match.groups()
    seeds = list(range(int(first))) if last is None else list(range(int(first), int(last) + 1))
    if not seeds:
        raise ConfigError(f"seeds {text!r}: no seed in it (a count of at least 1, or a range A-B with A <= B)")
    return seeds


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
        own = {f[2:].split("=", 1)[0] for f in fields[3:]}  # a line's setting overrides the command's
        settings = [s for s in common if s[2:].split("=", 1)[0] not in own] + fields[3:]
        data_markets = [s.split("=", 1)[1] for s in settings if s.startswith("--data_markets=")]
        names = sorted((data_markets or [Config().data_markets])[-1].split(","))  # the targets allowed
        for name, values, allowed in (("model", models, PRESETS), ("market", markets, names)):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ConfigError(f"unknown {name} {unknown[0]!r}; allowed: {', '.join(allowed)}")
        first_seed, settings = grid_first_seed(settings)
        jobs += [Job(model, market, first_seed + seed, settings)
                 for model in models for market in markets for seed in parse_seeds(fields[2])]
    for job in jobs:  # every setting checked here, whatever --redo says
        parse_overrides(job.command()[2:])
    return jobs


def grid_first_seed(settings: list[str]) -> tuple[int, list[str]]:
    """The seed a grid's seeds start from (--first_seed=S: SEEDS N means seeds S .. S+N-1, a
    range A-B seeds S+A .. S+B; 0 without), and the settings without it. Each job sets its own
    --first_seed, --seeds and --target_market, so that its label, its run and the skip and
    resume check agree; a sweep's markets and seeds come from its grid, never from these."""
    first_seed = 0
    for text in settings:
        key, value = text[2:].split("=", 1)
        if key == "first_seed":
            if not value.isdigit():
                raise ConfigError(f"--first_seed={value}: must be an integer >= 0 (the grid's seeds start there)")
            first_seed = int(value)
        elif key in GRID_SETTINGS:
            raise ConfigError(f"--{key}={value}: {GRID_SETTINGS[key]}")
    return first_seed, [s for s in settings if s[2:].split("=", 1)[0] != "first_seed"]


def setting(job: Job, key: str, default: str) -> str:
    values = [s.split("=", 1)[1] for s in job.settings if s.startswith(f"--{key}=")]
    return values[-1] if values else default


# ---------------------------------------------------------------- on a Ray node

def run_job(args: list[str], cwd: str, env: dict[str, str]) -> tuple[int, str]:
    """One job, as a Ray task on the node Ray picks: `python ARGS` in `cwd`, with `env` added to
    the environment; returns its exit code and, if not 0, the last lines of its output.
    ray.cancel (the deadline, Ctrl-C) raises KeyboardInterrupt here: the job gets SIGINT, saves
    its checkpoint and exits 130. The job dies with the Ray worker (SIGKILL), so that a retry
    never runs beside it in the same run folder."""
    import ctypes
    prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None  # looked up before the fork

    def in_child() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])  # Ray's worker blocks it
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen([sys.executable, *args], cwd=cwd, env={**os.environ, **env}, stdout=output,
                                   stderr=subprocess.STDOUT, preexec_fn=in_child)
        try:
            while process.poll() is None:  # not wait(): ray.cancel's KeyboardInterrupt comes between bytecodes
                time.sleep(0.5)
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            process.wait()
        output.seek(0)
        return process.returncode, "".join(output.readlines()[-15:]) if process.returncode else ""


def node_problem(paths: list[str], log_dirs: list[str], probe: str) -> str:
    """What a node (this Ray task's) lacks to run the sweep's jobs: one of `paths`, or a log
    folder that holds the driver's `probe` file and takes a new one; "" when nothing."""
    host = socket.gethostname()
    for path in paths:
        if not os.path.exists(path):
            return f"node {host} has no {path}"
    for folder in log_dirs:
        if not os.path.exists(os.path.join(folder, probe)):
            return (f"node {host} does not share the log folder {folder} with this machine: on a cluster "
                    f"it must be on storage all nodes share")
        mine = os.path.join(folder, f"{probe}-{host}-{os.getpid()}")
        try:
            open(mine, "w").close()
            os.remove(mine)
        except OSError as error:
            return f"node {host} cannot write to the log folder {folder} ({error.strerror})"
    return ""


# ---------------------------------------------------------------- this machine, the driver

def start_ray(address: str, cpus: int) -> None:
    """Start a Ray instance of `cpus` CPUs on this machine (address ""), or join the cluster
    at `address` (auto or HOST:PORT); a cluster that does not answer or refuses this client is
    a ConfigError within seconds (ray.init itself would retry for minutes)."""
    import ray
    if not address:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="error")
        return
    gcs = address if address != "auto" else os.environ.get("RAY_ADDRESS") or latest_local_cluster()
    if gcs is None:
        raise ConfigError(f"--ray_address={address}: no Ray cluster runs on this machine (none was started "
                          f"here with `ray start`, and RAY_ADDRESS is not set)")
    host, _, port = gcs.rpartition(":")
    if not (host and port.isdigit()):
        raise ConfigError(f"--ray_address={address}: expected auto or HOST:PORT "
                          f"(or nothing: a Ray instance on this machine)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"--ray_address={address}: no Ray cluster answers at {gcs} ({error.strerror or error}); "
                          f"start one with `ray start --head`, or correct the address") from None
    if address != "auto":  # `auto` finds a token of this machine (~/.ray/auth_token) by itself
        try:
            # `ray status` asks the cluster's GCS, as ray.init does first, but is refused at once
            # without the cluster's token (ray.init retries for minutes)
            ray_cli = Path(sys.executable).with_name("ray")  # installed with ray, beside python
            probe = subprocess.run([str(ray_cli), "status", f"--address={gcs}"], capture_output=True, text=True,
                                   timeout=10)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"--ray_address={address}: {gcs} answers, but not as a Ray cluster's GCS "
                              f"(the port of `ray start --head --port=PORT`, 6379 by default)") from None
        if probe.returncode != 0:
            raise join_error(address, gcs, (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1])
    try:
        ray.init(address=address, log_to_driver=False, logging_level="error")
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as error:
        causes = [error]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        raise join_error(address, gcs, " ".join(str(cause) for cause in causes)) from None


def latest_local_cluster() -> str | None:
    """HOST:PORT of the latest cluster started on this machine with `ray start`, which records it
    in the file ray_current_cluster of Ray's temporary folder (ray.init(address="auto") reads it)."""
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        return (Path(temp) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def join_error(address: str, gcs: str, why: str) -> ConfigError:
    """The one line that says why this client could not join the cluster at `gcs`."""
    if "AuthenticationError" not in why and "InvalidAuthToken" not in why:
        first_line = why.strip().split("\n")[0]
        return ConfigError(f"--ray_address={address}: cannot join the Ray cluster at {gcs}: {first_line}")
    refused = ("refused this client's token" if os.environ.get("RAY_AUTH_MODE") == "token" else
               "requires token authentication (RAY_AUTH_MODE=token) and refused this client")
    return ConfigError(f"--ray_address={address}: the Ray cluster at {gcs} {refused}: run the sweep with "
                       f"RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token, in the file named by "
                       f"RAY_AUTH_TOKEN_PATH or in RAY_AUTH_TOKEN (`ray get-auth-token` on its head node prints it)")


def check_nodes(jobs: list[Job]) -> None:
    """ConfigError unless every node of the Ray cluster sees the repository, this working
    directory and the jobs' log folders, and can write to those (Ray tasks, one per node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    log_dirs = sorted({str(Path(setting(job, "log_dir", "log/sweep")).resolve()) for job in jobs})
    probe = f".sweep-probe-{uuid.uuid4().hex}"
    try:
        for folder in log_dirs:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / probe).touch()
    except OSError as error:
        raise ConfigError(f"log_dir {error.filename}: cannot write there ({error.strerror})") from None
    try:
        task = ray.remote(node_problem)
        paths = [str(Path.cwd()), str(REPO / "train_model.py")]
        nodes = [NodeAffinitySchedulingStrategy(node["NodeID"], soft=False) for node in ray.nodes() if node["Alive"]]
        answers = [task.options(num_cpus=0, scheduling_strategy=on).remote(paths, log_dirs, probe) for on in nodes]
        try:
            problems = [answer for answer in ray.get(answers, timeout=120) if answer]
        except ray.exceptions.GetTimeoutError:
            raise ConfigError("a node of the Ray cluster did not run a task within 2 minutes") from None
        if problems:
            raise ConfigError(problems[0])
    finally:
        for folder in log_dirs:
            (Path(folder) / probe).unlink(missing_ok=True)


def job_slots(resources: Resources) -> int:
    """How many jobs the live nodes of the Ray cluster hold at once (at most resources.most)."""
    import ray
    slots = 0
    for node in ray.nodes():
        if node["Alive"]:
            have = node["Resources"]
            fits = int(have.get("CPU", 0) // resources.cpus)
            if resources.gpus:
                fits = min(fits, int(have.get("GPU", 0) / resources.gpus + 1e-6))
            slots += fits
    return slots if resources.most is None else min(slots, resources.most)


def outcome(ref: object) -> tuple[int | None, str]:
    """A finished job task's exit code and output tail; None and the reason when Ray lost the
    task's worker or node."""
    import ray
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:  # stopped before it started
        return 130, ""
    except ray.exceptions.RayTaskError as error:  # run_job failed, e.g. no Python at this path there
        return 1, str(error)
    except ray.exceptions.RayError as error:  # its worker or its node died
        return None, type(error).__name__


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


class Console:
    """Lines about the jobs, and the grid's status line below them: on a terminal one line
    redrawn in place, elsewhere printed whenever a job ends."""

    def __init__(self) -> None:
        self.live = sys.stdout.isatty()
        self.started = time.time()
        self.status = ""

    def line(self, text: str) -> None:
        print(f"\r\033[K{text}" if self.live else text, flush=True)
        if self.live:
            print(self.status, end="", flush=True)

    def update(self, done: int, running: int, waiting: int, failed: int, retried: int, ended: bool) -> None:
        left = ""
        if done and running + waiting:  # at the pace so far
            left = f", about {duration((time.time() - self.started) / done * (running + waiting))} left"
        self.status = (f"grid: {done} done, {running} running, {waiting} waiting, {failed} failed"
                       + (f", {retried} retried" if retried else "") + left)
        if self.live:
            print(f"\r\033[K{self.status}", end="", flush=True)
        elif ended:
            print(self.status, flush=True)

    def close(self) -> None:
        if self.live:
            print(flush=True)


def run_jobs(jobs: list[Job], resources: Resources, deadline: float | None, retries: int) -> list[Job]:
    """Run the jobs as Ray tasks, in order, as many at a time as the cluster holds, until done
    or the deadline; returns those not finished (failed, interrupted or never started)."""
    import ray
    task = ray.remote(run_job).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0)
    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
    waiting, running, unfinished = list(jobs), {}, []
    done = failed = retried = 0
    stopping = False  # after the deadline: no job starts, none runs again
    console = Console()
    try:
        while waiting or running:
            if deadline is not None and time.time() >= deadline:
                if running:
                    console.line(f"deadline: interrupting {len(running)} running job(s)")
                for ref in running:
                    ray.cancel(ref)  # the job checkpoints and exits 130
                deadline, stopping, waiting, unfinished = None, True, [], unfinished + waiting
            slots = job_slots(resources) if waiting else 0
            while waiting and len(running) < slots:
                job = waiting.pop(0)
                running[task.remote(job.command()[1:], str(Path.cwd()), env)] = (job, time.time())
                what = f"resume {job.name} from {job.resume}" if job.resume else f"start {job.name}"
                where = f"{len(jobs) - len(waiting)}/{len(jobs)}" if job.attempt == 1 else f"attempt {job.attempt}"
                console.line(f"[{where}] {what}")
            if not running:  # the cluster has no room yet
                time.sleep(1)
                continue
            ready = ray.wait(list(running), num_returns=len(running), timeout=1.0)[0]
            for ref in ready:
                job, started = running.pop(ref)
                code, tail = outcome(ref)
                seconds = time.time() - started
                if code == 0:
                    done += 1
                    console.line(f"done {job.name} ({seconds:.0f} s)")
                elif not stopping and (code is None or code < 0 or code == 130) and job.attempt <= retries:
                    retried += 1
                    why = (tail if code is None else f"exit {code}" if code > 0 else
                           f"killed by {signal.Signals(-code).name}")
                    if retry(job):
                        waiting.insert(0, job)
                        console.line(f"lost {job.name} ({why}, {seconds:.0f} s): it runs again")
                    else:
                        done += 1
                        console.line(f"done {job.name} (its results were in before it was lost: {why})")
                else:
                    unfinished.append(job)
                    if code == 130:
                        console.line(f"stopped (exit 130) {job.name} ({seconds:.0f} s)")
                    else:
                        failed += 1
                        why = tail if code is None else f"exit {code}"
                        console.line(f"FAILED ({why}) {job.name} ({seconds:.0f} s)")
                        if code is not None and tail:
                            console.line(tail.rstrip("\n"))
            console.update(done, len(running), len(waiting), failed, retried, ended=bool(ready))
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT / SIGTERM sent to the sweep alone
        if not stopping:
            for ref in running:
                ray.cancel(ref)  # the job checkpoints and exits 130
        for ref, (job, _) in running.items():
            code, _ = outcome(ref)  # once the job has exited
            if code == 0:
                console.line(f"done {job.name}")
            else:
                unfinished.append(job)
                console.line(f"stopped (exit {code}) {job.name}")
        raise Interrupted(unfinished + waiting) from None
    finally:
        console.close()
    return unfinished + waiting


def retry(job: Job) -> bool:
    """Prepare a job whose process, worker or node died to run again: from the checkpoint of
    the run folder it made, if any (found on disk, as at the start); False if it had finished."""
    job.resume = None
    run_folders.cache_clear()
    previous = previous_run(job)
    if previous is not None and previous[0] == "done":
        return False
    job.resume = previous[1] if previous is not None else None
    job.attempt += 1
    return True


def sweep_on_ray(jobs: list[Job], address: str, resources: Resources, deadline: float | None,
                 retries: int) -> list[Job]:
    """Start or join Ray, check its nodes, run the jobs (run_jobs), leave Ray."""
    import ray
    if __name__ != "__main__":  # imported: Ray's workers get run_job by value, not by importing torch with us
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    on_sigterm = signal.getsignal(signal.SIGTERM)
    start_ray(address, resources.cpus * (resources.most or 1))
    signal.signal(signal.SIGTERM, signal.SIG_DFL if on_sigterm is None else on_sigterm)  # not ray.init's: exit at once
    try:
        check_nodes(jobs)
        if job_slots(resources) == 0:
            have = ray.cluster_resources()
            raise ConfigError(f"no node of the Ray cluster has {resources.cpus} CPU(s)"
                              + (f" and {resources.gpus} GPU" if resources.gpus else "")
                              + f" for a job (it has {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs)")
        return run_jobs(jobs, resources, deadline, retries)
    finally:
        ray.shutdown()


SWEEP_OPTIONS = {"models": str, "markets": str, "seeds": str, "plan": str, "jobs": int,
                 "deadline_minutes": float, "redo": bool, "dry_run": bool, "ray_address": str,
                 "cpus_per_job": int, "gpus_per_job": float, "retries": int}


def main(argv: list[str]) -> None:
    if "-h" in argv or "--help" in argv:
        print(help_text(SWEEP_OPTIONS))
        return
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    unknown = [arg for arg in argv if not (arg.startswith("--") and "=" in arg)]
    if unknown:
        raise ConfigError(f"bad argument {unknown[0]!r}: expected --key=value")
    for key, kind in SWEEP_OPTIONS.items():  # the numbers, parsed once
        if kind in (int, float) and key in options:
            try:
                options[key] = kind(options[key])
            except ValueError:
                raise ConfigError(f"{key}={options[key]}: expected {'an integer' if kind is int else 'a number'}") from None
    address, given_jobs = options.pop("ray_address", ""), options.pop("jobs", None)
    parallel, retries = 1 if given_jobs is None else given_jobs, options.pop("retries", 3)
    cpus, gpus = options.pop("cpus_per_job", None), options.pop("gpus_per_job", 0.0)
    if cpus is None and not address and parallel == 1:
        cpus = os.cpu_count() or 1  # a lone job here: all cores, torch's default threads
    else:
        cpus = 1 if cpus is None else cpus
        options.setdefault("num_threads", str(cpus))  # N jobs on N x C cores, not N x all cores
    for key, value, least in (("jobs", parallel, 1), ("cpus_per_job", cpus, 1), ("retries", retries, 0)):
        if value < least:
            raise ConfigError(f"{key}={value}: must be an integer >= {least}")
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise ConfigError(f"gpus_per_job={gpus:g}: must be a fraction of 1 (jobs share a GPU) or a whole number")
    resources = Resources(cpus, gpus, parallel if given_jobs is not None or not address else None)
    minutes = options.pop("deadline_minutes", None)
    redo, dry_run = (options.pop(key, "false") for key in ("redo", "dry_run"))
    for key, value in (("redo", redo), ("dry_run", dry_run)):
        if value not in ("true", "false"):
            raise ConfigError(f"{key}={value}: expected true or false")
    redo, dry_run = redo == "true", dry_run == "true"
    deadline = None if minutes is None else time.time() + 60 * minutes
    options.setdefault("log_dir", "log/sweep")
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
            elif previous is not None and previous[0] == "diverged":
                print(f"skip {job.name}: its training diverged in {previous[1]} ({DIVERGED} says where); "
                      f"--redo=true runs it afresh")
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
        unfinished = sweep_on_ray(jobs, address, resources, deadline, retries) if jobs else []
        interrupted = False
    except Interrupted as stop:
        unfinished, interrupted = stop.jobs, True
    for job in unfinished:
        print(f"not finished: python train_model.py {shlex.join(job.command()[2:])}")
    print(f"finished {len(jobs) - len(unfinished)} of {len(jobs)} jobs", flush=True)
    if unfinished:
        print("the same sweep command continues: finished jobs are skipped, interrupted ones resumed")
    for log_dir in dict.fromkeys(setting(job, "log_dir", "log/sweep") for job in jobs):
        if runs.find_run_folders([Path(log_dir)]):
            path = report.build_report([Path(log_dir)], Path(log_dir), "python -m tools.sweep " + " ".join(argv))
            print(f"report: {path}")
    if interrupted:
        sys.exit(130)
    if unfinished:
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop = Ctrl-C
    # Ctrl-C even when started as `cmd &` from a script (SIGINT ignored): Ray's workers and the
    # jobs inherit the disposition, and ray.cancel stops a job by SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_command(main)
