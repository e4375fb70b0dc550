"""The leaderboard files: leaderboard.md/.csv/.json, index.html, plots/*.png and data.parquet.

The numbers come from the fit pipeline (si_bench.trajectories.fit_store); `frames` shapes them into four frames
(summary rows, fits rows, fitted curves, one meta row per trajectory). They travel in one long parquet
file (column `kind`), so the whole leaderboard can be rebuilt from it alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from si_bench.errors import SIBenchError
from si_bench.fit import clean
from si_bench.options import Options, check_directory, check_output, option
from si_bench.reports.tables import frame_records, interval_text, is_missing, terminal_text, to_csv
from si_bench.trajectories import FitEntry

KINDS = ("summary", "fits", "curves", "meta")

# The headline quantities: where each sits in a fit's JSON.
QUANTITIES = {
    "solver_accuracy_limit": ("accuracy", "solver", "limit"),
    "verifier_accuracy_limit": ("accuracy", "verifier", "limit"),
    "solver_limit": ("solver_limit",), "verifier_limit": ("verifier_limit",), "gap_limit": ("gap_limit",),
    "rate": ("rate",),
}
COLUMNS = [
    ("model", "model"), ("data", "data"), ("verifier", "verifier"), ("mode", "mode"), ("seeds", "seeds"),
    ("t_last", "t (last)"), ("solver_accuracy", "solver acc (t0 → last)"),
    ("solver_accuracy_limit", "solver acc limit [95% CI]"), ("verifier_accuracy_limit", "verifier acc limit [95% CI]"),
    ("solver_limit", "U_s limit [95% CI]"), ("verifier_limit", "U_v limit [95% CI]"),
    ("gap_limit", "G_inf [95% CI]"), ("rate", "rate [95% CI]"), ("r2", "R² U_s / U_v / G"),
    ("law", "coupled law"), ("note", "note"),
]
LEGEND = ("95% intervals; 'open': the data do not determine that end, 'not identified': no limit the data can "
          "pin down (reasons in leaderboard.csv/.json and each row's section). Limit intervals span the candidate "
          "laws the data do not reject (coupled, separate exponentials, power laws). 'conditional': an F test "
          "rejects the coupled law in favour of another. "
          "Reference rows are the paper's curves digitised from its figure (plot units, not measured here).")


@dataclass
class PublishOptions(Options):
    """Where and how the leaderboard is written."""

    out: str = option("leaderboard", "Output directory.", output="directory")
    save_fits: bool = option(True, "Save the fits into the store.", flag="--save-fits/--no-save-fits")
    reference: bool = option(True, "Add the paper's Phi-4-mini curves (digitised from its figure) as reference rows.",
                             flag="--reference/--no-reference")


@dataclass
class RebuildOptions(Options):
    from_parquet: str | None = option(None, "Rebuild from an earlier data.parquet export instead of the store.")


FIT_COLUMNS = ["fit_key", "run_id", "dataset", "split", "verifier", "unit", "law", "quantity", "estimate", "ci_low",
               "ci_high", "reason", "r2", "details", "fitted_at"]
CURVE_EXTENSION = 0.25  # the fitted curves run a quarter of the observed span past the last point


# --------------------------------------------------------------------------- from fits to frames


def _curve(entry: FitEntry) -> pd.DataFrame:
    t = entry.trajectory.t
    t0, t1 = float(t.min()), float(t.max())
    grid = np.linspace(t0, t1 + CURVE_EXTENSION * (t1 - t0), 121)
    frame = pd.DataFrame({"curve_" + k: np.asarray(v, dtype=float) for k, v in entry.result.curve(grid).items()})
    frame.insert(0, "fit_key", entry.trajectory.key)
    return frame


def _meta(entry: FitEntry) -> dict:
    tr, res = entry.trajectory, entry.result
    return {"fit_key": tr.key, "run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset, "split": tr.split,
            "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit, "t_unit": tr.t_unit, "source": tr.source,
            "seeds": len(tr.run_ids) or 1, "n_points": tr.n_points, "t_last": float(tr.t.max()), "note": entry.note,
            "verifier_signal": entry.verifier_signal,
            "eval_ids": json.dumps(tr.eval_ids),
            "fit_json": json.dumps(res.to_json(), allow_nan=False) if res is not None else None}


def frames(entries: list[FitEntry], fit_rows: list[dict], summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Everything the leaderboard shows: summary rows, the entries' `fits` rows (as stored), fitted curves and
    one meta row per trajectory."""
    fits = pd.DataFrame(fit_rows, columns=FIT_COLUMNS)
    fits["details"] = [json.dumps(clean(d), sort_keys=True) for d in fits["details"]]
    fits["estimate"] = fits["estimate"].astype(float)
    curves = [_curve(e) for e in entries if e.result is not None]
    return {"summary": summary, "fits": fits,
            "curves": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame({"fit_key": [], "curve_t": []}),
            "meta": pd.DataFrame([_meta(e) for e in entries])}


