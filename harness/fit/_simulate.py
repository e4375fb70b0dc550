"""Simulator of the solver-verifier gap dynamics, with optional cross-improvement.

dU_s/dt = -alpha E, dU_v/dt = -beta E, E = k (U_s - U_v) - b, alpha > beta >= 0, k > 0.
Closed form (lam = k (alpha - beta), delta = G_0 - b/k):
    U_s(t) = U_s,inf + alpha/(alpha-beta) delta e^{-lam t},  U_v(t) = U_s(t) - G(t),  G(t) = b/k + delta e^{-lam t}.
Cross-improvement: in round r with external data share eta_r the verifier uncertainty entering the round
is replaced by U_v / (1 + gamma eta_r) (the state carries on from there); the round itself is the exact
closed-form step of length dt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from si_bench.errors import SIBenchError
from si_bench.options import MAGNITUDE_MAX, Options, option


def _check(alpha: float, beta: float, k: float, b: float, us0: float, uv0: float) -> None:
    vals = dict(alpha=alpha, beta=beta, k=k, b=b, us0=us0, uv0=uv0)
    bad = [n for n, v in vals.items() if not np.isfinite(v)]
    if bad:
        raise SIBenchError(f"non-finite parameter(s): {', '.join(bad)}")
    if not alpha > beta:
        raise SIBenchError(f"the model needs alpha > beta (got alpha={alpha:g}, beta={beta:g})")
    if beta < 0:
        raise SIBenchError(f"the model needs beta >= 0 (got {beta:g})")
    if not k > 0:
        raise SIBenchError(f"the model needs k > 0 (got {k:g})")


def predicted_limits(alpha: float, beta: float, k: float, b: float, us0: float, uv0: float) -> dict[str, float]:
    _check(alpha, beta, k, b, us0, uv0)
    us_inf = (alpha * uv0 - beta * us0 + alpha * b / k) / (alpha - beta)
    return {"rate": k * (alpha - beta), "solver_limit": us_inf, "verifier_limit": us_inf - b / k,
            "gap_limit": b / k, "delta": (us0 - uv0) - b / k,
            "alpha_over_beta": alpha / beta if beta > 0 else float("inf"),
            "alpha_k": alpha * k, "beta_k": beta * k}


def _step(us: float, uv: float, alpha: float, beta: float, k: float, b: float, dt: float) -> tuple[float, float]:
    """Exact closed-form evolution over dt from (us, uv)."""
    lam = k * (alpha - beta)
    delta = (us - uv) - b / k
    f = np.expm1(-lam * dt)  # e^{-lam dt} - 1
    return us + alpha / (alpha - beta) * delta * f, uv + beta / (alpha - beta) * delta * f


def _shares(shares, rounds: int, name: str = "shares") -> np.ndarray:
    try:
        eta = np.asarray([float(x) for x in shares], dtype=float)
    except (TypeError, ValueError):
        raise SIBenchError(f"{name} must be numbers") from None
    if len(eta) != rounds:
        raise SIBenchError(f"{name} has {len(eta)} values but rounds = {rounds}: give one share per round")
    if not np.all(np.isfinite(eta)) or np.any(eta < 0):
        raise SIBenchError(f"{name} must be finite and >= 0")
    if abs(eta.sum() - 1.0) > 1e-6:
        raise SIBenchError(f"{name} must sum to 1 (within 1e-6); they sum to {eta.sum():.8g}")
    return eta


def simulate(alpha: float, beta: float, k: float, b: float, us0: float, uv0: float, rounds: int,
             shares=None, gamma: float = 0.0, dt: float = 1.0) -> pd.DataFrame:
    """Trajectory at t = 0, dt, ..., rounds*dt. Columns t, solver_uncertainty, verifier_uncertainty, gap
    (and external_share, the share used in the round ending at t, when shares are given)."""
    _check(alpha, beta, k, b, us0, uv0)
    if int(rounds) != rounds or rounds < 1:
        raise SIBenchError(f"rounds must be a positive integer (got {rounds})")
    rounds = int(rounds)
    if not (np.isfinite(dt) and dt > 0):
        raise SIBenchError(f"dt must be > 0 (got {dt})")
    if not (np.isfinite(gamma) and gamma >= 0):
        raise SIBenchError(f"gamma must be >= 0 (got {gamma})")
    t = np.arange(rounds + 1, dtype=float) * dt
    if shares is None:
        lim = predicted_limits(alpha, beta, k, b, us0, uv0)
        e = np.exp(-lim["rate"] * t)
        s = lim["solver_limit"] + alpha / (alpha - beta) * lim["delta"] * e
        v = lim["verifier_limit"] + beta / (alpha - beta) * lim["delta"] * e
        for ti, us, uv in zip(t, s, v, strict=True):
            _check_nonnegative(ti, us, uv)
        return pd.DataFrame({"t": t, "solver_uncertainty": s, "verifier_uncertainty": v, "gap": s - v})
    eta = _shares(shares, rounds)
    s, v = np.empty(rounds + 1), np.empty(rounds + 1)
    s[0], v[0] = us0, uv0
    for r in range(rounds):
        uv_eff = v[r] / (1.0 + gamma * eta[r])
        s[r + 1], v[r + 1] = _step(s[r], uv_eff, alpha, beta, k, b, dt)
        _check_nonnegative(t[r + 1], s[r + 1], v[r + 1])
    return pd.DataFrame({"t": t, "solver_uncertainty": s, "verifier_uncertainty": v, "gap": s - v,
                         "external_share": np.concatenate([[0.0], eta])})


class NegativeUncertainty(SIBenchError):
    """A simulated uncertainty went below 0."""


def _check_nonnegative(t: float, us: float, uv: float) -> None:
    """Uncertainties are negative log-likelihoods: a model that drives one below 0 is not this one."""
    if us < 0 or uv < 0:
        which = "U_s" if us < 0 else "U_v"
        raise NegativeUncertainty(f"these parameters drive {which} below 0 at t = {t:g} ({min(us, uv):.4g}): an "
                                  "uncertainty is an NLL (>= 0); lower gamma or the external share, or raise b")


ALLOCATIONS = ("early", "uniform", "late")
LATE_SHARE = 0.8  # the paper's late allocation: round 8 of 10


def late_round(rounds: int) -> int:
    """The round (1-based) the late allocation spends the whole budget in: ceil(0.8 K), as the paper's 8 of 10."""
    return max(1, math.ceil(round(LATE_SHARE * rounds, 9)))


