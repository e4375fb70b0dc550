"""Self-improvement rounds: end to end on tiny-test (a run, a killed run resumes); the loop's bookkeeping on the
scripted model with a stand-in for SFT (checkpoints, t values, rows, resume after a crash, budgets, train-round);
bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Child, quiet, run_cli, run_process, start_process, table_rows

from si_bench import faults, locks, store
from si_bench.api import import_store, run, train_round
from si_bench.errors import SIBenchError
from si_bench.merge import FLOAT_ATOL, FLOAT_RTOL
from si_bench.trainers.config import SelfImproveConfig
from si_bench.trainers.external import choose_prompts, per_round_counts
from si_bench.trainers.rounds import SelfImproveRun

TINY = dict(model="tiny-test", dataset="arith", mode="regenerate", rounds=2, samples=2, train_prompts=6, test_limit=4,
            max_new_tokens=6, n_boot=20, train_batch_size=3, chunk_prompts=2, batch_size=8)
SCRIPTED = dict(backend="mock", dataset="arith", mode="regenerate", rounds=2, samples=3, train_prompts=6, test_limit=4,
                n_boot=20, train_batch_size=3, chunk_prompts=2)

COMPARED = {
    "samples": "gen_id, prompt_id, sample_idx",
    "verdicts": "gen_id, prompt_id, sample_idx",
    "picks": "eval_id, prompt_id",
    "training_data": "run_id, step, prompt_id",
    "run_evals": "run_id, step, eval_id",
}


def snapshot(db: str) -> dict:
    out = {t: [tuple(row) for row in table_rows(db, t, k)] for t, k in COMPARED.items()}
    # Verdicts' raw log-likelihoods differ in the last bits with batch composition; their scores are compared.
    out["verdicts"] = [row[:5] for row in out["verdicts"]]
    out["checkpoints"] = store.query(
        db, "SELECT step, t, weights_hash, data_hash FROM checkpoints WHERE run_id IS NOT NULL ORDER BY step"
    ).values.tolist()
    return out


def same_measurement(snap: dict) -> dict:
    """snap with every float compared as import compares them (merge's tolerance for float32 noise: kernels and
    thread counts of another process); texts, answers, picks and hashes stay exact."""
    def cell(v):
        return pytest.approx(v, rel=FLOAT_RTOL, abs=FLOAT_ATOL) if isinstance(v, float) else v
    return {t: [tuple(map(cell, row)) if isinstance(row, tuple) else [cell(v) for v in row] for row in rows]
            for t, rows in snap.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("reference")
    db = str(folder / "ref.duckdb")
    [run_id] = run(SelfImproveConfig(**TINY), db=db, workdir=str(folder / "runs"), log=quiet)
    return db, run_id, snapshot(db)


@pytest.fixture
def scripted(scripted_model, scripted_training) -> SelfImproveConfig:
    return SelfImproveConfig(model=scripted_model, **SCRIPTED)


@pytest.fixture(scope="module")
def scripted_reference(tmp_path_factory, scripted_model):
    from scripted import scripted_sft

    folder = tmp_path_factory.mktemp("scripted-reference")
    db = str(folder / "ref.duckdb")
    with scripted_sft():
        [run_id] = run(SelfImproveConfig(model=scripted_model, **SCRIPTED), db=db, workdir=str(folder / "runs"),
                       log=quiet)
    return db, run_id, snapshot(db)


def test_two_regenerate_rounds(reference):
    db, run_id, _ = reference
    points = store.query(db, "SELECT role, t, t_unit FROM summary WHERE run_id = ? ORDER BY role, t", [run_id])
    assert points[points.role == "test"].t.tolist() == [0.0, 1.0, 2.0]
    assert points[points.role == "train"].t.tolist() == [0.0, 1.0]  # the picks of rounds 1 and 2
    assert set(points.t_unit) == {"round"}
    ckpt = store.query(db, "SELECT step, t, parent_id, path FROM checkpoints WHERE run_id = ? ORDER BY step",
                       [run_id])
    assert ckpt["step"].tolist() == [1, 2] and ckpt.t.tolist() == [1.0, 2.0]
    assert ckpt.parent_id.nunique() == 2
    assert store.query(db, "SELECT count(*) AS n FROM training_data WHERE run_id = ?", [run_id]).n[0] == 2 * 6
    runs = store.query(db, "SELECT status, steps_done, mode FROM runs")
    assert runs.values.tolist() == [["done", 2, "regenerate"]]


def test_training_sampling_is_the_train_measurement_and_never_repeated(tmp_path, scripted, monkeypatch):
    from si_bench import lmeval

    sampled: list[int] = []
    original = lmeval.sample_solutions
    monkeypatch.setattr(lmeval, "sample_solutions", lambda lm, ds, prompts, *a, **k: (
        sampled.append(len(prompts)) or original(lm, ds, prompts, *a, **k)))
    db = str(tmp_path / "si.duckdb")
    run(scripted, db=db, workdir=str(tmp_path / "runs"), log=quiet)
    # 3 test measurements of 4 prompts, 2 train measurements of 6 prompts; nothing else is sampled.
    assert sum(sampled) == 3 * 4 + 2 * 6
    samples = store.query(db, "SELECT count(*) AS n FROM samples").n[0]
    assert samples == (3 * 4 + 2 * 6) * 3
    picks_used = store.query(db, """SELECT count(*) AS n FROM training_data d JOIN picks p
                                    ON p.eval_id = d.eval_id AND p.prompt_id = d.prompt_id""").n[0]
    assert picks_used == 2 * 6


def test_fixed_mode_measures_every_half_epoch(tmp_path, scripted):
    db = str(tmp_path / "si.duckdb")
    [run_id] = run(replace(scripted, mode="fixed", rounds=1), db=db, workdir=str(tmp_path / "r"), log=quiet)
    points = store.query(db, "SELECT role, t, t_unit FROM summary WHERE run_id = ? ORDER BY role, t", [run_id])
    assert points[points.role == "test"].t.tolist() == [0.0, 0.5, 1.0]
    assert points[points.role == "train"].t.tolist() == [0.0]  # picks made once, from the base model
    assert set(points.t_unit) == {"epoch"}
    assert store.query(db, "SELECT DISTINCT step FROM training_data").values.tolist() == [[0]]
    assert store.query(db, "SELECT count(*) AS n FROM checkpoints WHERE run_id = ?", [run_id]).n[0] == 2


@pytest.mark.parametrize("fault", ["sample_chunk:6", "train_step:1", "after_training:2", "verify_chunk:9"])
def test_interrupted_run_resumes_to_the_same_result(scripted_reference, scripted, tmp_path, monkeypatch, fault):
    _, _, expected = scripted_reference
    db = str(tmp_path / "si.duckdb")
    monkeypatch.setenv("SI_BENCH_FAIL_AT", fault)
    faults.reset()
    with pytest.raises(faults.InjectedFault):
        run(scripted, db=db, workdir=str(tmp_path / "runs"), log=quiet)
    monkeypatch.delenv("SI_BENCH_FAIL_AT")
    run(scripted, db=db, workdir=str(tmp_path / "runs"), log=quiet)
    assert snapshot(db) == expected


CLI_RUN = ["run", "--model", "tiny-test", "--mode", "regenerate", "--rounds", "2", "--samples", "2",
           "--train-prompts", "6", "--test-limit", "4", "--max-new-tokens", "6", "--n-boot", "20",
           "--train-batch-size", "3", "--batch-size", "8"]


def test_killed_run_resumes_to_the_same_result(reference, tmp_path):
    _, _, expected = reference
    db = str(tmp_path / "si.duckdb")
    args = [*CLI_RUN, "--db", db, "--workdir", str(tmp_path / "runs")]
    killed = run_process(*args, env={"SI_BENCH_FAIL_AT": "train_step:2:kill"})
    assert killed.returncode == -9
    run_cli(*args, check=True)
    assert snapshot(db) == same_measurement(expected)  # the reference ran in this process, the killed part in another
    listed = run_cli("runs", "--db", db, "--format", "csv", check=True).stdout
    assert "tiny-test,arith,regenerate" in listed and "done" in listed


def test_train_round_extends_a_finished_run(scripted_reference, scripted_training, tmp_path):
    src_db, run_id, _ = scripted_reference
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(src_db, db)
    step = train_round(run_id, db=db, log=quiet)
    assert step == 3
    tests = store.query(db, "SELECT t FROM summary WHERE run_id = ? AND role = 'test' ORDER BY t", [run_id])
    assert tests.t.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_budget_allocation_accounting():
    assert per_round_counts([1, 0, 0, 0], 10) == [10, 0, 0, 0]
    assert per_round_counts([0.25] * 4, 10) == [3, 3, 2, 2]
    assert sum(per_round_counts([0.1, 0.2, 0.3, 0.4], 17)) == 17
    late = dict(mode="regenerate", external="ground-truth", budget=3, allocation="late")
    assert SelfImproveConfig(rounds=3, **late).shares() == [0, 0, 1]
    assert SelfImproveConfig(rounds=5, **late).shares() == [0, 0, 0, 1, 0]


def test_a_run_keeps_the_shares_it_was_made_with():
    late = SelfImproveConfig(rounds=5, mode="regenerate", external="ground-truth", budget=3, allocation="late")
    stored = json.loads(dataclasses.replace(late, external_shares=late.shares()).to_json())
    assert stored["external_shares"] == [0, 0, 0, 1, 0]
    assert SelfImproveConfig.from_json(json.dumps(stored)).shares() == [0, 0, 0, 1, 0]
    # a run stored before late meant round ceil(0.8 K) keeps its last-round meaning
    del stored["external_shares"]
    assert SelfImproveConfig.from_json(json.dumps(stored)).shares() == [0, 0, 0, 0, 1]
    assert dataclasses.replace(late, external_shares=[0, 0, 1, 0, 0]).run_id == late.run_id  # not in the id


def test_external_data_follows_budget_and_ignores_correctness(tmp_path, scripted):
    db = str(tmp_path / "si.duckdb")
    cfg = replace(scripted, external="ground-truth", budget=5, allocation="0.6,0.4")
    [run_id] = run(cfg, db=db, workdir=str(tmp_path / "runs"), log=quiet)
    used = store.query(db, """SELECT step, list(prompt_id ORDER BY prompt_id) AS ids FROM training_data
                              WHERE source = 'external' GROUP BY step ORDER BY step""")
    assert [len(ids) for ids in used.ids] == [3, 2]
    assert store.query(db, "SELECT external_used FROM runs").external_used[0] == 5
    train_ids = store.query(db, "SELECT DISTINCT prompt_id FROM training_data ORDER BY 1").prompt_id.tolist()
    # The choice is a function of prompt ids, seed and round only: correctness cannot enter it.
    for round_, ids in zip(used["step"], used.ids, strict=True):
        assert list(ids) == choose_prompts(train_ids, len(ids), cfg.seed, int(round_))
    references = store.query(db, """SELECT d.completion, p.reference FROM training_data d
                                    JOIN prompts p ON p.prompt_id = d.prompt_id AND p.split = 'train'
                                    WHERE d.source = 'external'""")
    assert (references.completion == references.reference).all()


@pytest.mark.parametrize("args, message", [
    (["train-round", "--run", "no-such-run"], "unknown run id"),
    ([*CLI_RUN, "--external", "ground-truth", "--budget", "50", "--allocation", "early"], "budget"),
    ([*CLI_RUN, "--external", "ground-truth", "--budget", "4", "--allocation", "0.5,0.6"], "sum to 1"),
    ([*CLI_RUN, "--external", "ground-truth", "--budget", "4", "--mode", "fixed"], "regenerate mode only"),
    ([*CLI_RUN, "--mode", "sideways"], "unknown mode"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, tiny_model, args, message):
    db = tmp_path / "si.duckdb"
    if args[0] == "train-round":
        with store.write(str(db)):
            pass
    result = run_cli(*args, "--db", str(db))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    if db.exists():
        assert store.query(str(db), "SELECT count(*) AS n FROM runs").n[0] == 0


def test_vanished_checkpoint_is_a_clear_error(scripted_reference, tmp_path):
    src_db, run_id, _ = scripted_reference
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(src_db, db)
    path = store.query(db, "SELECT path FROM checkpoints WHERE run_id = ? AND step = 2", [run_id]).path[0]
    moved = tmp_path / "moved"
    shutil.move(path, moved)
    try:
        before = snapshot(db)
        result = run_cli("train-round", "--run", run_id, "--db", db)
        assert result.returncode != 0 and "vanished" in result.stderr and "Traceback" not in result.stderr
        assert snapshot(db) == before
    finally:
        shutil.move(moved, path)


def wait_until_stopped(process: Child, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{process.pid}/stat").read_text().split(")")[-1].split()[0] != "T":
        assert process.poll() is None and time.monotonic() < deadline, process.wait()
        time.sleep(0.1)


def first_writer(config_json: str, db: str, workdir: str) -> None:
    from scripted import scripted_sft

    with scripted_sft():
        run(SelfImproveConfig.from_json(config_json), db=db, workdir=workdir, log=print)


def test_one_writer_per_run(scripted_reference, scripted, tmp_path):
    """A second run of a live run, and an import bringing its steps, are refused naming the live one (a real
    process, stopped mid-step), which then ends with exactly the steps its settings ask for."""
    src_db, run_id, expected = scripted_reference
    db, workdir = str(tmp_path / "si.duckdb"), str(tmp_path / "runs")
    first = start_process(first_writer, scripted.to_json(), db, workdir, env={"SI_BENCH_FAIL_AT": "train_step:1:stop"})
    try:
        wait_until_stopped(first)  # mid-step 1, holding the run
        assert f"pid {first.pid} " in locks.run_holder(db, run_id)
        before = snapshot(db)
        busy = rf"run {run_id} in .* is being advanced by another process \(pid {first.pid} "
        with pytest.raises(SIBenchError, match=busy):
            run(scripted, db=db, workdir=workdir, log=quiet)
        with pytest.raises(SIBenchError, match=busy):
            import_store(src_db, db)
        with pytest.raises(SIBenchError, match=busy):
            train_round(run_id, db=db, workdir=workdir, log=quiet)
        assert snapshot(db) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    finished = first.wait(timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert snapshot(db) == expected
    assert store.query(db, "SELECT steps_done FROM runs").steps_done.tolist() == [2]
    assert locks.run_holder(db, run_id) is None  # an flock: gone with its process


def test_a_run_never_steps_past_its_settings(scripted_reference, scripted_training, tmp_path):
    src_db, run_id, expected = scripted_reference
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(src_db, db)
    finished = SelfImproveRun.load(run_id, db, log=quiet)
    with pytest.raises(SIBenchError, match="has all 2 steps its settings ask for"):
        finished.train_step()  # what a second writer that missed the first's last step would do
    assert snapshot(db) == expected
