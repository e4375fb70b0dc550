"""Progress a user can follow: plain lines in a log at least every 30 s naming step, phase, counts, elapsed time and
ETA (under a fake clock), bars on a terminal, nothing under --quiet; the commands report their phases."""

from __future__ import annotations

import importlib
import io
import math
import re
import time

import pytest
from conftest import run_cli

from si_bench.progress import PLAIN_EVERY_S, ProgressOptions, Reporter, current, duration


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log(io.StringIO):
    """A log file that notes the (fake) time of every line written to it."""

    def __init__(self, clock: Clock, tty: bool = False):
        super().__init__()
        self.clock, self.tty, self.times = clock, tty, []

    def write(self, text: str) -> int:
        self.times.extend(self.clock() for _ in range(text.count("\n")))
        return super().write(text)

    def isatty(self) -> bool:
        return self.tty

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


def simulate(reporter: Reporter, clock: Clock, steps: int = 3, items: int = 12, seconds_per_item: float = 13.0):
    """`steps` steps of sampling `items` items, with the reporter's background tick every 5 s (as its thread does),
    and a silent stretch of 100 s (one slow batch) in each step."""
    assert reporter.tick_s == 5.0
    for step in range(1, steps + 1):
        with reporter.scope(f"step {step}/{steps}"):
            task = reporter.add_task("train · sampling", total=items)
            for item in range(items):
                wait = 100.0 if item == items // 2 else seconds_per_item
                while wait > 0:
                    clock.now += min(5.0, wait)
                    wait -= 5.0
                    reporter.tick()
                reporter.advance(task, 1)


def test_a_log_gets_a_line_at_least_every_30_s_naming_step_phase_counts_and_eta():
    clock = Clock()
    log = Log(clock)
    reporter = Reporter.for_command(ProgressOptions(), stream=log)
    assert reporter.mode == "plain"
    reporter.clock, reporter.ticking = clock, False
    with reporter:
        simulate(reporter, clock)
    lines, times = log.lines(), log.times
    assert len(lines) == len(times) > 3 * 2
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= PLAIN_EVERY_S
    assert times[-1] == clock.now  # the last phase's end is written when it ends
    for step in (1, 2, 3):
        mine = [line for line in lines if f"step {step}/3 · train · sampling" in line]
        assert mine[0].endswith("0/12 · started") and re.search(r"12/12 · done in (\d+m)?\d+s$", mine[-1]), mine
        periodic = mine[1:-1]
        pattern = r" \d+/12 · (\d+m)?\d+s elapsed · ETA ((\d+m)?\d+s|\?)$"
        assert periodic and all(re.search(pattern, line) for line in periodic), periodic
    assert all(line.startswith("[si-bench ") for line in lines)


def test_the_eta_is_the_rate_so_far_times_what_remains():
    clock = Clock()
    log = Log(clock)
    with Reporter("plain", stream=log, clock=clock, ticking=False) as reporter:
        task = reporter.add_task("test · verifying", total=20, completed=4)  # 4 done before: not part of the rate
        for _ in range(8):
            clock.now += 10.0
            reporter.advance(task, 1)
        clock.now += 30.0
        reporter.tick()
    # 8 items in the 110 s elapsed when the tick writes, 8 left: 110 s more
    assert log.lines()[-1].endswith("test · verifying 12/20 · 1m50s elapsed · ETA 1m50s"), log.lines()


def test_quiet_writes_nothing():
    clock = Clock()
    log = Log(clock, tty=True)
    reporter = Reporter.for_command(ProgressOptions(quiet=True), stream=log)
    reporter.clock = clock
    with reporter:
        simulate(reporter, clock, steps=1)
        reporter.log("step 1: fine-tuning on 16 rows")
    assert log.getvalue() == ""


def test_a_terminal_gets_bars_and_one_line_per_finished_phase():
    clock = Clock()
    log = Log(clock, tty=True)
    reporter = Reporter.for_command(ProgressOptions(), stream=log)
    assert reporter.mode == "terminal"
    with reporter:
        assert current() is reporter
        with reporter.scope("step 1/2"):
            task = reporter.add_task("test · sampling", total=4)
            reporter.advance(task, 4)
        reporter.log("a note")
    assert current() is None
    text = log.getvalue()
    assert "step 1/2 · test · sampling 4/4 · done in" in text and "a note" in text


