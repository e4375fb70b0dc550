"""Fitting the solver-verifier gap dynamics: coverage, linearisation, backtest, reference data, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from si_bench.errors import SIBenchError
from si_bench.fit import FitOptions, fit_frame, fit_groups, fit_trajectory
from si_bench.fit._alternatives import POWER_SHIFT
from si_bench.fit._backtest import backtest
from si_bench.fit._linearise import linearise

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "harness" / "data" / "reference" / "phi4_mini_figure4_digitized.csv"

T20 = np.arange(1, 21) * 0.5  # 0.5 .. 10, half epochs
TRUE = dict(lam=0.35, us_inf=0.15, uv_inf=0.10, a_s=0.9, a_v=0.35)


def _truth_series(t=T20, p=TRUE):
    e = np.exp(-p["lam"] * t)
    return p["us_inf"] + p["a_s"] * e, p["uv_inf"] + p["a_v"] * e


def _strict(text: str):
    def bad(c):
        raise ValueError(f"non-strict JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def _app() -> typer.Typer:
    from si_bench.cli import app

    return app


# ---- 1. coverage of the intervals: see test_fit_intervals.py ------------------------------------------

def test_point_fit_exact_on_noiseless_data():
    s, v = _truth_series()
    res = fit_trajectory(T20, s, v, options=FitOptions(n_boot=50))
    j = res.to_json()
    assert j["rate"]["estimate"] == pytest.approx(TRUE["lam"], rel=1e-4)
    assert j["solver_limit"]["estimate"] == pytest.approx(TRUE["us_inf"], abs=1e-5)
    assert j["verifier_limit"]["estimate"] == pytest.approx(TRUE["uv_inf"], abs=1e-5)
    assert j["alpha_over_beta"]["estimate"] == pytest.approx(0.9 / 0.35, rel=1e-4)
    delta = TRUE["a_s"] - TRUE["a_v"]
    assert j["alpha_k"]["estimate"] == pytest.approx(TRUE["lam"] * TRUE["a_s"] / delta, rel=1e-4)
    assert j["beta_k"]["estimate"] == pytest.approx(TRUE["lam"] * TRUE["a_v"] / delta, rel=1e-4)
    g0 = TRUE["us_inf"] - TRUE["uv_inf"] + delta
    assert j["t_to_eps"]["estimate"] == pytest.approx(np.log(delta / (0.01 * g0)) / TRUE["lam"], rel=1e-3)
    assert j["r2"]["solver"] > 0.9999 and j["r2"]["gap"] > 0.9999
    assert j["solver_limit"]["se"] >= 0


def test_replicates_and_curve_bands():
    rng = np.random.default_rng(3)
    s, v = _truth_series()
    reps = np.stack([s, v], axis=-1)[None] + rng.normal(0, 0.01, (200, T20.size, 2))
    res = fit_trajectory(T20, s, v, replicates=reps, options=FitOptions(n_boot=10))
    j = res.to_json()
    assert j["bootstrap"]["kind"] == "replicates" and j["bootstrap"]["n"] == 200
    assert j["interval"]["method"].startswith("replicate-refit percentile")
    lo, hi = j["solver_limit"]["ci95"]
    assert lo <= TRUE["us_inf"] <= hi
    c = res.curve(np.linspace(0, 15, 7))
    assert set(c) >= {"solver", "verifier", "gap", "solver_lo", "solver_hi", "verifier_lo", "verifier_hi",
                      "gap_lo", "gap_hi"}
    assert np.all(c["solver_lo"] <= c["solver_hi"])
    rows = res.rows()
    assert {"law", "quantity", "estimate", "ci_low", "ci_high", "reason", "r2", "details"} <= set(rows[0])
    keys = [(r["law"], r["quantity"]) for r in rows]
    assert len(keys) == len(set(keys))
    with pytest.raises(SIBenchError):
        fit_trajectory(T20, s, v, replicates=reps[:, :5])


# ---- 2. linearisation --------------------------------------------------------------------------------

def test_linearisation_recovers_gap_limit():
    rng = np.random.default_rng(7)
    t = np.arange(0, 30) * 0.5
    g_inf, lam = 0.08, 0.3
    g = g_inf + 0.5 * np.exp(-lam * t) + rng.normal(0, 0.0005, t.size)
    lin = linearise(t, g)
    est, (lo, hi) = lin["gap_limit"]["estimate"], lin["gap_limit"]["ci95"]
    assert est == pytest.approx(g_inf, abs=0.005)
    assert lo <= g_inf <= hi
    assert lin["rate"]["estimate"] == pytest.approx(lam, rel=0.05)
    assert lin["r2"] > 0.99
    # uneven spacing falls back to the Euler form and still gets the limit
    tu = np.array([0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 17, 20], dtype=float)
    gu = g_inf + 0.5 * np.exp(-0.2 * tu)
    assert linearise(tu, gu)["gap_limit"]["estimate"] == pytest.approx(g_inf, abs=0.01)


# ---- 3. backtest ranks the true law first --------------------------------------------------------------

def test_backtest_ranks_power_law_first_on_power_law_data():
    rng = np.random.default_rng(11)
    t = np.arange(0, 30, dtype=float)
    s = 0.2 + 1.0 * (t + POWER_SHIFT) ** -0.6 + rng.normal(0, 0.002, t.size)
    v = 0.1 + 0.4 * (t + POWER_SHIFT) ** -0.6 + rng.normal(0, 0.002, t.size)
    bt = backtest(t, np.column_stack([s, v]), holdout=0.4)
    assert bt["best"] == "power_law", bt["rmse"]
    assert min(bt["rmse"], key=bt["rmse"].get) == "power_law"
    assert bt["holdout"] == 12
    assert bt["skill_vs_persistence"]["power_law"] > 0


def test_backtest_ranks_exponential_above_persistence_on_model_data():
    s, v = _truth_series()
    bt = backtest(T20, np.column_stack([s, v]))
    assert bt["rmse"]["coupled"] < 1e-4
    assert bt["skill_vs_persistence"]["coupled"] > 0.99


# ---- 4. reference curves -----------------------------------------------------------------------------

TABLE_A = {"gsm8k_qe": (0.996, 0.966, 0.948), "gsm8k_tf": (0.998, 0.980, 0.989),
           "math_qe": (0.998, 0.981, 0.981), "math_tf": (0.998, 0.979, 0.984)}


def test_reference_curves_r2_match_table_a_from_long_format():
    df = pd.read_csv(REFERENCE)  # long format: panel, series, epoch, affine_uncertainty
    res = fit_groups(df, "panel", options=FitOptions(n_boot=20, rate_unit="epoch"))
    assert set(res.fits) == set(TABLE_A)
    for panel, fit in res.fits.items():
        j = fit.to_json()
        got = tuple(j["r2"][s] for s in ("solver", "verifier", "gap"))
        assert got == pytest.approx(TABLE_A[panel], abs=0.002), (panel, got)
        assert "r2_gap_input" in j  # the digitised gap series, compared separately
        # the shared-rate law is rejected on the paper's own curves: its limits say so
        assert j["adequacy"]["conditional"] and "law test" in j["adequacy"]["why"]
        assert all(j[q]["conditional"] for q in ("rate", "solver_limit", "verifier_limit", "gap_limit"))


# ---- 5. strict JSON via the CLI ------------------------------------------------------------------------

def _wide_csv(tmp_path: Path, n=20, acc=True, noise=0.01, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    s, v = _truth_series(T20[:n])
    df = pd.DataFrame({"t": T20[:n], "solver_uncertainty": s + rng.normal(0, noise, n),
                       "verifier_uncertainty": v + rng.normal(0, noise, n)})
    if acc:
        df["solver_accuracy"] = 0.8 - 0.3 * np.exp(-0.4 * T20[:n]) + rng.normal(0, 0.005, n)
        df["verifier_accuracy"] = 0.7 - 0.2 * np.exp(-0.4 * T20[:n]) + rng.normal(0, 0.005, n)
    p = tmp_path / "curves.csv"
    df.to_csv(p, index=False)
    return p


REQUIRED_KEYS = {"rate", "rate_unit", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta", "alpha_k",
                 "beta_k", "t_to_eps", "r2", "n_points", "linearisation", "alternatives", "backtest"}


def test_cli_fit_json_is_strict(tmp_path):
    p = _wide_csv(tmp_path)
    r = CliRunner().invoke(_app(), ["fit", "--trajectory", str(p), "--json", "--boot", "100"])
    assert r.exit_code == 0, r.output
    j = _strict(r.stdout)
    assert REQUIRED_KEYS <= set(j)
    for q in ("rate", "solver_limit", "verifier_limit", "gap_limit"):
        assert set(j[q]) >= {"estimate", "ci95"}
        assert j[q]["ci95"][0] <= j[q]["estimate"] <= j[q]["ci95"][1]
    assert set(j["r2"]) == {"solver", "verifier", "gap"}
    assert set(j["alternatives"]) == {"separate_exp", "power_law", "persistence"}
    assert set(j["backtest"]["rmse"]) == {"coupled", "separate_exp", "power_law", "persistence"}
    assert j["accuracy"]["solver"]["limit"]["ci95"][0] <= 0.8 <= j["accuracy"]["solver"]["limit"]["ci95"][1]
    assert j["n_points"] == 20


def test_cli_fit_long_format_group_by_and_step_synonym(tmp_path):
    r = CliRunner().invoke(_app(), ["fit", "--trajectory", str(REFERENCE), "--group-by", "panel", "--json",
                                    "--boot", "50"])
    assert r.exit_code == 0, r.output
    j = _strict(r.stdout)
    assert [g["group"] for g in j["groups"]] == ["math_qe", "gsm8k_qe", "math_tf", "gsm8k_tf"]
    assert all(REQUIRED_KEYS <= set(g) for g in j["groups"])
    assert j["groups"][0]["rate_unit"] == "epoch"
    # step synonym + runs as replicate seeds + human-readable table
    rng = np.random.default_rng(1)
    s, v = _truth_series()
    rows = [{"step": t, "run": run, "solver_uncertainty": a + rng.normal(0, 0.01),
             "verifier_uncertainty": b + rng.normal(0, 0.01)}
            for run in range(4) for t, a, b in zip(T20, s, v, strict=True)]
    p = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    r = CliRunner().invoke(_app(), ["fit", "--trajectory", str(p), "--json", "--boot", "100"])
    assert r.exit_code == 0, r.output
    j = _strict(r.stdout)
    assert j["bootstrap"]["kind"] == "replicates" and j["rate_unit"] == "step"
    r = CliRunner().invoke(_app(), ["fit", "--trajectory", str(p), "--boot", "50"])
    assert r.exit_code == 0 and "solver_limit" in r.stdout


def test_json_never_contains_nan_for_degenerate_fit():
    # a verifier that does not move relative to the solver: alpha/beta is unstable; rows stay JSON-safe
    t = np.arange(8, dtype=float)
    s = 1.0 + 0.5 * np.exp(-0.5 * t)
    v = 0.5 + 1e-9 * np.sin(t)
    res = fit_trajectory(t, s, v, options=FitOptions(n_boot=50))
    text = json.dumps(res.to_json(), allow_nan=False)
    _strict(text)
    json.dumps(res.rows(), allow_nan=False)


# ---- 6. bad inputs --------------------------------------------------------------------------------------

def _err(args) -> str:
    r = CliRunner().invoke(_app(), args)
    assert r.exit_code != 0
    assert isinstance(r.exception, (SIBenchError, SystemExit)), repr(r.exception)
    msg = str(r.exception) if isinstance(r.exception, SIBenchError) else r.output
    assert "Traceback" not in r.output
    return msg


def test_bad_inputs_give_clear_errors(tmp_path):
    assert "not found" in _err(["fit", "--trajectory", str(tmp_path / "nope.csv")])
    p = tmp_path / "a.csv"
    pd.DataFrame({"t": [0, 1, 2, 3, 4], "solver_uncertainty": [1, 0.8, 0.7, 0.6, 0.55]}).to_csv(p, index=False)
    assert "verifier_uncertainty" in _err(["fit", "--trajectory", str(p)])
    pd.DataFrame({"t": [0, 1, 2], "solver_uncertainty": [1, .8, .7],
                  "verifier_uncertainty": [.5, .4, .35]}).to_csv(p, index=False)
    assert "too few points" in _err(["fit", "--trajectory", str(p)])
    pd.DataFrame({"t": range(6), "solver_uncertainty": [1.0] * 6,
                  "verifier_uncertainty": [.5, .4, .35, .3, .28, .27]}).to_csv(p, index=False)
    assert "constant" in _err(["fit", "--trajectory", str(p)])
    pd.DataFrame({"t": range(6), "solver_uncertainty": [1, .8, float("nan"), .6, .55, .5],
                  "verifier_uncertainty": [.5, .4, .35, .3, .28, .27]}).to_csv(p, index=False)
    msg = _err(["fit", "--trajectory", str(p)])
    assert "row 4" in msg and "solver_uncertainty" in msg
    pd.DataFrame({"x": range(6), "solver_uncertainty": range(6),
                  "verifier_uncertainty": range(6)}).to_csv(p, index=False)
    assert "time column" in _err(["fit", "--trajectory", str(p)])
    assert "unknown group column 'nope'" in _err(["fit", "--trajectory", str(REFERENCE), "--group-by", "nope"])
    assert "store not found" in _err(["fit", "--db", str(tmp_path / "none.duckdb")])
    # the same errors from the Python API
    with pytest.raises(SIBenchError, match="non-finite"):
        fit_trajectory([0, 1, 2, 3], [1, 2, np.inf, 3], [1, 2, 3, 4])
    with pytest.raises(SIBenchError, match="constant"):
        fit_frame(pd.DataFrame({"t": range(5), "solver_uncertainty": range(5), "verifier_uncertainty": [1] * 5}))


def test_main_prints_one_line_error(tmp_path, capsys, monkeypatch):
    from si_bench.cli import main

    monkeypatch.setattr("sys.argv", ["si-bench", "fit", "--trajectory", str(tmp_path / "missing.csv")])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trajectory file not found") and "Traceback" not in err


def _edge_cases() -> dict[str, dict]:
    """Valid trajectories at the edges of what a file can hold: each fits, or is one line saying why not."""
    t = np.arange(8.0)
    decay = np.exp(-t / 2)
    s, v = 2 + 2 * decay, 1 + decay
    return {
        "constant": dict(solver_uncertainty=np.full(8, 2.0), verifier_uncertainty=np.full(8, 1.0)),
        "constant_gap": dict(solver_uncertainty=s, verifier_uncertainty=s - 1),
        "linear": dict(solver_uncertainty=3 - 0.2 * t, verifier_uncertainty=2 - 0.15 * t),
        "single_jump": dict(solver_uncertainty=np.r_[3.0, np.full(7, 2.0)],
                            verifier_uncertainty=np.r_[2.0, np.full(7, 1.5)]),
        "jump_midway": dict(solver_uncertainty=np.where(t < 4, 3.0, 2.0), verifier_uncertainty=np.where(t < 4, 2, 1.5)),
        "instant": dict(solver_uncertainty=2 + 2 * np.exp(-50 * t), verifier_uncertainty=1 + np.exp(-50 * t)),
        "negative": dict(solver_uncertainty=-s, verifier_uncertainty=-(1.5 + 2.5 * decay)),
        "zero_limit": dict(solver_uncertainty=2 * decay, verifier_uncertainty=decay),
        "zeros": dict(solver_uncertainty=np.zeros(8), verifier_uncertainty=np.zeros(8)),
        "equal": dict(solver_uncertainty=v, verifier_uncertainty=v),
        "huge": dict(solver_uncertainty=1e300 * s, verifier_uncertainty=1e300 * v),
        "large": dict(solver_uncertainty=1e90 * s, verifier_uncertainty=1e90 * v),
        "small": dict(solver_uncertainty=1e-90 * s, verifier_uncertainty=1e-90 * v),
        "tiny": dict(solver_uncertainty=1e-300 * s, verifier_uncertainty=1e-300 * v),
    }


@pytest.mark.parametrize("case", sorted(_edge_cases()))
@pytest.mark.parametrize("as_json", [False, True])
def test_edge_case_trajectories_fit_or_say_why_in_one_line(case, as_json, tmp_path, monkeypatch, capsys):
    import sys

    from si_bench.cli import main

    path = tmp_path / f"{case}.csv"
    pd.DataFrame({"t": np.arange(8.0), **_edge_cases()[case]}).to_csv(path, index=False)
    monkeypatch.setattr(sys, "argv", ["si-bench", "fit", "--trajectory", str(path), "--n-boot", "20",
                                      *(["--json"] if as_json else [])])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    if stop.value.code == 0:
        assert err == ""
        assert json.loads(out)["n_points"] == 8 if as_json else "coupled model" in out
    else:
        assert stop.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
