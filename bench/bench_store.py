"""Benchmark: the store at GPU scale (issue #18).

Builds a synthetic store through the product's own write path (`store.write` + `store.upsert`): 2 runs x 10 steps,
one evaluation per step of 5,000 prompts x 16 samples (1.6M samples, 1.6M verdicts, their picks and metrics, the
runs' training data), per-prompt NLLs following the coupled law so that `fit` has something to fit. Then it runs
each command a user runs on such a store, each in its own process, and prints one table: rows/s for the writes,
seconds (wall and CPU) and peak RSS for every command.

The write figure is rows over the seconds of every samples and verdicts write, one `store.write` transaction per
table and evaluation (80,000 rows), each timed whole: open and migrate, `store.upsert` (the rows' conversion to
one Arrow batch, the key probe, the INSERT), the commit that checkpoints it into the file, and the close. Its CPU
seconds are the process's (DuckDB's threads included); on a shared machine they are what an idle one's wall time
would approach.

Run: nice .venv/bin/python bench/bench_store.py            (the full store; about 2 GB of disk under --dir)
     .venv/bin/python bench/bench_store.py --tiny           (seconds: the suite runs this size)
Targets on a 2-core machine: writes >= 100,000 rows/s; sql, runs, summary and check_intact < 2 s each; fit < 20 s;
leaderboard < 30 s; import of the whole store into an empty one < 60 s; peak RSS < 4 GB.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from si_bench import store
from si_bench.measures import compute_measures
from si_bench.mock_backend import Response, write_scripted_model
from si_bench.select import hybrid_best_of_n

LAW = {"us_inf": 1.0, "a_s": 2.0, "uv_inf": 0.6, "a_v": 1.2, "lam": 0.5}  # per-token NLL over t
TOKENS = 150  # tokens per sample: a GSM8k-length solution
WORDS = ("so the total is then we add each of the remaining numbers which gives us and therefore half twice more "
         "than less per hour day week apples dollars students minutes first second third step answer").split()
CHUNK = 128  # rows per write of `evaluate`'s sampling loop: its default 8 prompts x 16 samples
WRITE_TARGET = 100_000  # rows/s
RSS_TARGET_MB = 4096


@dataclass(frozen=True)
class Scale:
    runs: int = 2
    steps: int = 10
    prompts: int = 5000
    samples: int = 16
    evaluate_prompts: int = 256  # `evaluate` (scripted model) on the full store: a GPU user's next evaluation
    n_boot: int = 20  # the measures' bootstrap while building (their values only fill the store)


TINY = Scale(runs=2, steps=3, prompts=12, samples=4, evaluate_prompts=4)


@dataclass
class Row:
    what: str
    seconds: float
    cpu: float | None = None
    rss_mb: float | None = None
    rows: int | None = None
    limit: float | None = None  # the target: at most this many seconds, or for a write at least this many rows/s
    note: str = ""

    @property
    def target(self) -> str:
        if self.limit is None:
            return ""
        return f">= {self.limit:,.0f} rows/s" if self.rows else f"< {self.limit:g} s"

    @property
    def missed(self) -> bool:
        if self.rows:
            return self.rows / self.seconds < self.limit
        return self.seconds >= self.limit or (self.rss_mb or 0) >= RSS_TARGET_MB


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    HEADER = f"{'':44} {'wall s':>8} {'cpu s':>8} {'rows/s':>10} {'peak RSS':>9}  target"

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(self.line(row), flush=True)  # as it comes: a long run shows its progress
        return row

    @staticmethod
    def line(r: Row) -> str:
        rate = f"{r.rows / r.seconds:,.0f}" if r.rows else ""
        cpu = f"{r.cpu:.2f}" if r.cpu is not None else ""
        rss = f"{r.rss_mb:,.0f} MB" if r.rss_mb is not None else ""
        verdict = ("MISSED" if r.missed else "met") if r.limit is not None else ""
        return f"{r.what:44} {r.seconds:8.2f} {cpu:>8} {rate:>10} {rss:>9}  {r.target} {verdict} {r.note}".rstrip()

    def table(self) -> str:
        return "\n".join([self.HEADER, *map(self.line, self.rows)])


# --------------------------------------------------------------------------- building the store


def law(t: float) -> tuple[float, float]:
    e = math.exp(-LAW["lam"] * t)
    return LAW["us_inf"] + LAW["a_s"] * e, LAW["uv_inf"] + LAW["a_v"] * e


def texts(n: int) -> list[str]:
    """n distinct solution-like texts of about 600 characters (they compress like text, not like noise)."""
    rng = np.random.default_rng(0)
    return [" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 100)) for _ in range(n)]


class Builder:
    """Writes runs, evaluations and their rows; times the big writes (samples, verdicts) as a user's would be."""

    def __init__(self, db: Path, scale: Scale, report: Report):
        self.db, self.scale, self.report = db, scale, report
        self.pool = texts(64)
        self.base = datetime(2026, 1, 1)
        self.written = {"rows": 0, "seconds": 0.0, "cpu": 0.0}

    def write(self, table: str, rows: list[dict], timed: bool = False) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        with store.write(self.db) as con:
            store.upsert(con, table, rows)
        if timed:
            self.written["rows"] += len(rows)
            self.written["seconds"] += time.perf_counter() - started
            self.written["cpu"] += time.process_time() - cpu

    def build(self) -> None:
        s = self.scale
        self.prompt_ids = [f"p{i:05d}" for i in range(s.prompts)]
        self.write("prompts", [{"dataset": "gsm8k", "split": "test", "prompt_id": p, "question": f"question {p}?",
                                "reference": "r", "answer": str(i), "meta": {"source": "bench"}}
                               for i, p in enumerate(self.prompt_ids)])
        for r in range(s.runs):
            self.run(f"bench-run-s{r}", seed=r)
        w = self.written
        self.report.add(Row("write samples + verdicts (per evaluation)", w["seconds"], w["cpu"],
                            rows=w["rows"], limit=WRITE_TARGET))

    def run(self, run_id: str, seed: int) -> None:
        s = self.scale
        rng = np.random.default_rng(zlib.crc32(run_id.encode()))
        difficulty = rng.normal(0.0, 0.25, s.prompts)  # shared over t, as real prompts' difficulty is
        self.write("runs", [{
            "run_id": run_id, "model": "bench-model", "backend": "vllm", "dataset": "gsm8k", "mode": "regenerate",
            "verifier": "tf", "seed": seed, "config": {"rounds": s.steps - 1, "seed": seed}, "config_hash": "bench",
            "status": "done", "steps_done": s.steps - 1, "git_commit": "bench", "versions": {},
            "created_at": self.base + timedelta(days=seed), "updated_at": self.base + timedelta(days=seed, hours=9)}])
        previous = None
        for step in range(s.steps):
            previous = self.evaluation(run_id, step, rng, difficulty, previous)
            w = self.written
            print(f"{previous[0]} written: {w['rows']:,} sample and verdict rows so far, {w['seconds']:.1f} s in "
                  "their writes", flush=True)

    def evaluation(self, run_id: str, step: int, rng, difficulty, previous: tuple | None) -> tuple:
        s, P, N = self.scale, self.scale.prompts, self.scale.samples
        gen_id, eval_id, ck = f"{run_id}-g{step}", f"{run_id}-e{step}", f"{run_id}-ck{step}"
        when = self.base + timedelta(hours=step)
        us, uv = law(step)
        good = (uv + difficulty + rng.normal(0, 0.1, P)) * TOKENS
        others = (us + difficulty[:, None] + rng.normal(0, 0.1, (P, N - 1))) * TOKENS
        nll = np.column_stack([good, others])
        n_tokens = np.full((P, N), TOKENS)
        scores = np.column_stack([np.full(P, 0.9), rng.uniform(0.05, 0.45, (P, N - 1))])
        correct = rng.random((P, N)) < 0.3 + 0.5 * (1 - math.exp(-LAW["lam"] * step))
        selection = hybrid_best_of_n(scores, nll, n_tokens, 0.5)
        metrics = compute_measures(nll, n_tokens, correct, scores, selection, n_boot=s.n_boot, seed=0, sigma=0.5)
        with store.write(self.db) as con:
            store.upsert(con, "checkpoints", [{"checkpoint_id": ck, "run_id": run_id, "step": step, "t": float(step),
                                               "t_unit": "round", "weights_hash": ck, "created_at": when}])
            store.upsert(con, "generations", [{
                "gen_id": gen_id, "checkpoint_id": ck, "model": f"bench-model@{step}", "backend": "vllm",
                "dataset": "gsm8k", "split": "test", "n_prompts": P, "n_samples": N, "settings": {"samples": N},
                "created_at": when}])
            store.upsert(con, "evaluations", [{
                "eval_id": eval_id, "gen_id": gen_id, "verifier": "tf", "verifier_key": "tf-0", "sigma": 0.5,
                "settings": {"n_boot": s.n_boot}, "status": "running", "timings": {}, "created_at": when}])
            store.upsert(con, "run_evals", [{"run_id": run_id, "eval_id": eval_id, "step": step, "t": float(step),
                                             "t_unit": "round", "role": "test"}])
        pids, nlls, ok, sc = self.prompt_ids, nll.tolist(), correct.tolist(), scores.tolist()
        self.write("samples", [
            {"gen_id": gen_id, "prompt_id": pids[i], "sample_idx": j,
             "text": f"{self.pool[(i * N + j) % 64]} #### {i}", "answer": str(i), "correct": ok[i][j],
             "nll": nlls[i][j], "n_tokens": TOKENS}
            for i in range(P) for j in range(N)], timed=True)
        self.write("verdicts", [
            {"gen_id": gen_id, "verifier_key": "tf-0", "prompt_id": pids[i], "sample_idx": j, "score": sc[i][j],
             "raw": {"method": "tf", "choice_logliks": [math.log1p(-sc[i][j]), math.log(sc[i][j])]}}
            for i in range(P) for j in range(N)], timed=True)
        picked = selection.index.tolist()
        with store.write(self.db) as con:
            store.upsert(con, "picks", [
                {"eval_id": eval_id, "prompt_id": pids[i], "sample_idx": picked[i], "source": "self",
                 "reason": "fallback" if selection.fallback[i] else "passed", "score": float(selection.score[i])}
                for i in range(P)])
            store.upsert(con, "metrics", [
                {"eval_id": eval_id, "name": name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                 "n": m.n, "reason": m.reason} for name, m in metrics.items()])
            if previous is not None:
                store.upsert(con, "training_data", [
                    {"run_id": run_id, "step": step, "prompt_id": pids[i], "source": "self", "eval_id": previous[0],
                     "sample_idx": previous[1][i], "score": 0.9, "completion": self.pool[i % 64]} for i in range(P)])
            con.execute("UPDATE evaluations SET status = 'done', finished_at = ? WHERE eval_id = ?",
                        [when + timedelta(minutes=30), eval_id])
        return eval_id, picked


