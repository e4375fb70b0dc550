"""The simulator: closed form vs ODE integration, cross-improvement, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from scipy.integrate import solve_ivp
from typer.testing import CliRunner

from si_bench.errors import SIBenchError
from si_bench.fit import FitOptions, compare_allocations, fit_trajectory, predicted_limits, simulate

PAPER = dict(alpha=0.9, beta=0.3, k=0.8, b=0.1, us0=1.2, uv0=0.8)


def _app() -> typer.Typer:
    from si_bench.cli import app

    return app


def _strict(text: str):
    def bad(c):
        raise ValueError(c)

    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_closed_form_matches_ode(dt):
    a, b_, k, b = PAPER["alpha"], PAPER["beta"], PAPER["k"], PAPER["b"]

    def rhs(_t, y):
        e = k * (y[0] - y[1]) - b
        return [-a * e, -b_ * e]

    df = simulate(**PAPER, rounds=12, dt=dt)
    sol = solve_ivp(rhs, (0, 12 * dt), [PAPER["us0"], PAPER["uv0"]], t_eval=df["t"].to_numpy(),
                    rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(df["solver_uncertainty"], sol.y[0], atol=1e-7)
    np.testing.assert_allclose(df["verifier_uncertainty"], sol.y[1], atol=1e-7)
    np.testing.assert_allclose(df["gap"], sol.y[0] - sol.y[1], atol=1e-7)
    lim = predicted_limits(**PAPER)
    assert lim["rate"] == pytest.approx(k * (a - b_))
    assert lim["gap_limit"] == pytest.approx(b / k)
    long = simulate(**PAPER, rounds=200)
    assert long["solver_uncertainty"].iloc[-1] == pytest.approx(lim["solver_limit"], abs=1e-9)
    assert long["verifier_uncertainty"].iloc[-1] == pytest.approx(lim["verifier_limit"], abs=1e-9)


def test_zero_gamma_shares_equal_closed_form():
    base = simulate(**PAPER, rounds=10)
    cross = simulate(**PAPER, rounds=10, shares=[0.1] * 10, gamma=0.0)
    np.testing.assert_allclose(cross["solver_uncertainty"], base["solver_uncertainty"], atol=1e-12)


def test_fit_recovers_simulated_parameters():
    df = simulate(**PAPER, rounds=20, dt=0.5)
    res = fit_trajectory(df["t"], df["solver_uncertainty"], df["verifier_uncertainty"], options=FitOptions(n_boot=50))
    j = res.to_json()
    lim = predicted_limits(**PAPER)
    assert j["rate"]["estimate"] == pytest.approx(lim["rate"], rel=1e-4)
    assert j["alpha_over_beta"]["estimate"] == pytest.approx(3.0, rel=1e-4)
    assert j["alpha_k"]["estimate"] == pytest.approx(lim["alpha_k"], rel=1e-4)
    assert j["beta_k"]["estimate"] == pytest.approx(lim["beta_k"], rel=1e-4)
    assert j["gap_limit"]["estimate"] == pytest.approx(lim["gap_limit"], abs=1e-5)


def test_shares_must_sum_to_one():
    with pytest.raises(SIBenchError, match="sum to 1"):
        simulate(**PAPER, rounds=3, shares=[0.5, 0.2, 0.2], gamma=0.5)
    with pytest.raises(SIBenchError, match="one share per round"):
        simulate(**PAPER, rounds=3, shares=[0.5, 0.5], gamma=0.5)
    simulate(**PAPER, rounds=3, shares=[0.5, 0.25, 0.25 + 5e-7], gamma=0.5)  # within 1e-6
    with pytest.raises(SIBenchError, match="alpha > beta"):
        simulate(0.3, 0.9, 0.8, 0.1, 1.2, 0.8, rounds=3)


def test_allocation_timing_matters_little_prop_5_1():
    """Prop 5.1: the solver reached depends on the total external data, hardly on its timing.

    The multiplicative injection U_v / (1 + gamma eta) depends on U_v at injection time, so timing has a
    second-order effect; the converged solver differs across allocations by a small share of the gain."""
    out = compare_allocations(**PAPER, rounds=10, gamma=0.5)
    conv = out["converged_solver"]
    gain = out["no_external_data"]["converged_solver"] - np.mean(list(conv.values()))
    assert gain > 0
    assert out["max_difference_converged"] < 0.25 * gain
    # with a small external budget the timing effect is small in absolute terms (~1% of the solver level);
    # relative to the gain it stays ~ the relative drift of U_v over the rounds
    small = compare_allocations(**PAPER, rounds=10, gamma=0.05)
    assert small["max_difference_converged"] < 0.02 * small["no_external_data"]["converged_solver"]
    assert small["difference_over_gain_converged"] < 0.25
    # all allocations help compared with no external data
    assert all(v < out["no_external_data"]["converged_solver"] for v in conv.values())


def test_cli_simulate(tmp_path):
    app = _app()
    args = ["simulate", "--alpha", "0.9", "--beta", "0.3", "--k", "0.8", "--b", "0.1", "--us0", "1.2", "--uv0", "0.8",
            "--rounds", "10"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "solver_limit" in r.stdout and "U_s" in r.stdout
    png = tmp_path / "out.png"
    r = CliRunner().invoke(app, args + ["--shares", "1,0,0,0,0,0,0,0,0,0", "--gamma", "0.5", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "early" in r.stdout and "late" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(app, args + ["--json"])
    assert r.exit_code == 0
    assert _strict(r.stdout)["predicted_limits"]["gap_limit"] == pytest.approx(0.125)
    r = CliRunner().invoke(app, args + ["--shares", "0.5,0.4,0,0,0,0,0,0,0,0", "--gamma", "0.5"])
    assert r.exit_code != 0
    assert isinstance(r.exception, SIBenchError) and "sum to 1" in str(r.exception)


def test_late_is_round_ceil_0_8_k():
    from si_bench.fit import allocation_shares, late_round

    assert late_round(10) == 8 and late_round(5) == 4 and late_round(3) == 3 and late_round(1) == 1
    assert allocation_shares("late", 10) == [0.0] * 7 + [1.0, 0.0, 0.0]
    out = compare_allocations(**PAPER, rounds=10, gamma=0.5)
    assert out["late_round"] == 8


def test_closed_form_limit_matches_the_simulator():
    for gamma in (0.05, 0.5):
        out = compare_allocations(**PAPER, rounds=10, gamma=gamma)
        for name, simulated in out["converged_solver"].items():
            assert out["closed_form_limit"][name] == pytest.approx(simulated, rel=1e-9, abs=1e-12), (gamma, name)


def test_timing_effect_is_first_order_in_gamma():
    """At gamma = 0.05 the allocations' converged limits differ by about 18% of the gain (not ~gamma^2)."""
    small = compare_allocations(**PAPER, rounds=10, gamma=0.05)
    assert 0.15 < small["difference_over_gain_converged"] < 0.21