def test_the_background_tick_writes_during_a_long_silent_batch():
    log = io.StringIO()
    with Reporter("plain", stream=log, every=0.05) as reporter:
        reporter.add_task("step 1/1 · train · sampling", total=10)
        deadline = time.monotonic() + 20
        while len(log.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and "elapsed · ETA ?" in lines[-1], lines


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (None, 0.4, 42, 185, 3725)] == ["?", "0s", "42s", "3m05s", "1h02m"]


# ---------------------------------------------------------------- the commands


def test_evaluate_reports_sampling_and_verifying_unless_quiet(scripted_model, tmp_path):
    args = ["evaluate", "--model", scripted_model, "--backend", "mock", "--limit", "4", "--samples", "3",
            "--n-boot", "10"]
    shown = run_cli(*args, "--db", str(tmp_path / "a.duckdb"), check=True)
    phases = [line.split("] ", 1)[1] for line in shown.stderr.splitlines()]
    assert phases[0] == "test · sampling 0/12 · started" and phases[1].startswith("test · sampling 12/12 · done in")
    assert phases[2] == "test · verifying 0/12 · started" and phases[3].startswith("test · verifying 12/12 · done")
    assert "solver" in shown.stdout  # the table is on stdout, progress on stderr
    silent = run_cli(*args, "--db", str(tmp_path / "b.duckdb"), "--quiet", check=True)
    assert silent.stderr == "" and "solver" in silent.stdout


def test_a_run_names_step_split_and_phase(scripted_model, scripted_training, tmp_path):
    from si_bench.api import SelfImproveConfig, run

    log = io.StringIO()
    cfg = SelfImproveConfig(model=scripted_model, backend="mock", mode="regenerate", rounds=2, samples=3,
                            train_prompts=6, test_limit=4, n_boot=10, train_batch_size=3)
    with Reporter("plain", stream=log, ticking=False) as reporter:
        run(cfg, db=str(tmp_path / "si.duckdb"), workdir=str(tmp_path / "runs"), progress=reporter,
            log=reporter.log)
    ended = [line.split("] ", 1)[1].split(" · done")[0] for line in log.getvalue().splitlines()
             if " · done in " in line]
    steps = math.ceil(6 / 3) * math.ceil(cfg.epochs_per_round)  # optimiser steps per round
    assert ended == [
        "step 0/2 · test · sampling 12/12", "step 0/2 · test · verifying 12/12",
        "step 1/2 · train · sampling 18/18", "step 1/2 · train · verifying 18/18",
        f"step 1/2 · fine-tuning {steps}/{steps}",
        "step 1/2 · test · sampling 12/12", "step 1/2 · test · verifying 12/12",
        "step 2/2 · train · sampling 18/18", "step 2/2 · train · verifying 18/18",
        f"step 2/2 · fine-tuning {steps}/{steps}",
        "step 2/2 · test · sampling 12/12", "step 2/2 · test · verifying 12/12",
    ]


def test_fitting_reports_each_trajectory(tmp_path):
    from synth_store import make_run

    from si_bench.api import FitOptions, fit

    db = str(tmp_path / "si.duckdb")
    make_run(db, "run-1", ts=(0, 1, 2, 3, 4), P=4, n_boot=10)
    log = io.StringIO()
    with Reporter("plain", stream=log, ticking=False) as reporter:
        fit(db, FitOptions(n_boot=20, seed=0), progress=reporter)
    assert re.search(r"fitting 1/1 · done in", log.getvalue()), log.getvalue()


@pytest.mark.parametrize("command", ["evaluate", "run", "train-round", "sweep", "demo"])
def test_every_long_command_takes_quiet(command):
    from si_bench.cli import COMMANDS

    classes = importlib.import_module(f"si_bench.cli.{COMMANDS[command]}").command.option_classes
    assert ProgressOptions in classes
