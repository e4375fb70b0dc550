"""A static index.html: no server, no network at view time (images are relative PNG files), every text
HTML-escaped."""

from __future__ import annotations

from html import escape

import pandas as pd

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

CI_COLUMNS = {"solver_limit", "verifier_limit", "gap_limit", "rate"}
TEXT_COLUMNS = {"model", "dataset", "split", "verifier", "mode", "best_law", "note"}


def _e(x) -> str:
    return escape("" if x is None else str(x), quote=True)


def _ci(q: dict | None) -> str:
    if not q or q.get("estimate") is None:
        return "–" + (f" ({q['reason']})" if q and q.get("reason") else "")
    s = f"{q['estimate']:.4g}"
    if q.get("ci95") and None not in q["ci95"]:
        s += f" [{q['ci95'][0]:.4g}, {q['ci95'][1]:.4g}]"
    return s


def _fit_details(fit: dict) -> str:
    items = [("rate (per " + str(fit.get("rate_unit", "round")) + ")", _ci(fit.get("rate"))),
             ("U_s limit", _ci(fit.get("solver_limit"))), ("U_v limit", _ci(fit.get("verifier_limit"))),
             ("G_inf", _ci(fit.get("gap_limit"))), ("alpha/beta", _ci(fit.get("alpha_over_beta"))),
             ("t to eps", _ci(fit.get("t_to_eps")))]
    r2 = fit.get("r2") or {}
    items.append(("R²", ", ".join(f"{k} {v:.3f}" for k, v in r2.items() if v is not None) or "–"))
    lin = fit.get("linearisation") or {}
    if "rate" in lin:
        items.append(("linearised dG on G", f"rate {_ci(lin.get('rate'))}; G_inf {_ci(lin.get('gap_limit'))}"))
    bt = fit.get("backtest") or {}
    if bt.get("skill_vs_persistence"):
        items.append((f"backtest skill (holdout {bt.get('holdout')})", ", ".join(
            f"{k} {v:+.2f}" for k, v in bt["skill_vs_persistence"].items() if v is not None)))
    elif bt.get("reason"):
        items.append(("backtest", bt["reason"]))
    for n in fit.get("notes") or []:
        items.append(("note", n))
    return "<dl class=\"fit\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def page(table: pd.DataFrame, headers: list[str], sections: list[dict], unit: str) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             "<title>si-bench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>si-bench leaderboard</h1>",
             "<p class=\"lead\">Solver uncertainty U<sub>s</sub> and verifier uncertainty U<sub>v</sub> "
             f"({_e('per-token' if unit == 'per_token' else 'total')} NLL) over self-improvement time, with the "
             "coupled law U(t) = U<sub>&infin;</sub> + A e<sup>&minus;&lambda;t</sup> fitted jointly (shared rate "
             "&lambda;). Brackets: 95% bootstrap intervals over prompts. Skill: forecast backtest against "
             "persistence (1 &minus; RMSE / RMSE<sub>persistence</sub>; &gt; 0 beats it).</p>"]
    if table.empty:
        parts.append("<p>No trajectories.</p>")
    else:
        parts.append("<div class=\"scroll\"><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>")
        for i, row in enumerate(table.to_dict("records")):
            cells = []
            for col in table.columns:
                cls = f" class=\"text {col}\"" if col in TEXT_COLUMNS else " class=\"num\""
                text = _e(row[col])
                if col in CI_COLUMNS and " [" in str(row[col]):
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
        parts.append(f"<p class=\"small\">run {_e(r['run_id'])} · {_e(r.get('n_points'))} points "
                     f"(t in {_e(r.get('t_unit'))})</p>")
        if s.get("note"):
            parts.append(f"<p class=\"note\">{_e(s['note'])}</p>")
        if s.get("fit"):
            parts.append(_fit_details(s["fit"]))
        parts.append(f"<img class=\"plot\" src=\"{_e(r['plot'])}\" alt=\"{_e('trajectory plot: ' + str(r['model']))}\">")
    parts.append("<p class=\"small\">Generated by si-bench; rebuild with <code>si-bench leaderboard --from-parquet "
                 "leaderboard/data.parquet</code>.</p></body></html>")
    return "\n".join(parts) + "\n"
