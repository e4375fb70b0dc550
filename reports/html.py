"""A static index.html: no server, no network at view time (images are relative PNG files), every text
HTML-escaped."""

from __future__ import annotations

import re
from html import escape

import pandas as pd

from si_bench.reports.tables import interval_text, terminal_text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; overflow-wrap: anywhere; }
p.lead { color: #444; max-width: 1100px; font-size: 14px; }
details.guide { max-width: 1100px; font-size: 13px; margin: 8px 0 16px; }
details.guide summary { cursor: pointer; font-weight: 600; }
dl.guide { display: grid; grid-template-columns: max-content auto; gap: 4px 14px; margin: 8px 0; }
dl.guide dt { font-weight: 600; } dl.guide dd { margin: 0; color: #333; }
label.toggle { font-size: 13px; display: inline-block; margin: 4px 0 8px; cursor: pointer; }
div.scroll { overflow-x: auto; max-width: 100%; }
table.board { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { font-weight: 600; background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
td.text { max-width: 18em; overflow-wrap: break-word; }
td.model { min-width: 9em; } td.note { min-width: 7em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
span.ci { color: #666; font-size: 11px; }
span.why { color: #777; font-style: italic; white-space: normal; }
.note, td.note { color: #a15c00; }
.small { color: #666; font-size: 12px; }
.more, .extra { display: none; }
#all-columns:checked ~ div.scroll .more, #all-columns:checked ~ div.scroll .extra { display: table-cell; }
@media (min-width: 1000px) { .more { display: table-cell; } }
div.run { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
div.details { flex: 1 1 420px; min-width: 0; }
img.plot { width: 440px; max-width: 100%; height: auto; border: 1px solid #eee; }
dl.fit { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 13px; }
dl.fit dt { color: #555; } dl.fit dd { margin: 0; overflow-wrap: anywhere; }
/* A phone: every row a card of its main columns, label beside value; the rest with "all columns". */
@media (max-width: 700px) {
  body { margin: 12px; }
  dl.guide, dl.fit { grid-template-columns: 1fr; } dl.guide dd, dl.fit dd { margin: 0 0 6px 0; }
  table.board, table.board tbody { display: block; }
  table.board thead { display: none; }
  table.board tr { display: block; border: 1px solid #ccc; margin: 0 0 10px; padding: 4px 0; }
  table.board td { display: grid; grid-template-columns: 8.5em 1fr; gap: 6px; border: none; text-align: left;
                   max-width: none; white-space: normal; background: none !important; }
  table.board td::before { content: attr(data-label); font-weight: 600; color: #444; }
  table.board td.more, table.board td.extra { display: none; }
  #all-columns:checked ~ div.scroll td.more, #all-columns:checked ~ div.scroll td.extra { display: grid; }
}
"""

# Columns by when they show: always; on a wide screen; with "all columns" (the rest on demand).
MORE_COLUMNS = {"seeds", "t_last", "solver_accuracy", "rate", "note"}
EXTRA_COLUMNS = {"solver_accuracy_limit", "verifier_accuracy_limit", "r2"}
WHY_CELLS = {"not fitted", "not in the figure", "–"}
TEXT_COLUMNS = {"model", "data", "verifier", "mode", "law", "note"}


def _e(x) -> str:
    return escape("" if x is None else terminal_text(x), quote=True)


def _code(text: str) -> str:
    """Escaped text whose `names` show as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


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


def _cell(col: str, value, label: str, row_index: int, interval_columns: set[str]) -> str:
    classes = ["text", col] if col in TEXT_COLUMNS else ["num"]
    classes += ["more"] if col in MORE_COLUMNS else ["extra"] if col in EXTRA_COLUMNS else []
    text = _e(value)
    if str(value) in WHY_CELLS and col not in ("model", "data", "verifier", "mode"):
        text = f"<span class=\"why\">{text}</span>"
    elif col in interval_columns and " [" in str(value):
        est, ci = str(value).split(" [", 1)
        text = f"{_e(est)}<br><span class=\"ci\">[{_e(ci)}</span>"
    if col == "model":
        text = f"<a href=\"#run-{row_index}\">{text}</a>"
    return f"<td class=\"{' '.join(classes)}\" data-label=\"{_e(label)}\"><span>{text}</span></td>"


def _table(table: pd.DataFrame, headers: list[str], interval_columns: set[str]) -> list[str]:
    labels = dict(zip(table.columns, headers, strict=True))
    head = "".join(
        f"<th class=\"{'more' if col in MORE_COLUMNS else 'extra' if col in EXTRA_COLUMNS else 'main'}\">{_e(h)}</th>"
        for col, h in labels.items())
    parts = ["<input type=\"checkbox\" id=\"all-columns\"><label class=\"toggle\" for=\"all-columns\"> all columns "
             "(accuracy limits, R²; on a narrow screen also seeds, t, accuracy, rate and notes)</label>",
             f"<div class=\"scroll\"><table class=\"board\"><thead><tr>{head}</tr></thead><tbody>"]
    for i, row in enumerate(table.to_dict("records")):
        parts.append("<tr>" + "".join(_cell(col, row[col], labels[col], i, interval_columns)
                                      for col in table.columns) + "</tr>")
    parts.append("</tbody></table></div>")
    return parts


def page(table: pd.DataFrame, headers: list[str], sections: list[dict], guide: list[tuple[str, str]],
         interval_columns: set[str], intro: str) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             "<title>si-bench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>si-bench leaderboard</h1>",
             f"<p class=\"lead\">{_e(intro)} Lower uncertainty (NLL) is better, higher accuracy is better; [a, b] is a "
             "95% interval. <a href=\"#how-to-read\">How to read it</a> (below the table) says what a row is and "
             "what the limits, G<sub>&infin;</sub>, 'open', 'not identified' and 'conditional' mean.</p>"]
    parts += ["<p>No trajectories.</p>"] if table.empty else _table(table, headers, interval_columns)
    parts.append("<details class=\"guide\" id=\"how-to-read\" open><summary>How to read it</summary>"
                 "<dl class=\"guide\">" + "".join(f"<dt>{_e(term)}</dt><dd>{_code(text)}</dd>" for term, text in guide)
                 + "</dl></details>")
    for i, s in enumerate(sections):
        r = s["row"]
        parts.append(f"<h2 id=\"run-{i}\">{_e(r['model'])} · {_e(r['dataset'])}/{_e(r['split'])} · "
                     f"verifier {_e(r['verifier'])} · {_e(r.get('mode') or '')}</h2>")
        parts.append(f"<p class=\"small\">{_e(r.get('source'))} · run {_e(r['run_id'])} · {_e(r.get('seeds'))} "
                     f"seed(s) · {_e(r.get('n_points'))} points (t in {_e(r.get('t_unit'))})</p>")
        parts.append("<div class=\"run\"><div class=\"details\">")
        if s.get("note"):
            parts.append(f"<p class=\"note\">{_e(s['note'])}</p>")
        if s.get("fit"):
            parts.append(_fit_details(s["fit"], str(r.get("source"))))
        alt = _e("trajectory plot: " + str(r["model"]))
        parts.append(f"</div><img class=\"plot\" src=\"{_e(r['plot'])}\" alt=\"{alt}\"></div>")
    parts.append("<p class=\"small\">Generated by si-bench; rebuild with <code>si-bench leaderboard --from-parquet "
                 "leaderboard/data.parquet</code>.</p></body></html>")
    return "\n".join(parts) + "\n"
