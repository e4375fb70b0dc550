"""Is the coupled (shared-rate) law supported by the data? One flag: the limits are conditional on the law when
the calibrated F test of _laws rejects it against separate exponentials or a power law, or when there are too
few points to test it.

The flag was once the forecast backtest (the coupled law losing by more than 25% to another law) with the
linearisation check: on the law's own data that flagged 28-44% of slow-rate trajectories and 38-71% at GSM8k's
noise scale, while flagging only 54-74% of power-law trajectories (issue 20). The F test flags 0-6% of the
law's own trajectories at 8-20 points and 62-97% of power-law ones at 11-20 (bench/bench_law_coverage.py);
the backtest and the linearisation are still reported.
"""

from __future__ import annotations

import math

from si_bench.fit._laws import TEST_LEVEL

MIN_TEST_POINTS = 5  # df = 2T - 6 >= 4 for the F test


def _disjoint(a: list | None, b: list | None) -> bool:
    if not a or not b:
        return False
    lo_a, hi_a = (-math.inf if a[0] is None else a[0]), (math.inf if a[1] is None else a[1])
    lo_b, hi_b = (-math.inf if b[0] is None else b[0]), (math.inf if b[1] is None else b[1])
    return hi_a < lo_b or hi_b < lo_a


def _linearisation_verdict(lin: dict, coupled: dict) -> tuple[str, str | None]:
    rate = lin.get("rate")
    if rate is None:
        return "unavailable", None
    if rate.get("estimate") is None:
        return "contradicts", f"linearisation: {rate.get('reason')}"
    for q in ("rate", "gap_limit"):
        if _disjoint((lin.get(q) or {}).get("ci95"), coupled[q].get("ci95")):
            return "contradicts", f"linearisation: its {q} interval excludes the coupled law's"
    return "consistent", None


def adequacy(backtest: dict, linearisation: dict, coupled: dict, law_test: dict, n_points: int) -> dict:
    """coupled: the JSON of the coupled rate and gap_limit ({estimate, ci95}); law_test: _laws.law_test for
    this trajectory (B = 1). The flag is the calibrated test alone; the backtest and the linearisation are
    reported beside it (on the law's own data they flag by noise far more often, see the module docstring)."""
    why = []
    rmse = {k: v for k, v in (backtest.get("rmse") or {}).items() if v is not None and math.isfinite(v)}
    rank = 1 + sum(v < rmse["coupled"] for v in rmse.values()) if "coupled" in rmse else None
    F = {law: float(f[0]) for law, f in law_test["F"].items()}
    if n_points < MIN_TEST_POINTS:
        why.append(f"law not tested: {n_points} points, at least {MIN_TEST_POINTS} needed to compare the laws")
    elif law_test["rejected"]["coupled"][0]:
        best = min(F, key=F.__getitem__)
        why.append(f"law test: {best} fits better than the coupled law (F = {F['coupled']:.3g} > "
                   f"{law_test['critical']:.3g}, {100 * TEST_LEVEL:g}% level); the published limit intervals "
                   "span the laws the data do not reject")
    verdict, _ = _linearisation_verdict(linearisation, coupled)
    skill = (backtest.get("skill_vs_persistence") or {}).get("coupled")
    return {"backtest_rank": rank, "backtest_laws": len(rmse) or None, "backtest_best": backtest.get("best"),
            "skill_vs_persistence": skill, "linearisation": verdict,
            "law_test": {"F": F, "critical": law_test["critical"], "level": TEST_LEVEL,
                         "not_rejected": [law for law in F if not law_test["rejected"][law][0]]},
            "conditional": bool(why), "why": "; ".join(why) or None}
