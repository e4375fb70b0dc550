"""Forecast backtest: fit each law on the first part of a trajectory, forecast the rest."""

from __future__ import annotations

import math

import numpy as np

import si_bench.fit._alternatives as alt
from si_bench.fit._coupled import curves, fit_many

LAWS = ("coupled", "separate_exp", "power_law", "persistence")
MIN_TRAIN = 4


def split_point(n: int, holdout: float) -> int:
    """Number of training points: the first (1 - holdout) share, at least MIN_TRAIN."""
    return max(MIN_TRAIN, int(math.ceil(round((1.0 - holdout) * n, 9))))


def backtest(t: np.ndarray, y: np.ndarray, holdout: float = 0.4) -> dict:
    """y (T, 2). Returns {"holdout", "n_train", "rmse": {law}, "skill_vs_persistence": {law}} or a reason."""
    t = np.asarray(t, dtype=float)
    n = len(t)
    n_train = split_point(n, holdout)
    if n_train >= n:
        return {"holdout": 0, "n_train": n_train,
                "reason": f"too few points to hold any out: {n} points, at least {MIN_TRAIN} needed for fitting"}
    if len(np.unique(t[:n_train])) < MIN_TRAIN:
        return {"holdout": n - n_train, "n_train": n_train,
                "reason": f"fewer than {MIN_TRAIN} distinct t in the training part"}
    tr, te = slice(0, n_train), slice(n_train, n)
    t_tr, y_tr, t_te, y_te = t[tr], y[tr], t[te], y[te]
    preds = {}
    p = fit_many(t_tr, y_tr[None])
    s, v = curves(p, t_te)
    preds["coupled"] = np.column_stack([s[0], v[0]])
    preds["separate_exp"] = alt.predict_separate_exp(alt.fit_separate_exp(t_tr, y_tr), t_te)
    preds["power_law"] = alt.predict_power_law(alt.fit_power_law(t_tr, y_tr), t_te)
    preds["persistence"] = alt.predict_persistence(alt.fit_persistence(t_tr, y_tr), t_te)
    rmse = {law: float(np.sqrt(np.mean((preds[law] - y_te) ** 2))) for law in LAWS}
    base = rmse["persistence"]
    skill = {law: (1.0 - rmse[law] / base) if base > 0 else float("nan") for law in LAWS}
    best = min(LAWS, key=lambda k: rmse[k] if np.isfinite(rmse[k]) else np.inf)
    return {"holdout": n - n_train, "n_train": n_train, "rmse": rmse, "skill_vs_persistence": skill, "best": best}
