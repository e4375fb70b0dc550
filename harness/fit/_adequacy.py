"""Is the coupled (shared-rate) law supported by the data? The backtest against the alternative laws and the
linearisation check, summarised into one flag: limits are conditional on the law when it loses or is untested.

The coupled law loses the backtest when its forecast RMSE exceeds LOSE_MARGIN times the best other law's
(separate exponentials, power law). On data from the law itself (si_bench.fit._calibration design) plain ranking
flags 35-40% of trajectories by noise alone; with the margin 15% at 8 points, 4% at 11, none at 20. Persistence
is reported (skill), not part of the flag: on short series whose held-out part is flat within the noise it wins
by chance.
"""

from __future__ import annotations

import math

LOSE_MARGIN = 1.25
COMPETITORS = ("separate_exp", "power_law")


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


def adequacy(backtest: dict, linearisation: dict, coupled: dict) -> dict:
    """coupled: the JSON of the coupled rate and gap_limit ({estimate, ci95})."""
    why = []
    rmse = {k: v for k, v in (backtest.get("rmse") or {}).items() if v is not None and math.isfinite(v)}
    rank = None
    if "coupled" in rmse:
        rank = 1 + sum(v < rmse["coupled"] for v in rmse.values())
        best = min((k for k in COMPETITORS if k in rmse), key=rmse.get, default=None)
        if best and rmse["coupled"] > LOSE_MARGIN * rmse[best]:
            why.append(f"backtest: the coupled law's forecast error is {rmse['coupled'] / rmse[best]:.2f} times "
                       f"that of {best} (ranks {rank} of {len(rmse)})")
    else:
        why.append(f"backtest: law not tested ({backtest.get('reason', 'no forecast')})")
    verdict, reason = _linearisation_verdict(linearisation, coupled)
    if reason:
        why.append(reason)
    skill = (backtest.get("skill_vs_persistence") or {}).get("coupled")
    return {"backtest_rank": rank, "backtest_laws": len(rmse) or None, "backtest_best": backtest.get("best"),
            "skill_vs_persistence": skill,
            "linearisation": verdict, "conditional": bool(why), "why": "; ".join(why) or None}
