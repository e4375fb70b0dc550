"""Result dataclasses and their strict-JSON form (no NaN/Infinity: non-finite numbers become null + reason)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from si_bench.fit._adequacy import adequacy
from si_bench.fit._coupled import LIMIT_DOMAINS, CoupledFit, curves
from si_bench.fit._intervals import COVERAGE_NOTE, interval_json
from si_bench.options import BOOT_MAX, MAGNITUDE_MAX, SEED_MAX, Options, option

COUPLED_QUANTITIES = ("rate", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta", "alpha_k", "beta_k")
MIN_FINITE_SHARE = 0.9
LIMITS = ("rate", "solver_limit", "verifier_limit", "gap_limit")
SECONDARY_METHOD = "percentile bootstrap (coverage not checked)"
ANY_LAW_LIMITS = ("solver_limit", "verifier_limit", "gap_limit")
ANY_LAW_METHOD = ("hull of the 95% intervals of the coupled law and of the candidate laws the data do not reject "
                  "(separate exponentials, power law; F test at 5%); the coupled-law-only interval is coupled_law")


UNITS = ("total", "per_token")


@dataclass
class FitOptions(Options):
    """How trajectories are fitted: one options object for `fit`, `leaderboard` and the API."""

    n_boot: int = option(500, "Bootstrap replicates for the 95% CIs.", min=0, max=BOOT_MAX, aliases=("--boot",))
    seed: int = option(0, "Seed of the bootstrap.", min=0, max=SEED_MAX)
    eps: float | None = option(None, "Tolerance of the rounds-to-converge estimate (default 1% of the initial "
                                     "gap).", above=0, max=MAGNITUDE_MAX)
    holdout: float = option(0.4, "Share of the last points held out in the forecast backtest.", min=0, max=0.95)
    unit: str = option("total", "Uncertainty fitted: total or per_token NLL.", choices=UNITS)
    rate_unit: str | None = option(None, "Unit of t for labels (default: round, step or epoch from the input).")


def _num(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def clean(obj: Any) -> Any:
    """Recursively make obj strict-JSON safe. A dict in which a non-finite number was nulled gets a
    "reason" key (unless it already has one)."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        bad: list[str] = []
        for k, v in obj.items():
            v = _num(v)
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
                bad.append(str(k))
            elif isinstance(v, (list, tuple, np.ndarray)) and any(
                isinstance(_num(e), float) and not math.isfinite(_num(e)) for e in v
            ):
                out[k] = [None if (isinstance(_num(e), float) and not math.isfinite(_num(e))) else clean(e) for e in v]
                bad.append(str(k))
            else:
                out[k] = clean(v)
        if bad and "reason" not in out:
            out["reason"] = "not finite (fit undefined or unstable): " + ", ".join(bad)
        return out
    if isinstance(obj, (list, tuple)):
        return [None if (isinstance(_num(e), float) and not math.isfinite(_num(e))) else clean(e) for e in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    return _num(obj)


def boot_ci(samples: np.ndarray | None) -> tuple[list[float] | None, str | None]:
    """Percentile 95% interval of the bootstrap fits."""
    if samples is None or len(samples) == 0:
        return None, "no bootstrap replicates"
    s = np.asarray(samples, dtype=float)
    ok = np.isfinite(s)
    if ok.mean() < MIN_FINITE_SHARE:
        return None, f"bootstrap unstable: only {100 * ok.mean():.0f}% of replicate fits finite"
    lo, hi = np.percentile(s[ok], [2.5, 97.5])
    return [float(lo), float(hi)], None


def _t_to_eps(lam: np.ndarray, delta: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(np.abs(delta) / eps) / lam
    t = np.where(np.abs(delta) <= eps, 0.0, t)
    return np.where(lam > 0, t, np.nan)


@dataclass
class FitResult:
    coupled: CoupledFit
    options: FitOptions
    eps: float
    linearisation: dict
    alternatives: dict
    backtest: dict
    accuracy: dict | None = None
    notes: list[str] = field(default_factory=list)

    # ---- core quantities -------------------------------------------------------------
    def coupled_law_quantity(self, name: str) -> dict:
        """The interval of `name` under the coupled law alone (the published one before issue 20)."""
        c = self.coupled
        domain = c.bounds if name == "rate" else LIMIT_DOMAINS[name]
        return interval_json(c.point[name], c.intervals[name], kind="rate" if name == "rate" else "limit",
                             domain=domain, bounds=c.bounds, method=c.interval_method)

    def quantity(self, name: str) -> dict:
        c = self.coupled
        if name in c.any_law:
            out = interval_json(c.point[name], c.any_law[name], kind="limit", domain=LIMIT_DOMAINS[name],
                                bounds=c.bounds, method=ANY_LAW_METHOD)
            out["coupled_law"] = self.coupled_law_quantity(name)
        elif name in c.intervals:
            domain = c.bounds if name == "rate" else LIMIT_DOMAINS[name]
            out = interval_json(c.point[name], c.intervals[name], kind="rate" if name == "rate" else "limit",
                                domain=domain, bounds=c.bounds, method=c.interval_method)
        else:
            ci, reason = boot_ci(c.boot.get(name))
            out = {"estimate": c.point[name], "ci95": ci, "method": SECONDARY_METHOD}
            if reason:
                out["reason"] = reason
        if name in c.se:
            out["se"] = c.se[name]
        if name == "rate" and c.at_bound:
            out["reason"] = "; ".join(filter(None, [out.get("reason"),
                                                    "rate at the edge of the search range (weakly identified)"]))
        return out

    def t_to_eps(self) -> dict:
        c = self.coupled
        lam, delta = c.point["lam"], c.point["delta"]
        out: dict[str, Any] = {"eps": self.eps, "rate_unit": self.options.rate_unit or "round"}
        scale = max(abs(c.point["a_s"]), abs(c.point["a_v"]), 1e-300)
        if not (lam > 0) or not math.isfinite(lam):
            return {**out, "estimate": None, "ci95": None, "reason": "rate <= 0: the gap does not converge"}
        if abs(delta) <= 1e-9 * scale:
            return {**out, "estimate": None, "ci95": None,
                    "reason": "delta ~ 0: the gap starts at its limit (t_to_eps undefined)"}
        if not (self.eps > 0):
            return {**out, "estimate": None, "ci95": None, "reason": "eps must be > 0"}
        est = float(_t_to_eps(np.array([lam]), np.array([delta]), self.eps)[0])
        ci, reason = boot_ci(_t_to_eps(c.boot["lam"], c.boot["delta"], self.eps)) if c.boot else (None, "no bootstrap")
        out.update({"estimate": est, "ci95": ci, "delta": delta})
        if reason:
            out["reason"] = reason
        return out

    # ---- public ------------------------------------------------------------------------
    def to_json(self) -> dict:
        c = self.coupled
        out: dict[str, Any] = {}
        for q in COUPLED_QUANTITIES:
            out[q] = self.quantity(q)
            if q == "rate":
                out["rate_unit"] = self.options.rate_unit or "round"
        out["t_to_eps"] = self.t_to_eps()
        out["r2"] = dict(c.r2)
        if c.r2_gap_input is not None:
            out["r2_gap_input"] = c.r2_gap_input
        out["n_points"] = int(len(c.t))
        out["unit"] = self.options.unit
        out["interval"] = self.interval_info()
        out["bootstrap"] = {"kind": c.bootstrap, "n": int(len(c.boot.get("lam", []))),
                            "used_for": "curve bands, secondary quantities" + (
                                ", the rate and limits" if c.bootstrap == "replicates" else "")}
        out["linearisation"] = self.linearisation
        out["alternatives"] = self.alternatives
        out["backtest"] = self.backtest
        out["adequacy"] = adequacy(self.backtest, self.linearisation, out, c.law_test, len(c.t))
        for q in LIMITS:
            out[q]["conditional"] = out["adequacy"]["conditional"]
        if self.accuracy:
            out["accuracy"] = self.accuracy
        notes = list(self.notes)
        if out["adequacy"]["conditional"]:
            notes.append(f"the limits are conditional on the coupled law: {out['adequacy']['why']}")
        if notes:
            out["notes"] = notes
        return clean(out)

    def interval_info(self) -> dict:
        c = self.coupled
        if c.bootstrap == "replicates":
            includes = ("the variation the replicates resample (prompts measured at every t; seed runs when "
                        "several are pooled) and residual misfit beyond it")
            excludes = ("variation the replicates do not resample (seed-to-seed training noise of a single run), "
                        "and laws beyond the candidates: the limits span the coupled law, separate exponentials and a "
                        "power law where the data do not reject them (see adequacy)")
        else:
            includes = ("measurement noise as the residuals about the fitted law show it, widened when they are "
                        "serially correlated")
            excludes = ("noise shared by every t (the same prompts measured at each t), seed-to-seed training "
                        "noise, and laws beyond the candidates: the limits span the coupled law, separate exponentials "
                        "and a power law where the data do not reject them (see adequacy)")
        return {"method": c.interval_method, "level": 0.95, "applies_to": list(LIMITS),
                "limits": ANY_LAW_METHOD, "weighted": ("by 1 / se^2 of each point" if c.weighted else "no"),
                "secondary": SECONDARY_METHOD, "includes": includes, "excludes": excludes,
                "serial_correlation": dict(c.serial), "coverage": COVERAGE_NOTE}

    def curve(self, t_grid) -> dict[str, np.ndarray]:
        c = self.coupled
        tg = np.asarray(t_grid, dtype=float)
        p = {k: np.array([c.point[k]]) for k in ("lam", "us_inf", "uv_inf", "a_s", "a_v")}
        s, v = curves(p, tg)
        out = {"t": tg, "solver": s[0], "verifier": v[0], "gap": s[0] - v[0]}
        if c.boot:
            bs, bv = curves(c.boot, tg)
            for name, arr in (("solver", bs), ("verifier", bv), ("gap", bs - bv)):
                with np.errstate(all="ignore"):
                    lo, hi = np.nanpercentile(arr, [2.5, 97.5], axis=0)
                out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        return out

    def rows(self) -> list[dict]:
        """Flat rows for the store's `fits` table (the caller adds fit_key, run_id, dataset, ...)."""
        j = self.to_json()
        rows: list[dict] = []

        def add(law, quantity, q, r2=None, details=None):
            if not isinstance(q, dict):
                q = {"estimate": q}
            ci = q.get("ci95") or [None, None]
            rows.append({"law": law, "quantity": quantity, "estimate": q.get("estimate"),
                         "ci_low": ci[0], "ci_high": ci[1], "reason": q.get("reason"), "r2": r2,
                         "details": {k: v for k, v in q.items() if k not in ("estimate", "ci95", "reason")}
                         | (details or {})})

        r2c = j["r2"]
        r2_for = {"solver_limit": r2c.get("solver"), "verifier_limit": r2c.get("verifier"), "gap_limit": r2c.get("gap")}
        for q in COUPLED_QUANTITIES:
            own = j[q].get("coupled_law", j[q])  # the coupled law's rows keep its own interval
            add("coupled", q, {**own, "conditional": j[q].get("conditional")} if "conditional" in j[q] else own,
                r2_for.get(q), {"rate_unit": j["rate_unit"], "unit": j["unit"]})
        for q in ANY_LAW_LIMITS:
            add("any_law", q, {k: v for k, v in j[q].items() if k != "coupled_law"}, r2_for.get(q),
                {"unit": j["unit"]})
        add("coupled", "t_to_eps", j["t_to_eps"])
        lin = j["linearisation"]
        for q in ("rate", "gap_limit"):
            if q in lin:
                add("linearised", q, lin[q], lin.get("r2"))
        for law, res in j["alternatives"].items():
            for series, params in res["params"].items():
                for k, v in params.items():
                    add(law, f"{series}_{k}", v, res["r2"].get(series))
        bt = j["backtest"]
        for law, v in (bt.get("rmse") or {}).items():
            add(law, "backtest_rmse", v, details={"holdout": bt.get("holdout")})
        for law, v in (bt.get("skill_vs_persistence") or {}).items():
            add(law, "skill_vs_persistence", v, details={"holdout": bt.get("holdout")})
        for series, acc in (j.get("accuracy") or {}).items():
            if "limit" in acc:
                add("saturation", f"{series}_accuracy_limit", acc["limit"], acc.get("r2"))
                add("saturation", f"{series}_accuracy_rate", acc["rate"], acc.get("r2"))
        return rows


@dataclass
class GroupFitResult:
    group_by: str
    fits: dict[str, FitResult]

    def to_json(self) -> dict:
        groups = [{"group": g, **f.to_json()} for g, f in self.fits.items()]
        return clean({"group_by": self.group_by, "groups": groups})