# --------------------------------------------------------------------------- timing the commands


# A child's peak RSS as wait4 reports it includes the address space it was forked from: `si-bench` is started
# by this small launcher, not by the benchmark process that holds the rows it built.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def cli(args: list[str]) -> tuple[float, float, float]:
    """Run `si-bench ARGS` in its own process: (wall s, CPU s, peak RSS MB)."""
    with tempfile.TemporaryDirectory() as scratch:
        usage = Path(scratch) / "usage"
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(usage), sys.executable, "-m", "si_bench", *args],
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode:
            raise RuntimeError(f"si-bench {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        cpu, rss_kb = usage.read_text().split()
    return wall, float(cpu), int(rss_kb) / 1024


def time_commands(db: Path, scratch: Path, scale: Scale, report: Report, run: Callable = cli) -> None:
    sql = 'SELECT count(*) AS samples FROM samples'
    commands = [
        ("sql: SELECT 1 (start-up)", ["sql", "SELECT 1"], None),
        ("sql: SELECT count(*) FROM samples", ["sql", sql], 2),
        ("runs", ["runs"], 2),
        ("summary: sql SELECT * FROM summary", ["sql", "SELECT * FROM summary"], 2),
        ("fit (both runs, prompt replicates)", ["fit", "--json"], 20),
        ("leaderboard", ["leaderboard", "--out", str(scratch / "board")], 30),
    ]
    for what, args, limit in commands:
        report.add(Row(what, *run([*args, "--db", str(db)]), limit=limit))
    started, cpu = time.perf_counter(), time.process_time()
    store.check_intact(db)
    report.add(Row("check_intact (in process)", time.perf_counter() - started, time.process_time() - cpu, limit=2))
    report.add(chunk_write(db, scale))
    model = write_scripted_model(scratch / "scripted", [Response("#### {answer}", -20.0, 150, 0.9),
                                                        Response("#### 0", -30.0, 150, 0.2)])
    evaluate = ["evaluate", "--model", str(model), "--backend", "mock", "--dataset", "arith", "--split", "test",
                "--limit", str(scale.evaluate_prompts), "--samples", str(scale.samples), "--n-boot", "100"]
    n = scale.evaluate_prompts * scale.samples
    report.add(Row(f"evaluate {scale.evaluate_prompts} prompts x {scale.samples} (mock)",
                   *run([*evaluate, "--db", str(db)]), note=f"{n:,} samples in chunks of {CHUNK}"))
    report.add(Row("evaluate again (resume: finds it stored)", *run([*evaluate, "--db", str(db)])))
    empty = scratch / "empty.duckdb"
    report.add(Row("import the whole store into an empty one", *run(["import", str(db), "--db", str(empty)]),
                   limit=60))
    if counts(empty) != counts(db):
        raise RuntimeError(f"the import copied {counts(empty)} of {counts(db)} rows")
    report.add(Row("import it again (every row already there)", *run(["import", str(db), "--db", str(empty)])))


def counts(db: Path) -> dict[str, int]:
    with store.read(db) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                            "current_database() AND table_name <> 'schema_version'").fetchall()]
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in sorted(tables)}