def allocation_shares(allocation: str, rounds: int) -> list[float]:
    """The budget's share per round: early (all in round 1), uniform, late (all in round ceil(0.8 K)), or
    comma-separated shares summing to 1."""
    if allocation == "early":
        return [1.0] + [0.0] * (rounds - 1)
    if allocation == "uniform":
        return [1.0 / rounds] * rounds
    if allocation == "late":
        return [1.0 if r == late_round(rounds) else 0.0 for r in range(1, rounds + 1)]
    try:
        shares = [float(x) for x in allocation.split(",")]
    except ValueError:
        raise SIBenchError(f"--allocation must be early, uniform, late or {rounds} comma-separated shares, got "
                           f"{allocation!r}") from None
    return _shares(shares, rounds, name="--allocation").tolist()


def allocations(rounds: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(allocation_shares(name, rounds)) for name in ALLOCATIONS}


def converged_limit(alpha: float, beta: float, k: float, b: float, us0: float, uv0: float, trajectory: pd.DataFrame,
                    gamma: float) -> float:
    """The solver limit after the injections of a simulated cross-improvement trajectory, in closed form.

    Between injections alpha U_v - beta U_s is conserved, and U_s,inf = (alpha U_v - beta U_s + alpha b/k) /
    (alpha - beta); an injection lowers U_v by U_v gamma eta / (1 + gamma eta), so
        U_s,inf^c = U_s,inf - alpha / (alpha - beta) * sum_t U_v(t-1) gamma eta_t / (1 + gamma eta_t)."""
    eta = trajectory["external_share"].to_numpy()[1:]
    before = trajectory["verifier_uncertainty"].to_numpy()[:-1]
    drop = float(np.sum(before * gamma * eta / (1.0 + gamma * eta)))
    return predicted_limits(alpha, beta, k, b, us0, uv0)["solver_limit"] - alpha / (alpha - beta) * drop


