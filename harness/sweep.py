"""Sweeps: a grid of `run` jobs (models x datasets x verifiers x seeds x any other run setting), each writing its
own store shard and work directory, executed one after another in this process (`local`) or as one Ray task
per job (`ray`). The driver merges every finished shard into the main store with `import`'s rules.

A sweep directory holds, per job:
    jobs/<job id>/job.json      settings, status (waiting | running | done | failed), error, seconds, torch
                                threads, what it reused, the store it was merged into (a job left waiting or
                                running by a driver that no longer holds the directory reads as interrupted)
    jobs/<job id>/shard.duckdb  the job's own store
    jobs/<job id>/runs/         its checkpoints
    .driver.lock                held by the driver while it runs (released when its process ends, killed or not)
A job's id is its run id, so running a sweep again skips the jobs done and merged, continues interrupted ones
from their shards and retries failed ones. Only the driver writes job.json, and one driver at a time runs a
sweep directory: a second is refused while the first holds the lock.

Shared work is done once: before a job starts, its shard is seeded with the sampling passes (and finished
evaluations over them) that the main store already holds for its model, dataset and seed, so a job over another
verifier or training setting finds the base model's measurements done (and a checkpoint whose weights another job
already trained, measured). Jobs that could share them (same model, dataset and seed) run one after another on
Ray too; the outcome says how much each reused.

Shards and checkpoints reach the driver through a shared filesystem: every Ray node must see the sweep directory
at the same path (one machine, NFS or a cluster filesystem). A worker that cannot see its job directory fails the
job saying so; nothing is shipped between machines.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import socket
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb

from si_bench import locks, store
from si_bench.errors import SIBenchError
from si_bench.merge import ON_CONFLICT, merge
from si_bench.models import check_spec
from si_bench.options import Options, check_directory, option
from si_bench.progress import scope
from si_bench.trainers.config import SelfImproveConfig
from si_bench.trainers.external import SOURCES

EXECUTORS = ("local", "ray")
AXES = {"models": "model", "datasets": "dataset", "verifiers": "verifier", "seeds": "seed"}
SHARD = "shard.duckdb"
RECORD = "job.json"
DRIVER_LOCK = ".driver.lock"
MAX_JOBS = 1000  # a grid's default ceiling: each job is a whole run; --max-jobs raises it
MAX_CPUS = 1024  # a job's CPUs and threads, and its GPUs, live on one node: more than any node has
MAX_GPUS = 16


@dataclass
class SweepConfig(Options):
    """How a sweep is carried out; what it runs is its spec (a YAML grid, see the README)."""

    spec: str = option(help="The sweep's YAML spec: models, datasets, verifiers, seeds and `run` settings; "
                            "a list is an axis of the grid.", argument=True)
    executor: str = option("local", "local (one job after another, in this process) or ray (one Ray task per job).",
                           choices=EXECUTORS)
    address: str | None = option(None, "Ray cluster to join (e.g. auto, or ray://HEAD:10001); default: start a "
                                       "local Ray on this machine's CPUs and GPUs.")
    cpus: float = option(1.0, "CPUs per job: its Ray resource, and its torch threads unless --threads.", above=0,
                        max=MAX_CPUS)
    gpus: float = option(0.0, "GPUs per job, a Ray resource (a fraction shares a GPU).", min=0,
                        max=MAX_GPUS)
    threads: int | None = option(None, "torch threads per job (default: --cpus, at least 1); set explicitly on "
                                       "both executors, since Ray sets OMP_NUM_THREADS=1.", min=1,
                                 max=MAX_CPUS)
    max_jobs: int = option(MAX_JOBS, "The largest grid this sweep may run: a spec of more jobs is refused with its "
                                     "size before any is built.", min=1, max=1_000_000)
    sweep_dir: str | None = option(None, "The sweep directory: job shards, checkpoints and states (default: "
                                         "si-bench-sweeps/<spec name> beside the store). On a Ray cluster, every "
                                         "node must see it at the same path.", output="directory")
    on_conflict: str = option("refuse", "When a job's shard and the store hold different results for one row: "
                                        "fail the job (default), take the shard's or keep the store's, as "
                                        "`import --on-conflict` (row families move together).", choices=ON_CONFLICT)

    def check(self) -> None:
        if self.executor != "ray" and (self.address or self.gpus):
            raise SIBenchError("--address and --gpus apply to --executor ray")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise SIBenchError("--executor ray needs Ray: pip install 'si-bench[ray]'")

    @property
    def torch_threads(self) -> int:
        return self.threads or max(1, int(self.cpus))

    def directory(self, db: str) -> Path:
        if self.sweep_dir:
            return Path(self.sweep_dir).resolve()  # workers may start in another directory
        return Path(db).resolve().parent / "si-bench-sweeps" / Path(self.spec).stem


@dataclass
class Job:
    """One grid point: a `run` configuration; its id is the run id."""

    config: SelfImproveConfig

    @property
    def job_id(self) -> str:
        return self.config.run_id


@dataclass
class JobOutcome:
    """What became of a job in this sweep: done now, done earlier (skipped) or failed with an error."""

    job: Job
    status: str
    seconds: float = 0.0
    rows_merged: int = 0
    error: str | None = None
    threads: int | None = None  # torch's thread count in the job
    reused: dict[str, int] = field(default_factory=dict)  # sampling passes and evaluations found done, not redone
    diverged: list[str] = field(default_factory=list)  # generations sampled twice with other texts, kept whole


# ---------------------------------------------------------------- the spec


def read_spec(path: str | Path, max_jobs: int = MAX_JOBS) -> list[Job]:
    """The jobs of a spec, in grid order; every job's settings are checked here, before any work, and the grid's
    size from its axes before any job is built."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SIBenchError(f"cannot read sweep spec {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SIBenchError(f"sweep spec {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise SIBenchError(f"sweep spec {path} must be a mapping (models, datasets, verifiers, seeds, run)")
    axes = _settings(spec, path)
    _check_size(axes, max_jobs, path)
    names = list(axes)
    jobs = []
    for values in itertools.product(*(axes[n] for n in names)):
        try:
            jobs.append(Job(SelfImproveConfig(**dict(zip(names, values, strict=True)))))
        except SIBenchError as exc:
            raise SIBenchError(f"sweep spec {path}: {exc}") from None
    _check_distinct(jobs, path)
    return jobs


def _check_size(axes: dict[str, list], max_jobs: int, path) -> None:
    size = math.prod(len(values) for values in axes.values())
    if size > max_jobs:
        shape = " x ".join(f"{len(values)} {name}" for name, values in axes.items() if len(values) > 1)
        raise SIBenchError(f"sweep spec {path} is a grid of {size:,} jobs ({shape}), more than --max-jobs {max_jobs:,}")


def _settings(spec: dict, path) -> dict[str, list]:
    """{run setting: its values}, from the top-level axes and the `run` mapping."""
    unknown = set(spec) - set(AXES) - {"run"}
    if unknown:
        raise SIBenchError(f"sweep spec {path}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (use models, "
                           "datasets, verifiers, seeds and run)")
    run = spec.get("run") or {}
    if not isinstance(run, dict):
        raise SIBenchError(f"sweep spec {path}: run must be a mapping of `si-bench run` settings")
    hints = typing.get_type_hints(SelfImproveConfig)
    out: dict[str, list] = {}
    for key, value in [*((AXES[k], v) for k, v in spec.items() if k in AXES), *run.items()]:
        name = str(key).replace("-", "_")
        if name not in hints:
            raise SIBenchError(f"sweep spec {path}: {key!r} is not a setting of `si-bench run`")
        if name in out:
            raise SIBenchError(f"sweep spec {path}: {name} is given twice")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise SIBenchError(f"sweep spec {path}: {key} has no values")
        try:
            out[name] = [_coerced(name, v, hints[name]) for v in values]
        except SIBenchError as exc:
            raise SIBenchError(f"sweep spec {path}: {exc}") from None
    for model in {*out.get("model", []), *(e for e in out.get("external", []) if e and e not in SOURCES)}:
        try:
            check_spec(model)
        except SIBenchError as exc:
            raise SIBenchError(f"sweep spec {path}: {exc}") from None
    return out


def _coerced(name: str, value: Any, hint: Any) -> Any:
    """A spec value as its `run` option takes it, or one clear error before any job: YAML reads 5e-4 as a string,
    which a float setting takes as the number it means; 2.5 samples, a model that is not text, or a list where
    one value goes are refused."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in kinds:
        taken = _as_kind(value, kind)
        if taken is not _REFUSED:
            return taken
    wanted = " or ".join(_KIND_NAMES.get(k, getattr(k, "__name__", str(k))) for k in kinds)
    raise SIBenchError(f"{name} takes {wanted}, not {value!r}")


_REFUSED = object()
_KIND_NAMES = {str: "text (quote a number)", int: "a whole number", float: "a number", bool: "true or false",
               type(None): "null"}


def _as_kind(value: Any, kind: Any) -> Any:
    if kind is type(None):
        return None if value is None else _REFUSED
    if kind is bool or isinstance(value, bool):  # YAML's true/false is no number, and a number no switch
        return value if kind is bool and isinstance(value, bool) else _REFUSED
    if kind is int:
        return value if isinstance(value, int) else _REFUSED
    if kind is float and isinstance(value, (int, float, str)):
        try:
            return float(value)
        except ValueError:
            return _REFUSED
    if kind is str:
        return value if isinstance(value, str) else _REFUSED
    if typing.get_origin(kind) is list and isinstance(value, list):
        items = [_as_kind(v, typing.get_args(kind)[0]) for v in value]
        return _REFUSED if _REFUSED in items else items
    return _REFUSED


def _check_distinct(jobs: list[Job], path) -> None:
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.job_id in seen:
            first, second = seen[job.job_id].config.changed(), job.config.changed()
            differ = sorted(k for k in {*first, *second} if first.get(k) != second.get(k))
            raise SIBenchError(
                f"sweep spec {path}: two grid points are the same run {job.job_id}: they differ only in "
                f"{', '.join(differ)}, which do not enter a run id (a run with more rounds continues the shorter "
                "one); give one value")
        seen[job.job_id] = job


# ---------------------------------------------------------------- one job (in this process or a Ray worker)


def run_job(job_dir: str, config_json: str, threads: int, progress: Any = None,
            log: Callable[[str], None] | None = None) -> dict:
    """Run (or continue) one job into its shard; {"status": done | failed, "error", "seconds", "threads"}. Never
    raises for the job's own failure: a failed job must not stop the others."""
    import torch

    from si_bench.trainers.rounds import SelfImproveRun

    started = time.perf_counter()
    torch.set_num_threads(threads)
    folder = Path(job_dir)
    try:
        if not folder.is_dir():
            raise SIBenchError(f"job directory {folder} is not visible on {socket.gethostname()}: the sweep "
                               "directory must be on a filesystem every node shares")
        cfg = SelfImproveConfig.from_json(config_json)
        SelfImproveRun(cfg, str(folder / SHARD), workdir=str(folder / "runs"), progress=progress,
                       log=log or _quiet).run()
    except Exception as exc:  # noqa: BLE001 (any error of one job is that job's outcome, reported with it)
        return {"status": "failed", "error": _one_line(exc), "seconds": time.perf_counter() - started,
                "threads": torch.get_num_threads()}
    return {"status": "done", "error": None, "seconds": time.perf_counter() - started,
            "threads": torch.get_num_threads()}


def _quiet(_message: str) -> None:
    pass


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


# ---------------------------------------------------------------- executors

Started = Callable[[Job], None]


def local_outcomes(jobs: list[Job], folders: dict[str, Path], cfg: SweepConfig, started: Started, progress: Any,
                   log: Callable[[str], None]) -> Iterator[tuple[Job, dict]]:
    """One job after another in this process (its torch thread count restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    try:
        for number, job in enumerate(jobs, 1):
            started(job)
            with scope(progress, f"job {number}/{len(jobs)}"):
                outcome = run_job(str(folders[job.job_id]), job.config.to_json(), cfg.torch_threads, progress, log)
            yield job, outcome
    finally:
        torch.set_num_threads(before)


def ray_outcomes(jobs: list[Job], folders: dict[str, Path], cfg: SweepConfig, started: Started, progress: Any,
                 log: Callable[[str], None]) -> Iterator[tuple[Job, dict]]:
    """One Ray task per job with its CPUs and GPUs, on the Ray this process already joined, the cluster at
    --address, or a local Ray started (and stopped) here. A task whose worker dies fails its job."""
    import ray
    from ray.exceptions import RayError

    owned = not ray.is_initialized()
    if owned:
        local: dict[str, Any] = {} if cfg.address else {"include_dashboard": False}
        ray.init(address=cfg.address, log_to_driver=False, **local)
    try:
        task = ray.remote(run_job).options(num_cpus=cfg.cpus, num_gpus=cfg.gpus, max_retries=0,
                                           runtime_env=_forwarded_env())
        waiting = list(jobs)
        pending: dict[Any, tuple[Job, float]] = {}  # Ray's ObjectRef -> its job, submitted when
        while waiting or pending:
            busy = {share_key(job) for job, _ in pending.values()}
            for job in list(waiting):
                if share_key(job) not in busy:  # a job that can share work waits for the one before it
                    busy.add(share_key(job))
                    waiting.remove(job)
                    started(job)
                    ref = task.remote(str(folders[job.job_id]), job.config.to_json(), cfg.torch_threads)
                    pending[ref] = (job, time.perf_counter())
            [ready], _ = ray.wait(list(pending), num_returns=1)
            job, submitted = pending.pop(ready)
            try:
                outcome = ray.get(ready)
            except RayError as exc:  # the worker died: the job's time is the task's, queueing included
                outcome = {"status": "failed", "error": _one_line(exc), "seconds": time.perf_counter() - submitted}
            yield job, outcome
    finally:
        if owned:
            ray.shutdown()


def _forwarded_env() -> dict | None:
    """The driver's SI_BENCH_* variables (model cache, fault points) reach the workers."""
    env = {k: v for k, v in os.environ.items() if k.startswith("SI_BENCH_")}
    return {"env_vars": env} if env else None


EXECUTE = {"local": local_outcomes, "ray": ray_outcomes}


# ---------------------------------------------------------------- shared work


def share_key(job: Job) -> tuple:
    """Jobs with the same key can share the base model's sampling passes (their prompts and seeds agree)."""
    return job.config.model, job.config.dataset, job.config.seed


# Per table, the rows of the main store (alias m) a job's shard is seeded with: sampling passes of the job's
# dataset, backend and seed with their samples and verdicts, and the finished evaluations over them.
_SHARED_GENS = ("SELECT gen_id FROM m.generations WHERE dataset = $dataset AND backend = $backend "
                "AND json_extract_string(settings, '$.seed') = $seed::VARCHAR")
_SHARED_EVALS = f"SELECT eval_id FROM m.evaluations WHERE status = 'done' AND gen_id IN ({_SHARED_GENS})"
SEEDED = {"generations": f"gen_id IN ({_SHARED_GENS})", "samples": f"gen_id IN ({_SHARED_GENS})",
          "verdicts": f"gen_id IN ({_SHARED_GENS})", "evaluations": f"eval_id IN ({_SHARED_EVALS})",
          "metrics": f"eval_id IN ({_SHARED_EVALS})", "picks": f"eval_id IN ({_SHARED_EVALS})"}


def seed_shard(db: str | Path, shard: Path, job: Job) -> dict[str, list[str]]:
    """Copy into the job's shard what the main store holds that the job may share; returns the gen_ids and
    eval_ids that were new to the shard."""
    if not Path(db).exists():
        return {"gen_id": [], "eval_id": []}
    params = {"dataset": job.config.dataset, "backend": job.config.backend, "seed": job.config.seed}
    with store.write(shard) as con:
        try:
            con.execute(f"ATTACH '{str(Path(db).resolve()).replace(chr(39), chr(39) * 2)}' AS m (READ_ONLY)")
        except duckdb.IOException:  # another process writes the store now: this job does its own work
            return {"gen_id": [], "eval_id": []}
        new = {key: [r[0] for r in con.execute(
            f"SELECT {key} FROM ({query}) WHERE {key} NOT IN (SELECT {key} FROM main.{table})", params).fetchall()]
            for key, query, table in (("gen_id", _SHARED_GENS, "generations"),
                                      ("eval_id", _SHARED_EVALS, "evaluations"))}
        for table, where in SEEDED.items():
            con.execute(f"INSERT OR IGNORE INTO main.{table} BY NAME SELECT * FROM m.{table} WHERE {where}", params)
    return new


def reused(shard: Path, run_id: str, seeded: dict[str, list[str]]) -> dict[str, int]:
    """How many of the seeded sampling passes and evaluations the job's run used instead of redoing them."""
    with store.read(shard) as con:
        gens, evals = store.fetch_one(con,
            "SELECT count(DISTINCT e.gen_id) FILTER (WHERE e.gen_id IN (SELECT unnest($gens::VARCHAR[]))), "
            "count(DISTINCT e.eval_id) FILTER (WHERE e.eval_id IN (SELECT unnest($evals::VARCHAR[]))) "
            "FROM run_evals r JOIN evaluations e USING (eval_id) WHERE r.run_id = $run",
            {"gens": seeded["gen_id"], "evals": seeded["eval_id"], "run": run_id})
    return {"sampling passes": int(gens), "evaluations": int(evals)}


# ---------------------------------------------------------------- the driver


class Sweep:
    """A sweep over one main store: which jobs are done, running, failed; merging each shard as it finishes."""

    def __init__(self, cfg: SweepConfig, db: str = store.DEFAULT_DB, progress: Any = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.db, self.progress, self.log = cfg, db, progress, log
        self.jobs = read_spec(cfg.spec, cfg.max_jobs)
        self.root = cfg.directory(db)
        check_directory(self.root, "the sweep directory")
        self.folders = {job.job_id: self.root / "jobs" / job.job_id for job in self.jobs}
        self.counts = {"done": 0, "running": 0, "failed": 0, "waiting": 0}
        self.task = None
        self.seeded: dict[str, dict[str, list[str]]] = {}  # job id -> what its shard was seeded with

    def record(self, job: Job) -> dict:
        path = self.folders[job.job_id] / RECORD
        return json.loads(path.read_text()) if path.is_file() else {}

    def state(self, job: Job) -> str | None:
        """The job's status; waiting or running only while a driver holds the sweep directory, else interrupted."""
        status = self.record(job).get("status")
        if status in ("waiting", "running") and driver_holder(self.root) is None:
            return "interrupted"
        return status

    def finished(self, job: Job) -> bool:
        """Done and merged into this store, with the settings the spec gives now."""
        rec = self.record(job)
        return (rec.get("status") == "done" and rec.get("config") == job.config.to_json()
                and rec.get("merged_into") == str(Path(self.db).resolve()))

    def _write(self, job: Job, **fields_: Any) -> None:
        folder = self.folders[job.job_id]
        folder.mkdir(parents=True, exist_ok=True)
        rec = {**self.record(job), "job_id": job.job_id, "config": job.config.to_json(), **fields_}
        scratch = folder / f".{RECORD}.tmp"
        scratch.write_text(json.dumps(rec, indent=1, sort_keys=True))
        scratch.replace(folder / RECORD)

    def run(self) -> list[JobOutcome]:
        interrupted = sum(self.state(job) == "interrupted" for job in self.jobs)
        with driver_lock(self.root):
            if interrupted:
                self.log(f"sweep {self.root}: {interrupted} job(s) interrupted by a driver that stopped; continued "
                         "from their shards")
            return self._run()

    def _run(self) -> list[JobOutcome]:
        outcomes = {job.job_id: JobOutcome(job, "skipped") for job in self.jobs if self.finished(job)}
        todo = [job for job in self.jobs if job.job_id not in outcomes]
        self.counts.update(done=len(outcomes), waiting=len(todo))
        if self.progress is not None:
            self.task = self.progress.add_task(self._description(), total=len(self.jobs), completed=len(outcomes))
        if todo:
            self.log(f"sweep {self.root}: {len(todo)} of {len(self.jobs)} jobs to run ({self.cfg.executor})")
            for job in todo:
                self._write(job, status="waiting", error=None)
            execute = EXECUTE[self.cfg.executor]
            for job, outcome in execute(todo, self.folders, self.cfg, self._started, self.progress, self.log):
                outcomes[job.job_id] = self._finish(job, outcome)
        return [outcomes[job.job_id] for job in self.jobs]

    def _started(self, job: Job) -> None:
        self.folders[job.job_id].mkdir(parents=True, exist_ok=True)
        self.seeded[job.job_id] = seed_shard(self.db, self.folders[job.job_id] / SHARD, job)
        self._write(job, status="running", node=socket.gethostname())
        self._move("waiting", "running")

    def _finish(self, job: Job, outcome: dict) -> JobOutcome:
        result = JobOutcome(job, outcome["status"], outcome["seconds"], error=outcome["error"],
                            threads=outcome.get("threads"))
        if result.status == "done":
            shard = self.folders[job.job_id] / SHARD
            try:
                merging = self.progress.add_task(f"{job.job_id} · merging", total=1) if self.progress else None
                result.reused = reused(shard, job.job_id, self.seeded.get(job.job_id, {"gen_id": [], "eval_id": []}))
                counts = merge(shard, self.db, self.cfg.on_conflict)
                if merging is not None:
                    self.progress.advance(merging, 1)
                result.rows_merged = sum(c["added"] + c["updated"] for c in counts.values())
                result.diverged = counts.diverged
            except SIBenchError as exc:
                result.status, result.error = "failed", f"merge: {exc}"
        merged_into = str(Path(self.db).resolve()) if result.status == "done" else None
        self._write(job, status=result.status, error=result.error, seconds=round(result.seconds, 3),
                    threads=result.threads, merged_into=merged_into, reused=result.reused)
        self._move("running", "done" if result.status == "done" else "failed")
        if result.error:
            self.log(f"job {job.job_id} failed: {result.error}")
        return result

    def _move(self, source: str, target: str) -> None:
        self.counts[source] -= 1
        self.counts[target] += 1
        if self.task is not None:
            finished = self.counts["done"] + self.counts["failed"]
            self.progress.update(self.task, completed=finished, description=self._description())

    def _description(self) -> str:
        c = self.counts
        return f"sweep: {c['done']} done · {c['running']} running · {c['failed']} failed · {c['waiting']} waiting"


@contextmanager
def driver_lock(root: Path) -> Iterator[None]:
    """Hold the sweep directory for this driver; another driver on it, in this process too, is one clear error,
    before any work (an flock: it dies with the process that holds it)."""
    with locks.hold(root / DRIVER_LOCK, lambda holder: f"the sweep directory {root} is being run by another "
                    f"sweep ({holder}); wait for it to finish or give another --sweep-dir"):
        yield


def driver_holder(root: Path) -> str | None:
    """Who holds the sweep directory now (pid and host), or None when no driver runs it."""
    return locks.holder(root / DRIVER_LOCK)


def sweep(cfg: SweepConfig, db: str = store.DEFAULT_DB, progress: Any = None,
          log: Callable[[str], None] = print) -> list[JobOutcome]:
    """Run every job of the spec not yet done and merged into db; one outcome per job, in grid order."""
    return Sweep(cfg, db, progress, log).run()

