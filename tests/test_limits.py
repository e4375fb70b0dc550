"""Work bounded before it starts or while it runs: a user's SQL under its time, memory and row limits and unable
to read any file; a sweep grid sized from its axes before it is built; the one rule for output paths."""

from __future__ import annotations

import hashlib
import sys
import time

import pytest
from synth_store import make_run

from si_bench.cli import main


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str, float]:
    monkeypatch.setattr(sys, "argv", ["si-bench", *args])
    start = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err, time.monotonic() - start


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("limits") / "si.duckdb"
    make_run(str(db), "run-1", ts=(0, 1), P=3, n_boot=10)
    return db


LIMIT_HITS = [
    (["SELECT count(*) FROM range(1000000) a, range(1000000) b", "--time-limit", "0.5"], "time limit of 0.5 s"),
    (["WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "--time-limit",
      "0.5"], "time limit"),
    (["SELECT list(i) FROM range(100000000) t(i)", "--memory-limit", "0.1"], "memory limit of 0.1 GB"),
    (["SELECT * FROM read_blob('{db}')"], "file system operations are disabled"),
    (["SELECT * FROM read_text('{db}')"], "file system operations are disabled"),
    (["SELECT * FROM glob('{folder}/*')"], "file system operations are disabled"),
]


@pytest.mark.parametrize("args, fragment", LIMIT_HITS, ids=["time", "recursion", "memory", "blob", "text", "glob"])
def test_sql_limit_hit_is_one_line_and_leaves_the_store(args, fragment, store, monkeypatch, capsys):
    before = digest(store)
    args = [a.format(db=store, folder=store.parent) for a in args]
    code, out, err, seconds = cli(monkeypatch, capsys, "sql", *args, "--db", str(store))
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert fragment in err, err
    assert seconds < 20  # stopped at its limit, not when the work ran out
    assert digest(store) == before and sorted(p.name for p in store.parent.iterdir()) == ["si.duckdb"]


def test_sql_prints_at_most_max_rows_and_says_more_exist(store, monkeypatch, capsys):
    code, out, err, _ = cli(monkeypatch, capsys, "sql", "SELECT * FROM range(1000000000) t(i)", "--max-rows", "5",
                            "-f", "csv", "--db", str(store))
    assert out.split() == ["i", "0", "1", "2", "3", "4"]
    assert code == 2 and err.startswith("error: the result has more than 5 rows") and len(err.splitlines()) == 1
    code, out, err, _ = cli(monkeypatch, capsys, "sql", "SELECT * FROM range(5) t(i)", "--max-rows", "5", "-f", "csv",
                            "--db", str(store))
    assert code == 0 and out.split() == ["i", "0", "1", "2", "3", "4"] and err == ""


def test_a_huge_grid_is_refused_with_its_size_before_it_is_built(store, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "huge.yaml"
    seeds = ", ".join(str(s) for s in range(1000))
    rates = ", ".join(f"{k}e-6" for k in range(1, 1001))
    spec.write_text(f"models: [tiny-test]\nseeds: [{seeds}]\nrun: {{rounds: 1, learning_rate: [{rates}]}}\n")
    monkeypatch.chdir(tmp_path)
    before = digest(store)
    code, out, err, seconds = cli(monkeypatch, capsys, "sweep", str(spec), "--db", str(store))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "a grid of 1,000,000 jobs (1000 seed x 1000 learning_rate), more than --max-jobs 1,000" in err, err
    assert seconds < 10 and digest(store) == before and sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]


def test_max_jobs_is_the_grid_ceiling(tmp_path):
    from si_bench.errors import SIBenchError
    from si_bench.sweep import read_spec

    spec = tmp_path / "three.yaml"
    spec.write_text("models: [tiny-test]\nseeds: [0, 1, 2]\nrun: {rounds: 1}\n")
    with pytest.raises(SIBenchError, match=r"grid of 3 jobs \(3 seed\), more than --max-jobs 2"):
        read_spec(spec, max_jobs=2)
    assert len(read_spec(spec, max_jobs=3)) == 3


def test_the_path_rule_refuses_before_making_anything(tmp_path):
    from si_bench.errors import SIBenchError
    from si_bench.options import check_output

    (tmp_path / "a-file").write_text("x")
    check_output("--out", str(tmp_path / "new"), "directory")  # its folder exists: accepted; the command makes it
    check_output("--db", str(tmp_path / "new.duckdb"), "file")
    for value, kind, fragment in [("", "directory", "is empty"), ("  ", "file", "is empty"),
                                  (str(tmp_path), "file", "is a directory"),
                                  (str(tmp_path / "a-file"), "directory", "is not a directory"),
                                  (str(tmp_path / "no" / "such" / "x.png"), "file", "does not exist"),
                                  (str(tmp_path / "no" / "board"), "directory", "does not exist")]:
        with pytest.raises(SIBenchError, match=fragment):
            check_output("--flag", value, kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