def chunk_write(db: Path, scale: Scale, repeats: int = 5) -> Row:
    """One sampling chunk (8 prompts x 16 samples) rewritten into the full store: open, write, commit, close."""
    with store.read(db) as con:
        rows = con.execute(f"SELECT * FROM samples LIMIT {CHUNK}").df().to_dict("records")
        before = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    seconds, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        with store.write(db) as con:
            store.upsert(con, "samples", rows)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    with store.read(db) as con:
        after = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    if after != before:
        raise RuntimeError(f"rewriting {len(rows)} stored samples changed the count from {before} to {after}")
    return Row(f"one chunk write ({len(rows)} samples, median of {repeats})", float(np.median(seconds)),
               float(np.median(cpu)), rows=len(rows), note="a rerun: no duplicates")


def main(argv: list[str] | None = None, run: Callable = cli) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the suite's size: seconds")
    parser.add_argument("--dir", help="where the stores go (default: a temporary directory, removed after)")
    for name in ("runs", "steps", "prompts", "samples"):
        parser.add_argument(f"--{name}", type=int, help=f"another number of {name} (default: {getattr(Scale, name)})")
    parser.add_argument("--writes-only", action="store_true", help="build the store, time no command")
    args = parser.parse_args(argv)
    scale = replace(TINY if args.tiny else Scale(), **{k: v for k, v in vars(args).items()
                                                       if k in Scale.__dataclass_fields__ and v is not None})
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="si-bench-store-"))
    scratch.mkdir(parents=True, exist_ok=True)
    db, report = scratch / "bench.duckdb", Report()
    for old in scratch.glob("*.duckdb*"):  # a fresh store, and an empty one to import into
        old.unlink()
    try:
        started = time.perf_counter()
        Builder(db, scale, report).build()
        print(f"built {db} ({db.stat().st_size / 1e6:,.0f} MB): {scale.runs} runs x {scale.steps} steps x "
              f"{scale.prompts:,} prompts x {scale.samples} samples in {time.perf_counter() - started:.0f} s",
              flush=True)
        if not args.writes_only:
            time_commands(db, scratch, scale, report, run)
    finally:
        print(report.table(), flush=True)
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