def output_dir(out_dir: str | Path) -> Path:
    """The leaderboard's folder, checked now and made only when the files are written: an unwritable --out fails
    before any fitting, and a refused command leaves no empty folder behind."""
    out = Path(out_dir)
    check_output("--out", str(out_dir), "directory")
    check_directory(out, "output directory")
    return out


def publish(data: dict[str, pd.DataFrame], out_dir: Path) -> dict:
    """Export the frames to out_dir/data.parquet and render every file from exactly what was exported."""
    parquet = out_dir / "data.parquet"
    out_dir.mkdir(exist_ok=True)
    write_data(data, parquet)
    return render(read_data(parquet), out_dir)


def publish_from(parquet: Path, out_dir: Path) -> dict:
    """Rebuild the leaderboard from an earlier data.parquet export (no store needed)."""
    if not parquet.is_file():
        raise SIBenchError(f"parquet export not found: {parquet}")
    data = read_data(parquet)
    out_dir.mkdir(exist_ok=True)
    if parquet.resolve() != (out_dir / "data.parquet").resolve():
        write_data(data, out_dir / "data.parquet")
    return render(data, out_dir)


# --------------------------------------------------------------------------- the parquet export


def write_data(frames: dict[str, pd.DataFrame], path: Path) -> None:
    """All frames in one parquet file, told apart by the column `kind`."""
    parts = []
    for kind in KINDS:
        f = frames.get(kind)
        if f is None or f.empty:
            continue
        f = f.copy()
        for col in f.columns:  # one type per column across kinds: numbers as float, the rest as text
            if f[col].dtype == object or str(f[col].dtype).startswith("datetime"):
                values = [v for v in f[col] if not is_missing(v)]
                if values and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                  for v in values):
                    f[col] = pd.to_numeric(f[col], errors="coerce").astype(float)
                elif not values:
                    f[col] = pd.Series([None] * len(f), dtype=object, index=f.index)
                else:
                    f[col] = [None if is_missing(v) else (v.isoformat(sep=" ") if hasattr(v, "isoformat") else str(v))
                              for v in f[col]]
        f.insert(0, "kind", kind)
        parts.append(f)
    data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"kind": pd.Series([], dtype=str)})
    data.to_parquet(path, index=False)


def read_data(path: Path) -> dict[str, pd.DataFrame]:
    try:
        data = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - a broken file is a user error
        raise SIBenchError(f"cannot read {path}: {type(exc).__name__}") from None
    if "kind" not in data.columns:
        raise SIBenchError(f"{path} is not a leaderboard export (no column 'kind')")
    out = {}
    for kind in KINDS:
        f = data[data["kind"] == kind].drop(columns="kind").dropna(axis=1, how="all").reset_index(drop=True)
        out[kind] = f
    return out


# --------------------------------------------------------------------------- the table


