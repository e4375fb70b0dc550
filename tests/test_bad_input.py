"""Every bad input is one clear error before any work, for every option of every command: the cases are
generated from the CLI's own options (bounds and choice lists give their bad values; an option with neither
needs an entry in EXPLICIT or FREE, so a new option without one fails this test)."""

from __future__ import annotations

import importlib
import sys
import typing
from dataclasses import fields

import duckdb
import pytest
from synth_store import make_run

from si_bench.cli import COMMANDS, main
from si_bench.options import spec_of

SIMULATE = ["--alpha", "0.9", "--beta", "0.3", "--k", "0.8", "--b", "0.1", "--us0", "1.2", "--uv0", "0.8"]
TINY = ["--model", "tiny-test", "--max-new-tokens", "4", "--samples", "1", "--n-boot", "10"]
# What each command needs besides the option under test ({db}, {file} and {missing} are filled in per test).
BASE = {
    "evaluate": [*TINY, "--limit", "2"],
    "run": [*TINY, "--train-prompts", "2", "--test-limit", "2", "--rounds", "1"],
    "train-round": ["--run", "run-1"],
    "runs": [], "fit": [], "sql": [], "import": [], "simulate": SIMULATE,
    "leaderboard": ["--n-boot", "10", "--no-reference"], "demo": [], "lm-eval": [], "sweep": [],
}
# Positional arguments each command needs, unless the argument itself is the one under test.
POSITIONAL = {"sql": ("query", ["SELECT 1"]), "import": ("other", ["{other}"]), "sweep": ("spec", ["{spec}"])}
# Options whose bad values no bound or choice list states: the arguments that make them bad.
EXPLICIT = {
    "model": ["--model", "no/such/model/anywhere"],
    "db": ["--db", "{file}/si.duckdb"],
    "workdir": ["--workdir", "{file}/runs"],
    "out": ["--out", "{file}/board"],
    "plot": ["--plot", "{file}/plot.png"],
    "split": ["--split", "validation"],
    "backend": ["--backend", "no-such-backend"],
    "external": ["--external", "nosuchthing", "--budget", "1"],
    "allocation": ["--external", "ground-truth", "--budget", "1", "--allocation", "0.5,0.6"],
    "seeds": ["--seeds", "1,x"],
    "query": ["DELETE FROM runs"],
    "other": ["{missing}"],
    "trajectory": ["--trajectory", "{missing}"],
    "from_parquet": ["--from-parquet", "{missing}"],
    "group_by": ["--group-by", "panel"],
    "run": ["--run", "no-such-run"],
    "shares": ["--shares", "0.5,x"],
    "b": ["--b", "inf"],
    "device": ["--device", "tpu"],
    "backend_args": ["--backend-args", "no_such_argument=1"],
    "spec": ["{missing}"],
    "address": ["--address", "auto"],  # without --executor ray
    "sweep_dir": ["--sweep-dir", "{file}/sweep"],
}
FREE = {"rate_unit"}  # a label: any text is valid


def bad_arguments(command: str) -> list[tuple[str, list[str]]]:
    # lm-eval passes its arguments through to lm-eval's own command line and declares no options
    classes = getattr(importlib.import_module(f"si_bench.cli.{COMMANDS[command]}").command, "option_classes", ())
    cases = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            spec = spec_of(cls, f.name)
            flag = spec.names(f.name)[0]
            if spec.hidden:
                continue
            if f.name in EXPLICIT:
                cases.append((f.name, EXPLICIT[f.name]))
            elif spec.choices is not None:
                cases.append((f.name, [flag, "no-such-value"]))
            elif spec.min is not None:
                whole = int in (typing.get_args(hints[f.name]) or (hints[f.name],))
                cases.append((f.name, [flag, str(spec.min - 1 if whole else spec.min - 0.5)]))
            elif spec.above is not None:
                cases.append((f.name, [flag, str(spec.above)]))
            elif spec.max is not None:
                cases.append((f.name, [flag, str(spec.max + 1)]))
            else:
                assert hints[f.name] is bool or f.name in FREE, (
                    f"{command} {flag} has no bad value: give it a bound or choices, or an entry in EXPLICIT")
    return cases


CASES = [(command, name, args) for command in sorted(COMMANDS) for name, args in bad_arguments(command)]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    db = folder / "si.duckdb"
    make_run(str(db), "run-1", ts=(0, 1, 2), P=4, n_boot=10)
    (folder / "a-file").write_text("not a directory")
    (folder / "spec.yaml").write_text("models: [tiny-test]\nseeds: [0]\nrun: {rounds: 1, train_prompts: 2}\n")
    make_run(str(folder / "other.duckdb"), "run-2", ts=(0, 1), P=4, n_boot=10)
    return folder


def row_counts(db) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.mark.parametrize("command, option, args", CASES, ids=[f"{c}-{o}" for c, o, _ in CASES])
def test_bad_value_is_one_line_before_any_work(command, option, args, seeded, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    db = seeded / "si.duckdb"
    fill = {"file": str(seeded / "a-file"), "missing": str(tmp_path / "missing.duckdb"),
            "other": str(seeded / "other.duckdb"), "spec": str(seeded / "spec.yaml")}
    argument, positional = POSITIONAL.get(command, (None, []))
    base = [a.format(**fill) for a in BASE[command] + (positional if option != argument else [])]
    given = [a.format(**fill) for a in args]
    store_args = [] if "--db" in given or command == "simulate" else ["--db", str(db)]
    before = row_counts(db)
    monkeypatch.setattr(sys, "argv", ["si-bench", command, *base, *given, *store_args])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert row_counts(db) == before
    assert not (tmp_path / "si.duckdb").exists() and not (tmp_path / "si-bench-runs").exists()
