"""Hostile input beyond single flags: SQL that would write, damaged stores and model directories, a full
disk mid-work, names that would inject into terminals, and work or values without bounds."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys

import duckdb
import pytest
from conftest import run_cli, table_rows
from synth_store import make_run

from si_bench import faults, store
from si_bench.cli import main


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The real entry point, in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["si-bench", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


def one_error(code: int, err: str, fragment: str, expected_code: int = 2) -> None:
    assert code == expected_code and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


@pytest.fixture
def stores(tmp_path):
    mine, other = tmp_path / "si.duckdb", tmp_path / "other.duckdb"
    make_run(str(mine), "run-1", ts=(0, 1), P=3, n_boot=10)
    make_run(str(other), "run-2", ts=(0, 1), P=3, n_boot=10)
    os.link(mine, tmp_path / "me.duckdb")  # the store itself under another name
    return mine, other


HOSTILE_SQL = [
    ("SELECT 1; DELETE FROM runs", "exactly one SQL statement"),
    ("ATTACH '{other}' AS o (READ_WRITE)", "only SELECT"),
    ("ATTACH '{me}' AS me (READ_WRITE)", "only SELECT"),
    ("DELETE FROM runs", "only SELECT"),
    ("COPY (SELECT 1) TO '{dir}/out.csv'", "only SELECT"),
    ("EXPORT DATABASE '{dir}/export'", "only SELECT"),
    ("SET threads = 1", "only SELECT"),
    ("CHECKPOINT", "only SELECT"),
    ("VACUUM", "only SELECT"),
    ("CREATE TABLE x AS SELECT 1", "only SELECT"),
    ("SELECT * FROM read_csv('{other}')", "file system operations are disabled"),
    ("SELECT * FROM '{other}'", "disabled"),
    ("", "exactly one SQL statement"),
]


@pytest.mark.parametrize("query, fragment", HOSTILE_SQL)
def test_sql_cannot_write_or_reach_outside(query, fragment, stores, tmp_path, monkeypatch, capsys):
    mine, other = stores
    query = query.format(other=other, me=tmp_path / "me.duckdb", dir=tmp_path)
    before = {db: table_rows(str(db), "runs", "run_id") for db in (mine, other)}
    code, _, err = cli(monkeypatch, capsys, "sql", query, "--db", str(mine))
    one_error(code, err, fragment)
    assert {db: table_rows(str(db), "runs", "run_id") for db in (mine, other)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.duckdb", "other.duckdb", "si.duckdb"]


def test_sql_lists_come_back_as_json(stores, monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "sql", "SELECT [1, 2] AS l", "--db", str(stores[0]), "-f", "json")
    assert code == 0 and json.loads(out) == [{"l": [1, 2]}]


def test_a_damaged_store_is_one_error_before_any_work(stores, tmp_path, monkeypatch, capsys):
    mine, _ = stores
    damaged = tmp_path / "damaged.duckdb"
    shutil.copy(mine, damaged)
    with open(damaged, "r+b") as handle:
        handle.truncate(os.path.getsize(damaged) // 2)
    for args in (["fit", "--db", str(damaged)], ["leaderboard", "--db", str(damaged), "--out", str(tmp_path / "b")],
                 ["import", str(damaged), "--db", str(tmp_path / "new.duckdb")],
                 ["evaluate", "--model", "tiny-test", "--limit", "1", "--samples", "1", "--db", str(damaged)]):
        code, _, err = cli(monkeypatch, capsys, *args)
        one_error(code, err, "is damaged")
    assert not (tmp_path / "new.duckdb").exists()


def _truncated(path, mine):
    shutil.copy(mine, path)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(mine) // 2)


def _newer(path, mine):
    shutil.copy(mine, path)
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO schema_version VALUES (99, now())")


def _foreign(path, _mine):
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE notes (x VARCHAR); INSERT INTO notes VALUES ('mine')")


BAD_STORES = {"truncated": (_truncated, "is damaged"), "newer": (_newer, "has schema v99, newer than this si-bench"),
              "foreign": (_foreign, "not an si-bench store")}
STORE_USERS = {
    "runs": ["runs", "--db", "{bad}"],
    "sql": ["sql", "SELECT count(*) FROM runs", "--db", "{bad}"],
    "fit": ["fit", "--db", "{bad}"],
    "leaderboard": ["leaderboard", "--db", "{bad}", "--out", "{dir}/board"],
    "evaluate": ["evaluate", "--model", "{model}", "--backend", "mock", "--limit", "2", "--samples", "3", "--db",
                 "{bad}"],
    "import from": ["import", "{bad}", "--db", "{dir}/target.duckdb"],
    "import into": ["import", "{good}", "--db", "{bad}"],
    "train-round": ["train-round", "--run", "run-1", "--db", "{bad}"],
}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "si.duckdb"
    make_run(str(path), "run-1", ts=(0, 1), P=3, n_boot=10)
    return path


@pytest.mark.parametrize("kind", sorted(BAD_STORES))
@pytest.mark.parametrize("command", sorted(STORE_USERS))
def test_bad_stores_are_refused_by_every_command_and_left_as_they_were(kind, command, good_store, scripted_model,
                                                                        tmp_path, monkeypatch, capsys):
    make, fragment = BAD_STORES[kind]
    bad = tmp_path / "bad.duckdb"
    make(bad, good_store)
    before, good_before = bad.read_bytes(), good_store.read_bytes()
    args = [a.format(bad=bad, good=good_store, dir=tmp_path, model=scripted_model) for a in STORE_USERS[command]]
    one_error(*cli(monkeypatch, capsys, *args)[::2], fragment)
    assert bad.read_bytes() == before and good_store.read_bytes() == good_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.duckdb"]  # no board/, no target, no WAL


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "--model", "tiny-test", "--backend", "mock", "--limit", "2", "--db", "{dir}/si.duckdb"],
     "is not a scripted model"),
    (["run", "--model", "tiny-test", "--backend", "mock", "--rounds", "1", "--db", "{dir}/si.duckdb"],
     "is not a scripted model"),
    (["leaderboard", "--db", "{dir}/missing.duckdb", "--out", "{dir}/board"], "missing.duckdb"),
])
def test_every_check_comes_before_the_first_write(args, fragment, tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one_error(*cli(monkeypatch, capsys, *[a.format(dir=tmp_path) for a in args])[::2], fragment)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, fragment", [({"config.json": "{}"}, "holds no weight files"),
                                                ({"config.json": "{not json", "model.safetensors": "x"},
                                                 "not readable JSON")])
def test_a_broken_model_directory_is_refused(content, fragment, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for name, text in content.items():
        (model / name).write_text(text)
    code, _, err = cli(monkeypatch, capsys, "evaluate", "--model", str(model), "--db", str(tmp_path / "si.duckdb"))
    one_error(code, err, fragment)
    assert not (tmp_path / "si.duckdb").exists()


def test_vllm_backend_without_vllm(tmp_path, tiny_model, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "evaluate", "--model", "tiny-test", "--backend", "vllm", "--db",
                       str(tmp_path / "si.duckdb"))
    one_error(code, err, "needs the package 'vllm'")


def test_a_full_disk_mid_evaluation_is_one_line_and_resumes(tmp_path, tiny_model):
    args = ["evaluate", "--model", "tiny-test", "--limit", "4", "--samples", "1", "--max-new-tokens", "4",
            "--n-boot", "10", "--chunk-prompts", "2", "--db", str(tmp_path / "si.duckdb"),
            "--quiet"]  # stderr: the error alone
    full = run_cli(*args, env={"SI_BENCH_FAIL_AT": "sample_chunk:1:enospc"})
    one_error(full.returncode, full.stderr, "No space left on device", expected_code=1)
    assert "run the same command again" in full.stderr
    assert len(table_rows(str(tmp_path / "si.duckdb"), "samples", "prompt_id")) == 2  # the first chunk is kept
    run_cli(*args, check=True)
    assert len(table_rows(str(tmp_path / "si.duckdb"), "samples", "prompt_id")) == 4


def test_a_full_disk_while_saving_a_checkpoint(tmp_path, tiny_model):
    args = ["run", "--model", "tiny-test", "--rounds", "1", "--samples", "1", "--train-prompts", "2", "--test-limit",
            "2", "--max-new-tokens", "4", "--n-boot", "10", "--train-batch-size", "2", "--db",
            str(tmp_path / "si.duckdb"), "--workdir", str(tmp_path / "runs"), "--quiet"]  # stderr: the error alone
    full = run_cli(*args, env={"SI_BENCH_FAIL_AT": "checkpoint_save:1:enospc"})
    one_error(full.returncode, full.stderr, "No space left on device", expected_code=1)
    assert not list((tmp_path / "runs").glob("*/step-*")) and not list((tmp_path / "runs").glob("*/.step-*"))
    run_cli(*args, check=True)
    assert store.query(str(tmp_path / "si.duckdb"), "SELECT status FROM runs").status[0] == "done"


def test_a_full_disk_at_a_commit_is_one_line_and_resumes(scripted_model, tmp_path, monkeypatch, capsys):
    """DuckDB reports a full disk as its own exception type (the WAL could not be written): one line, exit 1."""
    def evaluate(db):
        return cli(monkeypatch, capsys, "evaluate", "--model", scripted_model, "--backend", "mock", "--limit", "6",
                   "--samples", "3", "--n-boot", "10", "--chunk-prompts", "2", "--db", str(db),
                   "--quiet")  # stderr: the error alone

    monkeypatch.setenv("SI_BENCH_FAIL_AT", "store_commit:3:dbfull")
    faults.reset()
    code, _, err = evaluate(tmp_path / "si.duckdb")
    one_error(code, err, "No space left on device", expected_code=1)
    assert err.rstrip().endswith("run the same command again to resume")
    monkeypatch.delenv("SI_BENCH_FAIL_AT")
    assert evaluate(tmp_path / "si.duckdb")[0] == 0
    assert evaluate(tmp_path / "clean.duckdb")[0] == 0
    for table, key in (("samples", "gen_id, prompt_id, sample_idx"), ("metrics", "eval_id, name")):
        assert table_rows(str(tmp_path / "si.duckdb"), table, key) == table_rows(str(tmp_path / "clean.duckdb"),
                                                                                 table, key)


def test_names_cannot_reach_the_terminal_raw(tmp_path, monkeypatch, capsys):
    db = tmp_path / "si.duckdb"
    make_run(str(db), "evil\x1b[2J\nrun", model="m\x1b]0;owned\x07\nx", ts=(0, 1), P=3, n_boot=10)
    code, out, _ = cli(monkeypatch, capsys, "runs", "--db", str(db))
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert len(out.strip().splitlines()) == 3  # header, rule, one row: the newline did not break the table


RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")  # what no output may carry (tab and LF are layout)
EVIL = "m\x1b[31m\x07\x1b]8;;http://x\x1b\\\nnext\r=cmd()\u202e"


def test_control_characters_reach_no_output(tmp_path, monkeypatch, capsys):
    """Names from the store and text from SQL, in every output format: terminal, CSV, JSON, log lines, errors and
    the leaderboard's Markdown, CSV, JSON and HTML."""
    db = tmp_path / "si.duckdb"
    make_run(str(db), EVIL.replace("/", "_"), model=EVIL, ts=(0, 1, 2, 3), P=3, n_boot=10)
    query = "SELECT chr(27) || '[31mRED' || chr(7) AS x, 'a' || chr(13) || '=cmd()' AS y, 1 AS \"=HYPERLINK(1)\""
    for args in (["sql", query, "-f", "csv"], ["sql", query], ["sql", query, "-f", "json"], ["runs"],
                 ["runs", "-f", "csv"], ["runs", "-f", "json"], ["fit"],
                 ["leaderboard", "--out", str(tmp_path / "board"), "--no-reference", "--n-boot", "10"],
                 ["train-round", "--run", EVIL]):
        code, out, err = cli(monkeypatch, capsys, *args, "--db", str(db))
        assert not RAW.search(out + err), (args, out, err)
    rows = list(csv.reader(io.StringIO(cli(monkeypatch, capsys, "sql", query, "-f", "csv", "--db", str(db))[1])))
    assert rows == [["x", "y", "'=HYPERLINK(1)"],
                    [" [31mRED ", "a\n=cmd()", "1"]]  # the CR kept as a line break, inside its quoted cell
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html"):
        text = (tmp_path / "board" / name).read_text()
        assert "[31m" in text and not RAW.search(text), name  # the name is there, its escapes are not
    from si_bench.cli._show import reporter
    from si_bench.progress import ProgressOptions

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream in (io.StringIO(), Terminal()):  # a log's plain lines, a terminal's bars and lines
        with reporter(ProgressOptions(), stream=stream) as progress:
            progress.log(f"{EVIL} · step 1: fine-tuning")
            with progress.scope(EVIL):
                progress.advance(progress.add_task(f"{EVIL} · sampling", total=1), 1)
        shown = stream.getvalue()
        assert "fine-tuning" in shown and "sampling 1/1" in shown, shown
        if isinstance(stream, Terminal):  # rich's own colour and cursor codes, but none of the name's
            assert all(code not in shown for code in ("\x07", "\x1b]8", "\x1b[31m", "\u202e")), shown
        else:
            assert not RAW.search(shown), shown


def test_simulate_bounds(monkeypatch, capsys):
    base = ["simulate", "--beta", "0.3", "--k", "0.8", "--b", "0.1", "--us0", "1.2", "--uv0", "0.8"]
    one_error(*cli(monkeypatch, capsys, *base, "--alpha", "0.9", "--rounds", "1000000000")[::2], "--rounds")
    one_error(*cli(monkeypatch, capsys, *base, "--alpha", "1e300", "--k", "1e300")[::2], "--alpha must lie in")