def test_parameters_that_drive_an_uncertainty_below_zero_are_an_error():
    with pytest.raises(SIBenchError, match="below 0"):
        simulate(**PAPER, rounds=10, shares=[1.0] + [0.0] * 9, gamma=2.0)
    # without shares too: the closed form is checked at every t
    with pytest.raises(SIBenchError, match="drive U_s below 0 at t = 4"):
        simulate(**{**PAPER, "b": -0.5}, rounds=10)
    simulate(**{**PAPER, "b": -0.5}, rounds=3)  # still >= 0 up to t = 3


def test_invalid_allocations_are_left_out_and_named():
    """gamma = 2: spending the budget early drives U_v below 0; the comparison keeps the valid allocations
    (the user's own among them) and says which one it left out and why."""
    late = [0.0] * 7 + [1.0, 0.0, 0.0]
    out = compare_allocations(**PAPER, rounds=10, gamma=2.0, shares=late)
    assert set(out["left_out"]) == {"early"} and "below 0" in out["left_out"]["early"]
    assert set(out["final_solver"]) == {"uniform", "late", "yours"}
    assert out["converged_solver"]["yours"] == pytest.approx(out["converged_solver"]["late"])
    vals = [out["final_solver"][k] for k in ("uniform", "late", "yours")]
    assert out["max_difference_final"] == pytest.approx(max(vals) - min(vals))


def test_cli_simulate_reports_your_limit_and_what_it_left_out():
    app = _app()
    args = ["simulate", "--alpha", "0.9", "--beta", "0.3", "--k", "0.8", "--b", "0.1", "--us0", "1.2", "--uv0", "0.8",
            "--rounds", "10", "--gamma", "2", "--shares", "0,0,0,0,0,0,0,1,0,0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "yours (--shares)" in r.stdout and "left out of the comparison: early" in r.stdout
    assert "(closed form)" in r.stdout and "(simulated)" in r.stdout
    r = CliRunner().invoke(app, args[:7] + ["--b", "-0.5"] + args[9:15])
    assert isinstance(r.exception, SIBenchError) and "below 0" in str(r.exception)
