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
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from si_bench.errors import SIBenchError
from si_bench.fit import FitResult, clean
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
# How to read the leaderboard: the page, leaderboard.md, leaderboard.json and the CSV's companion
# (leaderboard.columns.csv) all say this. {unit} is the NLL unit of the table (total or per-token).
GUIDE = [
    ("a row", "one model × dataset/split × verifier × mode, its replicate seeds pooled into one trajectory (`seeds` "
              "counts them; the intervals then resample runs, then prompts within runs). Mode `fixed`: the picks are "
              "made once, from the base model, and t counts epochs over them; `regenerate`: new candidates and "
              "picks every round, and t counts rounds. Measured rows (the test split of each run) come first, then "
              "the paper's curves as reference rows: digitised from its figure, in its plot units, not measured "
              "here."),
    ("better", "U_s (solver) is the mean {unit} NLL (nats) of the model's own samples, U_v (verifier) that of the "
               "one its own verifier picks from each prompt's N (best of N): lower is better, for a value and for "
               "its limit. Accuracy: higher is better. G = U_s − U_v, the solver-verifier gap, is what "
               "self-improvement on its own verifier still has to gain."),
    ("limits", "the coupled law U(t) = U_inf + A·e^(−rate·t), fitted to U_s and U_v with one shared rate, says where "
               "each goes as t grows: the U_s limit is how far self-improvement can take the solver, the U_v limit "
               "where its verifier ends; G_inf = U_s limit − U_v limit is the gap left at the end (near 0: the "
               "verifier has nothing left to teach). rate: per epoch or round, higher converges faster. A limit's "
               "95% interval spans the coupled law and every other candidate law the data do not reject (separate "
               "exponentials, power laws). The accuracy limits come from saturation fits of accuracy over t."),
    ("[a, b]", "a 95% confidence interval."),
    ("open", "that end of the interval is not determined by the data: every value beyond the other end fits as "
             "well (a limit can be open at one end and bounded at the other)."),
    ("not identified", "the data pin down no limit at all (for accuracy: no significant change over t); the reason "
                       "is in the row's section and in leaderboard.csv/.json (`*_reason`)."),
    ("coupled law", "'supported': an F test at 5% does not reject the coupled law in favour of separate "
                    "exponentials or a power law. 'conditional': it does, or the trajectory has too few points to "
                    "test it; the coupled law's own curve and rate then hold only as far as the law does (why: "
                    "`law_why` and the row's section)."),
    ("no number", "'not fitted': too few points for a fit (see the note); 'not in the figure': the paper's figure "
                  "shows no accuracy; '–': not measured."),
]
NOT_FITTED, NOT_IN_FIGURE = "not fitted", "not in the figure"
# What each column of leaderboard.csv (and each key of a leaderboard.json row) holds, and which way is better.
QUANTITY_DOCS = {
    "solver_accuracy_limit": ("limit of solver accuracy (a saturation fit over t), a share in [0, 1]", "higher"),
    "verifier_accuracy_limit": ("limit of the verifier's picks' accuracy (a saturation fit over t)", "higher"),
    "solver_limit": ("U_s limit: where solver uncertainty (NLL, nats) goes as t grows (coupled law)", "lower"),
    "verifier_limit": ("U_v limit: where verifier uncertainty (NLL of the picks) goes as t grows", "lower"),
    "gap_limit": ("G_inf = U_s limit − U_v limit: the solver-verifier gap left at the end (near 0: nothing left "
                  "for self-improvement to gain)", ""),
    "rate": ("the coupled law's shared rate, per t_unit", "higher: faster"),
}
COLUMN_DOCS = {
    "model": ("the model (a preset, a local directory or a hub id)", ""),
    "dataset": ("the dataset", ""), "split": ("its split the trajectory measures", ""),
    "verifier": ("the self-verification method: tf (True/False) or qe (quality rating)", ""),
    "mode": ("fixed (picks made once, t in epochs) or regenerate (new picks every round, t in rounds)", ""),
    "source": ("measured, or where a reference row comes from", ""),
    "seeds": ("replicate runs pooled into this row", ""),
    "t_last": ("the last t measured", ""), "n_points": ("measurements in the trajectory", ""),
    "t_unit": ("what t counts: epoch or round", ""), "unit": ("NLL unit: total or per_token", ""),
    "solver_accuracy_initial": ("solver accuracy at the first t", "higher"),
    "solver_accuracy_final": ("solver accuracy at the last t", "higher"),
    **{column: doc for q, (meaning, better) in QUANTITY_DOCS.items() for column, doc in (
        (q, (f"{meaning}; empty: not identified (why: {q}_reason) or not fitted (see note)", better)),
        (f"{q}_lo", (f"low end of its 95% interval; empty: open, the data do not determine it (why: {q}_reason)",
                     "")),
        (f"{q}_hi", (f"high end of its 95% interval; empty: open, the data do not determine it (why: {q}_reason)",
                     "")),
        (f"{q}_reason", ("why an end is open or the limit is not identified; empty when both ends are determined",
                         "")))},
    "r2_solver": ("R² of the coupled law on U_s", "higher"), "r2_verifier": ("R² of the coupled law on U_v", "higher"),
    "r2_gap": ("R² of the coupled law on G = U_s − U_v", "higher"),
    "law": ("the coupled law: supported (the law test does not reject it) or conditional (see law_why); empty: not "
            "fitted", ""),
    "law_why": ("why the law is conditional", ""),
    "best_law": ("the law with the best forecast backtest skill", ""),
    "best_skill": ("that law's skill against persistence (1 perfect, 0 no better than the last value)", "higher"),
    "coupled_skill": ("the coupled law's backtest skill against persistence", "higher"),
    "note": ("why a row has no fit (e.g. too few points to fit), and what its verifier's signal says", ""),
    "run_id": ("the run (the first seed's run when seeds are pooled)", ""),
    "fit_key": ("the trajectory's key in the store's fits table", ""), "plot": ("its figure, beside this file", ""),
}
ACCURACY_CELLS = {"solver_accuracy", "solver_accuracy_limit", "verifier_accuracy_limit"}