def compare_allocations(alpha: float, beta: float, k: float, b: float, us0: float, uv0: float, rounds: int,
                        gamma: float, dt: float = 1.0, shares=None) -> dict:
    """Solver uncertainty for the same external-data budget spent early (all in round 1), uniformly, late
    (all in round ceil(0.8 K)) and, when given, as `shares` ("yours"). `final_solver`: after the last round;
    `converged_solver`: the limit reached if self-improvement continues without external data, in closed form
    from the state after the last round; `closed_form_limit`: the same limit in closed form from the
    injections (`converged_limit`). An allocation whose trajectory goes below 0 is not this model: it is left
    out of the comparison and named, with why, in `left_out`.

    When timing barely matters (the paper's Proposition 5.1): an injection lowers U_v by U_v gamma eta / (1 +
    gamma eta), so the limit depends on the budget through sum_t U_v(t-1) gamma eta_t / (1 + gamma eta_t). It
    is independent of timing only when gamma eta is small (the sum is then about gamma sum_t U_v(t-1) eta_t) and
    U_v is roughly constant over the rounds that receive data. Early injections meet a larger U_v than late
    ones, so in this model the timing effect is first order in gamma."""
    out: dict = {"final_solver": {}, "converged_solver": {}, "closed_form_limit": {},
                 "late_round": late_round(int(rounds)), "left_out": {}}
    plans = allocations(int(rounds))
    if shares is not None:
        plans["yours"] = _shares(shares, int(rounds))
    for name, eta in plans.items():
        try:
            df = simulate(alpha, beta, k, b, us0, uv0, rounds, shares=eta, gamma=gamma, dt=dt)
        except NegativeUncertainty as e:
            out["left_out"][name] = str(e)
            continue
        us, uv = float(df["solver_uncertainty"].iloc[-1]), float(df["verifier_uncertainty"].iloc[-1])
        out["final_solver"][name] = us
        out["converged_solver"][name] = predicted_limits(alpha, beta, k, b, us, uv)["solver_limit"]
        out["closed_form_limit"][name] = converged_limit(alpha, beta, k, b, us0, uv0, df, gamma)
    try:
        base = simulate(alpha, beta, k, b, us0, uv0, rounds, dt=dt)
        out["no_external_data"] = {"final_solver": float(base["solver_uncertainty"].iloc[-1]),
                                   "converged_solver": predicted_limits(alpha, beta, k, b, us0, uv0)["solver_limit"]}
    except NegativeUncertainty as e:
        out["left_out"]["none"] = str(e)
    for key in ("final_solver", "converged_solver"):
        short = key.split("_")[0]
        vals = np.array(list(out[key].values()))
        if len(vals) < 2:
            out[f"max_difference_{short}"] = out[f"difference_over_gain_{short}"] = None
            continue
        diff = float(vals.max() - vals.min())
        out[f"max_difference_{short}"] = diff
        gain = out["no_external_data"][key] - float(vals.mean()) if "no_external_data" in out else 0.0
        out[f"difference_over_gain_{short}"] = diff / gain if gain != 0 else None
    return out


MAX_ROUNDS = 100_000


@dataclass
class SimulateConfig(Options):
    """The parameters of `si-bench simulate` (Proposition 3.1, with cross-improvement as Section 5)."""

    alpha: float = option(help="Solver learning coefficient (alpha > beta).", above=0, max=MAGNITUDE_MAX)
    beta: float = option(help="Verifier learning coefficient (beta >= 0).", min=0, max=MAGNITUDE_MAX)
    k: float = option(help="Energy slope k > 0 (E = k G - b).", above=0, max=MAGNITUDE_MAX)
    b: float = option(help="Energy offset b (the gap limit is b/k).", min=-MAGNITUDE_MAX, max=MAGNITUDE_MAX)
    us0: float = option(help="Initial solver uncertainty.", min=0, max=MAGNITUDE_MAX)
    uv0: float = option(help="Initial verifier uncertainty.", min=0, max=MAGNITUDE_MAX)
    rounds: int = option(10, "Number of rounds.", min=1, max=MAX_ROUNDS)
    dt: float = option(1.0, "Length of one round in units of t.", above=0, max=MAGNITUDE_MAX)
    shares: str | None = option(None, "External-data share per round, comma-separated, summing to 1.")
    gamma: float = option(0.0, "Cross-improvement strength: U_v -> U_v / (1 + gamma * share).", min=0,
                          max=MAGNITUDE_MAX)

    def check(self) -> None:
        _check(self.alpha, self.beta, self.k, self.b, self.us0, self.uv0)
        if self.shares is not None:
            _shares(self.share_list(), self.rounds)

    def share_list(self) -> list[float] | None:
        if self.shares is None:
            return None
        try:
            return [float(x) for x in self.shares.split(",") if x.strip()]
        except ValueError:
            raise SIBenchError(f"--shares must be a comma-separated list of numbers (got {self.shares!r})") from None


def simulation(cfg: SimulateConfig) -> dict:
    """{"trajectory": DataFrame, "predicted_limits": {...}, "allocations": {...} when shares are given}."""
    args = (cfg.alpha, cfg.beta, cfg.k, cfg.b, cfg.us0, cfg.uv0)
    eta = cfg.share_list()
    with np.errstate(all="ignore"):
        out = {"trajectory": simulate(*args, cfg.rounds, shares=eta, gamma=cfg.gamma, dt=cfg.dt),
               "predicted_limits": predicted_limits(*args)}
        if eta is not None:
            out["allocations"] = compare_allocations(*args, cfg.rounds, cfg.gamma, dt=cfg.dt, shares=eta)
    numbers = out["trajectory"].to_numpy(dtype=float)
    if not np.isfinite(numbers).all() or not all(np.isfinite(v) for v in out["predicted_limits"].values()
                                                 if v != float("inf")):
        raise SIBenchError("these parameters overflow double precision: the trajectory is not finite")
    return out
