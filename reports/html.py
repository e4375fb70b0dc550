"""A static index.html: no server, no network at view time (images are relative PNG files), every text
HTML-escaped."""

from __future__ import annotations

from html import escape

import pandas as pd

from si_bench.reports.tables import interval_text, terminal_text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lead { color: #555; max-width: 1100px; font-size: 14px; }
div.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { font-weight: 600; }
td.text { max-width: 18em; overflow-wrap: break-word; }
td.model { min-width: 9em; } td.note { min-width: 7em; }
span.ci { color: #666; font-size: 11px; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note, td.note { color: #a15c00; }
.small { color: #666; font-size: 12px; }
img.plot { max-width: 100%; width: 900px; border: 1px solid #eee; }
dl.fit { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 13px; }
dl.fit dt { color: #555; } dl.fit dd { margin: 0; }
"""

TEXT_COLUMNS = {"model", "data", "verifier", "mode", "law", "note"}


def _e(x) -> str:
    return escape("" if x is None else terminal_text(x), quote=True)


def _fit_details(fit: dict, source: str) -> str:
    interval = fit.get("interval") or {}
    items = [("source", source),
             ("rate (per " + str(fit.get("rate_unit", "round")) + ")", interval_text(fit.get("rate"), 4)),
             ("U_s limit", interval_text(fit.get("solver_limit"), 4)),
             ("U_v limit", interval_text(fit.get("verifier_limit"), 4)),
             ("G_inf", interval_text(fit.get("gap_limit"), 4))]
    for series, acc in (fit.get("accuracy") or {}).items():
        items.append((f"{series} accuracy limit", interval_text(acc.get("limit"), pct=True) if "limit" in acc
                      else acc.get("reason", "–")))
    items += [("alpha/beta", interval_text(fit.get("alpha_over_beta"), 4)),
              ("t to eps", interval_text(fit.get("t_to_eps"), 4))]
    for name in ("rate", "solver_limit", "verifier_limit", "gap_limit"):
        if (fit.get(name) or {}).get("reason"):
            items.append((f"{name}: open or undefined", fit[name]["reason"]))
    r2 = fit.get("r2") or {}
    items.append(("R²", ", ".join(f"{k} {v:.3f}" for k, v in r2.items() if v is not None) or "–"))
    adequacy = fit.get("adequacy") or {}
    items.append(("coupled law", "conditional: " + str(adequacy.get("why")) if adequacy.get("conditional")
                  else "supported (the law test does not reject it)"))
    bt = fit.get("backtest") or {}
    if bt.get("skill_vs_persistence"):
        items.append((f"backtest skill (holdout {bt.get('holdout')})", ", ".join(
            f"{k} {v:+.2f}" for k, v in bt["skill_vs_persistence"].items() if v is not None)))
    elif bt.get("reason"):
        items.append(("backtest", bt["reason"]))
    items += [("intervals", f"{interval.get('method', '–')}; include {interval.get('includes', '–')}; exclude "
                            f"{interval.get('excludes', '–')}")]
    items += [("note", n) for n in fit.get("notes") or []]
    return "<dl class=\"fit\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def page(table: pd.DataFrame, headers: list[str], sections: list[dict], unit: str, legend: str,
         interval_columns: set[str]) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             "<title>si-bench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>si-bench leaderboard</h1>",
             "<p class=\"lead\">Solver uncertainty U<sub>s</sub> and verifier uncertainty U<sub>v</sub> "
             f"({_e('per-token' if unit == 'per_token' else 'total')} NLL) over self-improvement time, with the "
             "coupled law U(t) = U<sub>&infin;</sub> + A e<sup>&minus;&lambda;t</sup> fitted jointly (shared rate "
             f"&lambda;), and saturation fits of accuracy. {_e(legend)}</p>"]
    if table.empty:
        parts.append("<p>No trajectories.</p>")
    else:
        head = "".join(f"<th>{_e(h)}</th>" for h in headers)
        parts.append(f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>")
        for i, row in enumerate(table.to_dict("records")):
            cells = []
            for col in table.columns:
                cls = f" class=\"text {col}\"" if col in TEXT_COLUMNS else " class=\"num\""
                text = _e(row[col])
                if col in interval_columns and " [" in str(row[col]):
                    est, ci = str(row[col]).split(" [", 1)
                    text = f"{_e(est)}<br><span class=\"ci\">[{_e(ci)}</span>"
                if col == "model":
                    text = f"<a href=\"#run-{i}\">{text}</a>"
                cells.append(f"<td{cls}>{text}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
    for i, s in enumerate(sections):
        r = s["row"]
        parts.append(f"<h2 id=\"run-{i}\">{_e(r['model'])} · {_e(r['dataset'])}/{_e(r['split'])} · "
                     f"verifier {_e(r['verifier'])} · {_e(r.get('mode') or '')}</h2>")
        parts.append(f"<p class=\"small\">{_e(r.get('source'))} · run {_e(r['run_id'])} · {_e(r.get('seeds'))} "
                     f"seed(s) · {_e(r.get('n_points'))} points (t in {_e(r.get('t_unit'))})</p>")
        if s.get("note"):
            parts.append(f"<p class=\"note\">{_e(s['note'])}</p>")
        if s.get("fit"):
            parts.append(_fit_details(s["fit"], str(r.get("source"))))
        alt = _e("trajectory plot: " + str(r["model"]))
        parts.append(f"<img class=\"plot\" src=\"{_e(r['plot'])}\" alt=\"{alt}\">")
    parts.append("<p class=\"small\">Generated by si-bench; rebuild with <code>si-bench leaderboard --from-parquet "
                 "leaderboard/data.parquet</code>.</p></body></html>")
    return "\n".join(parts) + "\n"
