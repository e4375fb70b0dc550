"""Every bad input is one clear error before any work, for every option of every command: the cases are
generated from the CLI's own options (bounds and choice lists give their bad values; an option with neither
needs an entry in EXPLICIT or FREE, so a new option without one fails this test). Every numeric option is also
given values far past its bounds, as a hostile user would: each must be refused within seconds, not start work."""

from __future__ import annotations

import hashlib
import importlib
import signal
import sys
import typing
from dataclasses import fields

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
    "import-lm-eval": [],
}
# Positional arguments each command needs, unless the argument itself is the one under test.
POSITIONAL = {"sql": ("query", ["SELECT 1"]), "import": ("other", ["{other}"]), "sweep": ("spec", ["{spec}"]),
              "import-lm-eval": ("output_path", ["{folder}"])}
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
    "output_path": ["{missing}"],
    "tokenizer": ["--tokenizer", "{missing}"],
}
FREE = {"rate_unit"}  # a label: any text is valid
# Far past any bound: 10^23 (an integer, so that integer options reach their bound), 1e308, -1e308, nan, inf.
FAR = ("1" + "0" * 23, "1e308", "-1e308", "nan", "inf")
# Every path a command writes, by the one rule (si_bench.options.check_output): empty, the other kind, and
# under a folder that does not exist are each refused before any work.
PATHS = {"file": ("", "{folder}", "{nowhere}/deeper/out.file"), "directory": ("", "{file}", "{nowhere}/deeper/out")}
FAST_SECONDS = 10  # a refusal takes milliseconds; work that started instead would run for minutes


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


def bounded_options(command: str) -> list[tuple[str, str]]:
    """(name, flag) of every option of `command` with a numeric bound."""
    classes = getattr(importlib.import_module(f"si_bench.cli.{COMMANDS[command]}").command, "option_classes", ())
    return [(f.name, spec.names(f.name)[0]) for cls in classes for f in fields(cls)
            for spec in [spec_of(cls, f.name)]
            if not spec.hidden and (spec.min is not None or spec.max is not None or spec.above is not None)]


def outputs(command: str) -> list[tuple[str, str, str]]:
    """(name, flag, kind) of every path option of `command` that it writes."""
    classes = getattr(importlib.import_module(f"si_bench.cli.{COMMANDS[command]}").command, "option_classes", ())
    return [(f.name, spec.names(f.name)[0], spec.output) for cls in classes for f in fields(cls)
            for spec in [spec_of(cls, f.name)] if not spec.hidden and spec.output]


CASES = [(command, name, args) for command in sorted(COMMANDS) for name, args in bad_arguments(command)]
PATH_CASES = [(command, name, [flag, value]) for command in sorted(COMMANDS) for name, flag, kind in outputs(command)
              for value in PATHS[kind]]
FAR_CASES = [(command, name, [flag, value]) for command in sorted(COMMANDS)
             for name, flag in bounded_options(command) for value in FAR]
# A backend argument's value is checked against the kind the backend's parameter takes, and bounded.
FAR_CASES += [("run", "seeds", ["--seeds", f"1,{'1' + '0' * 23}"]),
              ("run", "seeds", ["--seeds", ",".join(map(str, range(1001)))])]
FAR_CASES += [(command, "backend_args", ["--backend-args", f"max_length={value}"]) for command in ("evaluate", "run")
              for value in (*FAR, "abc")]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    db = folder / "si.duckdb"
    make_run(str(db), "run-1", ts=(0, 1, 2), P=4, n_boot=10)
    (folder / "a-file").write_text("not a directory")
    importlib.import_module("si_bench.hf_backend")  # torch and transformers: checks import them once per process
    (folder / "spec.yaml").write_text("models: [tiny-test]\nseeds: [0]\nrun: {rounds: 1, train_prompts: 2}\n")
    make_run(str(folder / "other.duckdb"), "run-2", ts=(0, 1), P=4, n_boot=10)
    return folder


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` and a digest of its bytes: a refusal writes nothing, not even a store's header."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _too_slow(signum, frame):
    pytest.fail(f"still running after {FAST_SECONDS} s: the value started work instead of being refused")


ALL_CASES = CASES + PATH_CASES + FAR_CASES
ALL_IDS = ([f"{c}-{o}" for c, o, _ in CASES] + [f"{c}-{o}-path{i % 3}" for i, (c, o, _) in enumerate(PATH_CASES)]
           + [f"{c}-{o}-far{a[1][:30]}" for c, o, a in FAR_CASES])


@pytest.mark.parametrize("command, option, args", ALL_CASES, ids=ALL_IDS)
def test_bad_value_is_one_line_before_any_work(command, option, args, seeded, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    db = seeded / "si.duckdb"
    fill = {"file": str(seeded / "a-file"), "missing": str(tmp_path / "missing.duckdb"),
            "other": str(seeded / "other.duckdb"), "spec": str(seeded / "spec.yaml"), "folder": str(seeded),
            "nowhere": str(tmp_path / "nowhere")}
    argument, positional = POSITIONAL.get(command, (None, []))
    base = [a.format(**fill) for a in BASE[command] + (positional if option != argument else [])]
    given = [a.format(**fill) for a in args]
    store_args = [] if "--db" in given or command == "simulate" else ["--db", str(db)]
    before = snapshot(seeded)
    monkeypatch.setattr(sys, "argv", ["si-bench", command, *base, *given, *store_args])
    previous = signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(FAST_SECONDS)
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert snapshot(seeded) == before
    assert not any(tmp_path.iterdir()), sorted(p.name for p in tmp_path.iterdir())


def test_every_numeric_option_has_both_bounds():
    """A bound on one side only lets the other side's huge values start work."""
    for command in sorted(COMMANDS):
        classes = getattr(importlib.import_module(f"si_bench.cli.{COMMANDS[command]}").command, "option_classes", ())
        for cls in classes:
            for f in fields(cls):
                spec = spec_of(cls, f.name)
                if spec.min is not None or spec.above is not None or spec.max is not None:
                    assert spec.max is not None and (spec.min is not None or spec.above is not None), (
                        f"{command} {spec.names(f.name)[0]} needs both a lower and an upper bound")