def _num(v):
    if is_missing(v):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def slug(key: str) -> str:
    """A file name for a trajectory: readable part plus a hash (no collisions, no odd characters)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:60]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def trajectory_rows(frames: dict[str, pd.DataFrame], meta_row: dict) -> pd.DataFrame:
    """The summary rows of one trajectory, ordered by t."""
    summary = frames["summary"]
    ids = json.loads(meta_row.get("eval_ids") or "[]")
    if summary.empty or not ids:
        return summary.iloc[0:0]
    return summary[summary["eval_id"].isin(ids)].sort_values("t").reset_index(drop=True)


def shown(meta: pd.DataFrame) -> pd.DataFrame:
    """Leaderboard rows: the test split of each run (all its splits when it has no test split)."""
    if meta.empty:
        return meta
    has_test = set(meta.loc[meta["split"] == "test", "run_id"])
    keep = (meta["split"] == "test") | ~meta["run_id"].isin(has_test)
    return meta[keep]


def _quantity(fit: dict, path: tuple[str, ...]) -> dict:
    """A headline quantity's JSON ({estimate, ci95, reason}) out of a fit; {} where it is absent."""
    node = fit
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and path[0] == "accuracy":
        acc = (fit.get("accuracy") or {}).get(path[1])
        return {"estimate": None, "reason": acc.get("reason")} if acc else {}
    return node or {}


def _law(fit: dict | None) -> tuple[str | None, str | None]:
    if not fit:
        return None, None
    adequacy = fit.get("adequacy") or {}
    return ("conditional" if adequacy.get("conditional") else "supported"), adequacy.get("why")


def _row(m: dict, obs: pd.DataFrame) -> dict:
    fit = json.loads(m["fit_json"]) if not is_missing(m.get("fit_json")) else None
    acc = [_num(v) for v in obs["solver_accuracy"]] if "solver_accuracy" in obs else []
    row = {"model": m["model"], "dataset": m["dataset"], "split": m["split"], "verifier": m["verifier"],
           "mode": None if is_missing(m.get("mode")) else m["mode"], "source": m.get("source") or "measured",
           "seeds": int(_num(m.get("seeds")) or 1), "t_last": _num(m.get("t_last")), "n_points": int(m["n_points"]),
           "t_unit": m["t_unit"], "unit": m["unit"], "solver_accuracy_initial": acc[0] if acc else None,
           "solver_accuracy_final": acc[-1] if acc else None}
    for name, path in QUANTITIES.items():
        q = _quantity(fit or {}, path)
        lo, hi = (q.get("ci95") or [None, None])
        row.update({name: _num(q.get("estimate")), f"{name}_lo": _num(lo), f"{name}_hi": _num(hi),
                    f"{name}_reason": q.get("reason")})
    r2 = (fit or {}).get("r2") or {}
    row.update({f"r2_{k}": _num(r2.get(k)) for k in ("solver", "verifier", "gap")})
    row["law"], row["law_why"] = _law(fit)
    skills = ((fit or {}).get("backtest") or {}).get("skill_vs_persistence") or {}
    finite = {k: v for k, v in skills.items() if _num(v) is not None}
    row["best_law"] = max(sorted(finite), key=lambda k: finite[k]) if finite else None
    row["best_skill"], row["coupled_skill"] = finite.get(row["best_law"]), finite.get("coupled")
    note = None if is_missing(m.get("note")) else str(m["note"])
    row["note"] = "too few points to fit" if note and note.startswith("too few points") else (
        note or (None if fit else "not fitted"))
    signal = None if is_missing(m.get("verifier_signal")) else str(m["verifier_signal"])
    row["note"] = "; ".join(n for n in (row["note"], signal) if n) or None
    row.update({"run_id": m["run_id"], "fit_key": m["fit_key"], "plot": f"plots/{slug(m['fit_key'])}.png"})
    return row


def build_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One numeric row per shown trajectory (CIs as _lo/_hi, open ends NULL with a _reason); measured rows
    first, by dataset and final accuracy, then the reference rows."""
    rows = [_row(m, trajectory_rows(frames, m)) for m in shown(frames["meta"]).to_dict("records")]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = table["solver_accuracy_final"].fillna(-1.0)
    reference = table["source"] != "measured"
    table = table.assign(_r=reference, _o=-order).sort_values(["_r", "dataset", "_o", "model", "run_id"])
    return table.drop(columns=["_r", "_o"]).reset_index(drop=True)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _cell(r: dict, col: str) -> str:
    if col in QUANTITIES:
        value = {"estimate": r.get(col), "ci95": [r.get(f"{col}_lo"), r.get(f"{col}_hi")]}
        if value["estimate"] is None and not r.get(f"{col}_reason"):
            return "–"
        return interval_text(value, pct=col.endswith("accuracy_limit"))
    if col == "data":
        return f"{r['dataset']}/{r['split']}"
    if col == "solver_accuracy":
        return f"{_pct(r.get('solver_accuracy_initial'))} → {_pct(r.get('solver_accuracy_final'))}"
    if col == "r2":
        return " / ".join("–" if r.get(f"r2_{k}") is None else f"{r[f'r2_{k}']:.3f}"
                          for k in ("solver", "verifier", "gap"))
    if col == "t_last":
        v = r.get("t_last")
        return "–" if v is None else f"{v:g} {r['t_unit']}{'s' if v != 1 else ''}"
    if col == "model" and r.get("source", "measured") != "measured":
        return f"{r['model']} (reference)"
    v = r.get(col)
    return "" if v is None else str(v)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells for markdown and HTML."""
    rows = [{col: _cell({k: (None if is_missing(v) else v) for k, v in r.items()}, col) for col, _ in COLUMNS}
            for r in table.to_dict("records")]
    return pd.DataFrame(rows, columns=[c for c, _ in COLUMNS])


