"""Sweeps on tiny-test: the same 2 seeds x {tf, qe} grid run on a local Ray (2 CPUs), locally and as the same runs
made one after another gives one store; the qe jobs reuse the tf jobs' sampling passes; a rerun adds nothing; a
failing job is reported while the others finish; a killed sweep's jobs read as interrupted, and it resumes."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import quiet, run_process
from rich.console import Console

from si_bench import faults, store
from si_bench.api import run, sweep
from si_bench.errors import SIBenchError
from si_bench.merge import NOT_RESULTS, merge
from si_bench.reports.terminal import sweep_table
from si_bench.sweep import Sweep, SweepConfig, driver_lock, read_spec

SPEC = """\
models: [tiny-test]
datasets: arith
verifiers: [tf, qe]
seeds: [0, 1]
run:
  mode: regenerate
  rounds: 1
  samples: 2
  train-prompts: 2
  test_limit: 2
  max_new_tokens: 4
  n_boot: 10
  train_batch_size: 2
  learning_rate: 5e-4
"""


class Progress:
    """Records the sweep's lines of what a rich progress display would show."""

    def __init__(self):
        self.descriptions: list[str] = []

    def add_task(self, description: str, **_kwargs) -> str:
        self.update(description, description)
        return description

    def update(self, _task, description: str | None = None, **_kwargs) -> None:
        if description and description.startswith("sweep:"):
            self.descriptions.append(description)

    def advance(self, _task, _n: int = 1) -> None:
        pass


def write_spec(folder: Path, text: str = SPEC) -> str:
    path = folder / "grid.yaml"
    path.write_text(text)
    return str(path)


# A generation's model is a checkpoint's path, and its checkpoint_id the lineage of the run that sampled it first.
PROVENANCE = {("generations", "model"), ("generations", "checkpoint_id")}


