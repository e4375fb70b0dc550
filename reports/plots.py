"""Per-trajectory figures (matplotlib's object API: no pyplot, no global backend). Rendering only: fitted
curves, limits and the linearisation come in.

Panels, one above the other in a figure a phone shows at its own width (the page sets them beside the fit's
details on a wide screen): (a) U_s and U_v with the fitted coupled curves, 95% bands and limits, (b) the gap
G = U_s - U_v with the fitted gap curve, (c) the linearisation check dG against G with its OLS line, (d)
accuracies with their limits when measured. Each legend sits below its panel, where it hides no point. A
limit's legend entry shows its interval; an end the data do not determine reads "open", and a limit the data
cannot pin down reads "not identified".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from si_bench.errors import SIBenchError
from si_bench.reports.tables import interval_text

SOLVER, VERIFIER, GAP = "#1f77b4", "#d62728", "#2ca02c"
WIDTH_IN, PANEL_IN, DPI = 4.4, 3.4, 150  # 440 CSS pixels wide (the page's size), drawn for high-density screens


def _legend(ax) -> None:
    """Below the panel, outside its data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                  handlelength=1.5, columnspacing=1.0)


def _col(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    if frame is None or name not in frame.columns:
        return None
    a = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    return None if np.isnan(a).all() else a


def _errorbar(ax, t, y, lo, hi, color, label):
    if y is None:
        return
    if lo is not None and hi is not None:
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(t, y, yerr=err, fmt="o", color=color, ms=4, capsize=2, lw=1, label=label)
    else:
        ax.plot(t, y, "o", color=color, ms=4, label=label)


def _band(ax, curve, name, color, label):
    tg = _col(curve, "curve_t")
    y = _col(curve, f"curve_{name}")
    if tg is None or y is None:
        return
    ax.plot(tg, y, "-", color=color, lw=1.5, label=label)
    lo, hi = _col(curve, f"curve_{name}_lo"), _col(curve, f"curve_{name}_hi")
    if lo is not None and hi is not None:
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(tg[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)


def _limit(ax, q: dict | None, color, label: str, pct: bool = False):
    """The limit as a dotted line and, where both ends are determined, a light band; its interval in the legend."""
    if not q:
        return
    text = f"{label} {interval_text(q, pct=pct)}"
    if q.get("estimate") is None:
        ax.plot([], [], ls=":", color=color, lw=1, label=text)
        return
    ax.axhline(q["estimate"], color=color, ls=":", lw=1, label=text)
    lo, hi = q.get("ci95") or (None, None)
    if lo is not None and hi is not None:
        ax.axhspan(lo, hi, color=color, alpha=0.06, lw=0)


def trajectory_figure(path: Path, obs: pd.DataFrame, curve: pd.DataFrame | None, fit: dict | None, *,
                      unit: str = "total", t_unit: str = "round", title: str = "", y_label: str | None = None) -> Path:
    suffix = "_per_token" if unit == "per_token" else ""
    t = _col(obs, "t")
    t = np.zeros(0) if t is None else t
    has_acc = _col(obs, "solver_accuracy") is not None or _col(obs, "verifier_accuracy") is not None
    fig = Figure(figsize=(WIDTH_IN, PANEL_IN * (4 if has_acc else 3)), dpi=DPI, layout="constrained")
    panels = fig.subplots(4 if has_acc else 3, 1)
    a, b, c = panels[:3]
    d = panels[3] if has_acc else None
    label_u = y_label or ("NLL per token" if unit == "per_token" else "NLL (nats)")

    # (a) U_s, U_v
    for name, col, color, sym in (("solver", "solver_uncertainty", SOLVER, "U_s"),
                                  ("verifier", "verifier_uncertainty", VERIFIER, "U_v")):
        y = _col(obs, col + suffix)
        _errorbar(a, t, y, _col(obs, f"{col}{suffix}_lo"), _col(obs, f"{col}{suffix}_hi"), color, f"{sym} measured")
        _band(a, curve, name, color, f"{sym} coupled fit")
        _limit(a, (fit or {}).get(f"{name}_limit"), color, f"{sym} limit")
    a.set_title("(a) solver and verifier uncertainty", fontsize=10)
    a.set_xlabel(t_unit)
    a.set_ylabel(label_u)
    _legend(a)

    # (b) gap
    g = _col(obs, "gap" + suffix)
    _errorbar(b, t, g, _col(obs, f"gap{suffix}_lo"), _col(obs, f"gap{suffix}_hi"), GAP, "G measured")
    _band(b, curve, "gap", GAP, "G coupled fit")
    _limit(b, (fit or {}).get("gap_limit"), GAP, "G limit")
    b.set_title("(b) gap G = U_s - U_v", fontsize=10)
    b.set_xlabel(t_unit)
    b.set_ylabel(label_u)
    _legend(b)

    # (c) linearisation check: dG against G
    lin = (fit or {}).get("linearisation") or {}
    if g is not None and len(np.unique(t)) >= 2:
        by_t = pd.Series(g).groupby(t).mean()  # the mean over pooled seed runs at each t
        ts, gs = by_t.index.to_numpy(dtype=float), by_t.to_numpy(dtype=float)
        even = lin.get("spacing") is not None or (len(ts) > 1 and np.allclose(np.diff(ts), np.diff(ts)[0]))
        dg = np.diff(gs) if even else np.diff(gs) / np.diff(ts)
        x = gs[:-1]
        c.plot(x, dg, "o", color=GAP, ms=5, label="observed")
        if lin.get("slope") is not None and lin.get("intercept") is not None:
            xs = np.linspace(x.min(), x.max(), 50)
            c.plot(xs, lin["intercept"] + lin["slope"] * xs, "-", color="black", lw=1,
                   label=f"OLS (R² {lin.get('r2', float('nan')):.2f})")
        c.axhline(0, color="grey", lw=0.5)
        c.set_ylabel("ΔG per step" if even else "dG/dt (Euler)")
        _legend(c)
    else:
        c.text(0.5, 0.5, "too few points", ha="center", va="center", transform=c.transAxes)
    c.set_title("(c) linearisation check: dG against G", fontsize=10)
    c.set_xlabel("G")

    # (d) accuracies
    if d is not None:
        accuracy = (fit or {}).get("accuracy") or {}
        # the two series side by side at each t, so neither hides the other
        dodge = 0.06 * (float(np.min(np.diff(np.unique(t)))) if len(np.unique(t)) > 1 else 1.0)
        for name, color, shift in (("solver", SOLVER, -dodge), ("verifier", VERIFIER, dodge)):
            col = f"{name}_accuracy"
            _errorbar(d, t + shift, _col(obs, col), _col(obs, col + "_lo"), _col(obs, col + "_hi"), color, name)
            acc = accuracy.get(name)
            if acc:
                _limit(d, acc.get("limit") or {"estimate": None}, color, f"{name} limit", pct=True)
        d.set_title("(d) accuracy", fontsize=10)
        d.set_xlabel(t_unit)
        d.set_ylim(-0.02, 1.02)
        _legend(d)
    if title:
        fig.suptitle(title.replace("$", r"\$"), fontsize=9, wrap=True)  # no mathtext from model names
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def simulation_figure(df: pd.DataFrame, lim: dict, path: Path, cross: bool) -> None:
    """U_s, U_v and G of a simulated trajectory (with the predicted limits when there is no external data)."""
    try:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(df["t"], df["solver_uncertainty"], "o-", label="solver U_s")
        ax.plot(df["t"], df["verifier_uncertainty"], "s-", label="verifier U_v")
        ax.plot(df["t"], df["gap"], "^-", label="gap G")
        if not cross:
            for key, style in (("solver_limit", "C0"), ("verifier_limit", "C1"), ("gap_limit", "C2")):
                ax.axhline(lim[key], color=style, ls=":", lw=1)
        ax.set_xlabel("t")
        ax.set_ylabel("uncertainty")
        ax.set_title("cross-improvement" if cross else "solver-verifier gap dynamics")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise SIBenchError(f"cannot write plot {path}: {exc.strerror or exc}") from None