NUMERIC_COLUMNS = {*QUANTITIES, "seeds", "t_last", "solver_accuracy", "r2"}
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|])")


def _md_cell(c, column: str) -> str:
    """Table-safe and inert: no pipes, newlines, links or raw HTML from names; numbers stay readable."""
    text = terminal_text(str(c).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return text if column in NUMERIC_COLUMNS else MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown(table: pd.DataFrame, unit: str) -> str:
    disp = display_table(table)
    cells = [[_md_cell(c, col) for c, col in zip(row, disp.columns, strict=True)] for row in disp.values.tolist()]
    head = ["# si-bench leaderboard", "",
            f"Coupled-law fits U(t) = U_inf + A e^(-rate t) of solver (U_s) and verifier (U_v) uncertainty "
            f"({'per-token' if unit == 'per_token' else 'total'} NLL), and saturation fits of accuracy. {LEGEND}", ""]
    if not cells:
        return "\n".join(head + ["No trajectories.", ""])
    return "\n".join(head) + "\n" + tabulate(cells, headers=[h for _, h in COLUMNS], tablefmt="github",
                                             disable_numparse=True) + "\n"


# --------------------------------------------------------------------------- everything


def render(frames: dict[str, pd.DataFrame], out_dir: Path) -> dict:
    from si_bench.reports import html, plots

    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    table = build_table(frames)
    meta = frames["meta"]
    unit = str(meta["unit"].iloc[0]) if not meta.empty else "total"
    files = []
    md = markdown(table, unit)
    (out_dir / "leaderboard.md").write_text(md, encoding="utf-8")
    to_csv(table, out_dir / "leaderboard.csv")
    (out_dir / "leaderboard.json").write_text(
        json.dumps({"unit": unit, "rows": frame_records(table)}, allow_nan=False, indent=1) + "\n", encoding="utf-8")
    files += ["leaderboard.md", "leaderboard.csv", "leaderboard.json"]
    sections = []
    by_key = {m["fit_key"]: m for m in meta.to_dict("records")}
    for r in table.to_dict("records"):
        m = by_key[r["fit_key"]]
        obs = trajectory_rows(frames, m)
        curve = frames["curves"]
        curve = curve[curve["fit_key"] == r["fit_key"]] if not curve.empty else curve
        fit = json.loads(m["fit_json"]) if not is_missing(m.get("fit_json")) else None
        path = out_dir / r["plot"]
        reference = r.get("source", "measured") != "measured"
        plots.trajectory_figure(path, obs, curve, fit, unit=unit, t_unit=str(m["t_unit"]),
                                title=f"{r['model']} · {r['dataset']}/{r['split']} · {r['verifier']}"
                                      + (" · reference, digitised from the paper" if reference else ""),
                                y_label="uncertainty (the paper's plot units)" if reference else None)
        files.append(r["plot"])
        r = {k: (None if is_missing(v) else v) for k, v in r.items()}
        sections.append({"row": r, "fit": fit, "note": r["note"]})
    page = html.page(display_table(table), [h for _, h in COLUMNS], sections, unit, LEGEND, set(QUANTITIES))
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    files += ["index.html", "data.parquet"]
    return {"out_dir": str(out_dir), "files": files, "rows": len(table)}