def results(db: str) -> dict:
    """Every table's result columns (timestamps, timings, paths and provenance left out), floats to 9 digits."""
    out = {}
    for table in store.query(db, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                                 "AND table_name <> 'schema_version'").table_name:
        columns = [c for c in store.query(db, f"SELECT * FROM {table} LIMIT 0").columns
                   if c not in NOT_RESULTS and (table, c) not in PROVENANCE]
        rows = store.query(db, f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").values.tolist()
        out[table] = [[comparable(v) for v in row] for row in rows]
    return out


def comparable(value):
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    return value


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory, tiny_model):
    ray = pytest.importorskip("ray", reason="the Ray executor needs the extra: pip install -e '.[ray]'")
    folder = tmp_path_factory.mktemp("ray-sweep")
    cfg, db = SweepConfig(spec=write_spec(folder), executor="ray"), str(folder / "main.duckdb")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = sweep(cfg, db=db, log=quiet)
    finally:
        ray.shutdown()  # a rerun finds every job done and starts no Ray
    return cfg, db, outcomes


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, tiny_model):
    """The same grid locally, in three goes: the command line killed during job 1's fine-tuning; job 1 failing
    (an injected fault after its fine-tuning) while job 2 finishes; the rest of job 1."""
    folder = tmp_path_factory.mktemp("local-sweep")
    spec, db = write_spec(folder), str(folder / "main.duckdb")
    killed = run_process("sweep", spec, "--db", db, env={"SI_BENCH_FAIL_AT": "train_step:1:kill"})
    left = Sweep(SweepConfig(spec=spec), db)
    states = [(left.record(job).get("status"), left.state(job)) for job in left.jobs]
    torch.set_num_threads(2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SI_BENCH_FAIL_AT", "after_training:1")
        faults.reset()
        failing = sweep(SweepConfig(spec=spec), db=db, log=quiet)
    threads_after = torch.get_num_threads()
    after_failure = results(db)
    progress = Progress()
    resumed = sweep(SweepConfig(spec=spec), db=db, progress=progress, log=quiet)
    return {"spec": spec, "db": db, "killed": killed, "failing": failing, "after_failure": after_failure,
            "resumed": resumed, "progress": progress.descriptions, "threads_after": threads_after, "states": states}


@pytest.fixture(scope="module")
def one_after_another(tmp_path_factory, tiny_model):
    """The grid's runs made one after another into one store, with the jobs' torch threads."""
    folder = tmp_path_factory.mktemp("sequential")
    db, before = str(folder / "main.duckdb"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in read_spec(write_spec(folder)):
            run(job.config, db=db, workdir=str(folder / "runs"), log=quiet)
    finally:
        torch.set_num_threads(before)
    return db


def test_ray_sweep_runs_every_job_and_merges_its_shard(ray_sweep):
    cfg, db, outcomes = ray_sweep
    assert [o.status for o in outcomes] == ["done"] * 4
    runs = store.query(db, "SELECT run_id, verifier, seed, status, steps_done FROM runs").values.tolist()
    assert sorted(r[1:] for r in runs) == [["qe", 0, "done", 1], ["qe", 1, "done", 1], ["tf", 0, "done", 1],
                                           ["tf", 1, "done", 1]]
    assert sorted(r[0] for r in runs) == sorted(o.job.job_id for o in outcomes)
    for outcome in outcomes:
        shard = cfg.directory(db) / "jobs" / outcome.job.job_id / "shard.duckdb"
        assert results(str(shard))["samples"]  # the job wrote its own shard, which the driver merged
        assert outcome.rows_merged > 0 and outcome.threads == 1


def test_shared_work_is_done_once_and_counted(ray_sweep):
    """A qe job runs after the tf job of its seed and finds the base model's test and train sampling passes done,
    and the step-1 test pass too: every candidate passed sigma under both verifiers, so both trained the same
    weights. Nothing of the tf jobs is reused by the other tf job (another seed)."""
    _, db, outcomes = ray_sweep
    reused = {(o.job.config.verifier, o.job.config.seed): o.reused for o in outcomes}
    passes = store.query(db, "SELECT count(DISTINCT gen_id) AS n FROM run_evals JOIN evaluations USING (eval_id) "
                             "WHERE run_id = ?", [outcomes[0].job.job_id]).n[0]
    assert reused[("tf", 0)] == reused[("tf", 1)] == {"sampling passes": 0, "evaluations": 0}
    assert reused[("qe", 0)] == reused[("qe", 1)] == {"sampling passes": passes, "evaluations": 0}
    table = Console(record=True, width=200)
    table.print(sweep_table(outcomes))
    assert f"reused from earlier jobs: {2 * passes} sampling passes" in table.export_text()


def test_ray_and_local_sweeps_equal_the_runs_made_one_after_another(ray_sweep, local_sweep, one_after_another):
    _, ray_db, _ = ray_sweep
    assert results(local_sweep["db"]) == results(ray_db) == results(one_after_another)
    # Rows that differ only in timestamps, timings and paths are the same rows: importing one into the other
    # adds nothing and refuses nothing.
    counts = merge(ray_db, local_sweep["db"])
    assert sum(c["added"] + c["updated"] for c in counts.values()) == 0


def test_rerun_adds_nothing(ray_sweep):
    cfg, db, _ = ray_sweep
    before = results(db)
    outcomes = sweep(cfg, db=db, log=quiet)
    assert [o.status for o in outcomes] == ["skipped"] * 4
    assert results(db) == before


def test_failing_job_is_reported_while_the_others_finish(local_sweep):
    first, *others = local_sweep["failing"]
    assert first.status == "failed" and first.error == "InjectedFault: injected fault at after_training #1"
    assert all(o.status == "done" and o.rows_merged > 0 for o in others)
    # torch's thread count is the job's (--cpus 1), set explicitly; this process gets its own back
    assert {o.threads for o in local_sweep["failing"]} == {1} and local_sweep["threads_after"] == 2
    assert len(local_sweep["after_failure"]["runs"]) == 3  # only the finished jobs' runs reached the main store
    record = json.loads((Path(local_sweep["db"]).parent / "si-bench-sweeps" / "grid" / "jobs" / first.job.job_id /
                         "job.json").read_text())
    assert record["status"] == "done"  # resumed later
    table = Console(record=True, width=200)
    table.print(sweep_table(local_sweep["failing"]))
    shown = table.export_text()
    assert "0 done before · 1 failed" in shown and "InjectedFault: injected fault at after_training #1" in shown


def test_killed_sweep_reads_as_interrupted_and_resumes(local_sweep):
    assert local_sweep["killed"].returncode == -9, local_sweep["killed"].stderr
    # job.json says what the killed driver last wrote; with no driver holding the directory, that is interrupted
    assert local_sweep["states"] == [("running", "interrupted")] + [("waiting", "interrupted")] * 3
    assert [o.status for o in local_sweep["resumed"]] == ["done", "skipped", "skipped", "skipped"]
    status = store.query(local_sweep["db"], "SELECT status, steps_done FROM runs").values.tolist()
    assert status == [["done", 1]] * 4
    assert local_sweep["progress"] == [
        "sweep: 3 done · 0 running · 0 failed · 1 waiting", "sweep: 3 done · 1 running · 0 failed · 0 waiting",
        "sweep: 4 done · 0 running · 0 failed · 0 waiting"]


def test_on_conflict_decides_a_shard_that_differs_from_the_store(ray_sweep, tmp_path):
    """A store whose copy of a job's results differs fails that job's merge, naming the option that decides;
    --on-conflict theirs then takes the shard's rows."""
    cfg, ray_db, outcomes = ray_sweep
    db, folder, job = str(tmp_path / "main.duckdb"), tmp_path / "sweep", outcomes[0].job.job_id
    shutil.copy(ray_db, db)
    shutil.copytree(cfg.directory(ray_db), folder)
    for record in (folder / "jobs").glob("*/job.json"):  # the other jobs count as merged into the copy
        if record.parent.name != job:
            record.write_text(json.dumps({**json.loads(record.read_text()), "merged_into": str(Path(db).resolve())}))
    with store.write(db) as con:
        con.execute("UPDATE metrics SET value = value + 1 WHERE eval_id IN (SELECT eval_id FROM run_evals "
                    "WHERE run_id = ?)", [job])
    again = SweepConfig(spec=cfg.spec, sweep_dir=str(folder))
    failed = sweep(again, db=db, log=quiet)
    assert [o.status for o in failed] == ["failed", "skipped", "skipped", "skipped"]
    assert "--on-conflict theirs or ours decides" in failed[0].error
    taken = sweep(replace(again, on_conflict="theirs"), db=db, log=quiet)
    assert taken[0].status == "done" and results(db) == results(ray_db)


def test_spec_errors_are_caught_before_any_work(tmp_path):
    with pytest.raises(SIBenchError, match="'epochs' is not a setting"):
        read_spec(write_spec(tmp_path, "models: tiny-test\nrun: {epochs: 2}\n"))
    with pytest.raises(SIBenchError, match="unknown key"):
        read_spec(write_spec(tmp_path, "model: tiny-test\n"))
    with pytest.raises(SIBenchError, match="--budget needs --external"):
        read_spec(write_spec(tmp_path, "models: tiny-test\nrun: {budget: 3}\n"))
    with pytest.raises(SIBenchError, match="same run .* batch_size"):
        read_spec(write_spec(tmp_path, "models: tiny-test\nrun: {batch_size: [4, 8]}\n"))
    with pytest.raises(SIBenchError, match="--address and --gpus apply to --executor ray"):
        SweepConfig(spec="grid.yaml", gpus=1)


@pytest.mark.parametrize("text, fragment", [
    ("models: [null]\n", "model takes text .*, not None"),
    ("models: [12]\n", "model takes text .*, not 12"),
    ("models: [{a: 1}]\n", "model takes text .*, not {'a': 1}"),
    ("models: [tiny-test]\nrun: {samples: 2.5}\n", "samples takes a whole number, not 2.5"),
    ("models: [tiny-test]\nrun: {samples: true}\n", "samples takes a whole number, not True"),
    ("models: [tiny-test]\nrun: {lora: 1}\n", "lora takes true or false, not 1"),
    ("models: [tiny-test]\nrun: {learning_rate: fast}\n", "learning_rate takes a number, not 'fast'"),
    ("models: [tiny-test]\nrun: {train_prompts: [[2, 3]]}\n", "train_prompts takes a whole number, not \\[2, 3\\]"),
    ("models: [tiny-test, ./no/such/model]\n", "unknown model './no/such/model'"),
    ("models: ['../../../../../../etc']\n", "[./]+etc is a directory but holds no model"),
])
def test_spec_values_are_checked_as_their_run_option_takes_them(text, fragment, tmp_path):
    cfg = SweepConfig(spec=write_spec(tmp_path, text), sweep_dir=str(tmp_path / "sweep"))
    with pytest.raises(SIBenchError, match=f"sweep spec .*: {fragment}"):
        sweep(cfg, db=str(tmp_path / "main.duckdb"), log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_grid_order_and_ids_are_stable(tmp_path):
    spec = write_spec(tmp_path, "models: [tiny-test]\nverifiers: [tf, qe]\nseeds: [0, 1]\nrun: {rounds: 2}\n")
    jobs = read_spec(spec)
    assert [(j.config.verifier, j.config.seed) for j in jobs] == [("tf", 0), ("tf", 1), ("qe", 0), ("qe", 1)]
    assert [j.job_id for j in jobs] == [j.job_id for j in read_spec(spec)]
    assert len({j.job_id for j in jobs}) == 4


def test_a_second_driver_on_one_sweep_directory_is_refused(tmp_path):
    cfg = SweepConfig(spec=write_spec(tmp_path), sweep_dir=str(tmp_path / "sweep"))
    db = str(tmp_path / "main.duckdb")
    with driver_lock(tmp_path / "sweep"):  # the first driver, still running
        with pytest.raises(SIBenchError, match=r"being run by another sweep \(pid \d+ on "):
            sweep(cfg, db=db, log=quiet)
    assert not list((tmp_path / "sweep").rglob("job.json")) and not Path(db).exists()
    with driver_lock(tmp_path / "sweep"):  # released when the first driver ends
        pass