def _unit(unit: str) -> str:
    return "per-token" if unit == "per_token" else "total"


def guide(unit: str) -> list[tuple[str, str]]:
    """GUIDE with the table's NLL unit filled in."""
    return [(term, text.replace("{unit}", _unit(unit))) for term, text in GUIDE]


def intro(unit: str) -> str:
    return (f"Self-improvement trajectories of solver and verifier uncertainty ({_unit(unit)} NLL) and accuracy, "
            "fitted to say where each is heading: one row per trajectory, with the limits, their 95% intervals and "
            "whether the law behind them holds.")


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


def _curve(entry: FitEntry, result: FitResult) -> pd.DataFrame:
    t = entry.trajectory.t
    t0, t1 = float(t.min()), float(t.max())
    grid = np.linspace(t0, t1 + CURVE_EXTENSION * (t1 - t0), 121)
    frame = pd.DataFrame({"curve_" + k: np.asarray(v, dtype=float) for k, v in result.curve(grid).items()})
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
    curves = [_curve(e, e.result) for e in entries if e.result is not None]
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
    node: Any = fit
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


def _missing(r: dict, col: str) -> str:
    """What a cell without a number says instead (GUIDE's "no number")."""
    if col in ACCURACY_CELLS and r.get("source", "measured") != "measured":
        return NOT_IN_FIGURE
    if r.get("law") is None:
        return NOT_FITTED
    return "–"


def _cell(r: dict, col: str) -> str:
    if col in QUANTITIES:
        value = {"estimate": r.get(col), "ci95": [r.get(f"{col}_lo"), r.get(f"{col}_hi")]}
        if value["estimate"] is None and not r.get(f"{col}_reason"):
            return _missing(r, col)
        return interval_text(value, pct=col.endswith("accuracy_limit"))
    if col == "data":
        return f"{r['dataset']}/{r['split']}"
    if col == "solver_accuracy":
        if r.get("solver_accuracy_initial") is None and r.get("solver_accuracy_final") is None:
            return _missing(r, col)
        return f"{_pct(r.get('solver_accuracy_initial'))} → {_pct(r.get('solver_accuracy_final'))}"
    if col == "r2":
        if all(r.get(f"r2_{k}") is None for k in ("solver", "verifier", "gap")):
            return _missing(r, col)
        return " / ".join("–" if r.get(f"r2_{k}") is None else f"{r[f'r2_{k}']:.3f}"
                          for k in ("solver", "verifier", "gap"))
    if col == "law" and r.get("law") is None:
        return NOT_FITTED
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
# What can start markup inside a GitHub table cell; with the brackets escaped no parenthesis can make a link.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md_cell(c, column: str) -> str:
    """Table-safe and inert: no pipes, newlines, links or raw HTML from names; numbers stay readable."""
    text = terminal_text(str(c).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return text if column in NUMERIC_COLUMNS else MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown(table: pd.DataFrame, unit: str) -> str:
    disp = display_table(table)
    cells = [[_md_cell(c, col) for c, col in zip(row, disp.columns, strict=True)] for row in disp.values.tolist()]
    head = ["# si-bench leaderboard", "", intro(unit), "", "How to read it:", "",
            *[f"- **{term}**: {text}" for term, text in guide(unit)], ""]
    if not cells:
        return "\n".join(head + ["No trajectories.", ""])
    return "\n".join(head) + "\n" + tabulate(cells, headers=[h for _, h in COLUMNS], tablefmt="github",
                                             disable_numparse=True) + "\n"


def columns_companion(table: pd.DataFrame, unit: str) -> pd.DataFrame:
    """leaderboard.columns.csv: how to read leaderboard.csv, then what each of its columns holds and which way is
    better."""
    rows = [{"column": f"({term})", "meaning": text, "better": ""} for term, text in guide(unit)]
    rows += [{"column": c, "meaning": COLUMN_DOCS[c][0], "better": COLUMN_DOCS[c][1]} for c in table.columns]
    return pd.DataFrame(rows, columns=["column", "meaning", "better"])


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
    to_csv(columns_companion(table, unit), out_dir / "leaderboard.columns.csv")
    (out_dir / "leaderboard.json").write_text(json.dumps(
        {"unit": unit, "guide": dict(guide(unit)), "columns": {c: COLUMN_DOCS[c][0] for c in table.columns},
         "rows": frame_records(table)}, allow_nan=False, indent=1) + "\n", encoding="utf-8")
    files += ["leaderboard.md", "leaderboard.csv", "leaderboard.columns.csv", "leaderboard.json"]
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
    page = html.page(display_table(table), [h for _, h in COLUMNS], sections, guide(unit), set(QUANTITIES),
                     intro(unit))
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    files += ["index.html", "data.parquet"]
    return {"out_dir": str(out_dir), "files": files, "rows": len(table)}
