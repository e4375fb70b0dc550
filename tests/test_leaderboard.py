"""fit_store on a synthetic store, and the leaderboard files (from the store and from the parquet export)."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta

import pandas as pd
import pytest
from conftest import run_cli
from synth_store import TRUTH, make_run

from si_bench import api, store, trajectories
from si_bench.errors import SIBenchError
from si_bench.fit import FitOptions
from si_bench.reports import leaderboard as board_module

HOSTILE = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"
LINK = "[x](javascript:alert(1))"
FAST = {"us_inf": 1.0, "a_s": 2.0, "uv_inf": 0.6, "a_v": 1.2, "lam": 4.0}  # all the change by t = 1
TABLE_A = {"gsm8k_qe": (.996, .966, .948), "gsm8k_tf": (.998, .980, .989), "math_qe": (.998, .981, .981),
           "math_tf": (.998, .979, .984)}


def _strict(text: str):
    def bad(token):
        raise ValueError(f"non-strict JSON constant {token}")
    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lb") / "si.duckdb")
    make_run(path, "good-run", model="org/good-model", ts=(0, 1, 2, 3, 4, 5))
    make_run(path, "good-run", model="org/good-model", ts=(0, 1, 2, 3, 4, 5), split="train", P=15)
    make_run(path, "short-run", model=HOSTILE, ts=(0, 1, 2), mode="fixed", noise=0.1)
    make_run(path, "fast-run", model=FORMULA, ts=(0, 1, 2, 3, 4), truth=FAST, P=20)
    make_run(path, "link-run", model=LINK, ts=(0, 1, 2), P=5)
    return path


@pytest.fixture(scope="module")
def fitted(db):
    return api.fit(db, FitOptions(unit="per_token", n_boot=100, seed=0))


@pytest.fixture(scope="module")
def board(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    res = api.leaderboard(db, out, options=FitOptions(n_boot=60))
    return out, res


def test_fit_store_recovers_the_limits(fitted):
    json.dumps(fitted, allow_nan=False)
    by_key = {t["fit_key"]: t for t in fitted["trajectories"]}
    good = by_key["good-run|gsm8k|test|self|per_token"]["fit"]
    truth = {"solver_limit": TRUTH["us_inf"], "verifier_limit": TRUTH["uv_inf"],
             "gap_limit": TRUTH["us_inf"] - TRUTH["uv_inf"], "rate": TRUTH["lam"]}
    for q, value in truth.items():
        lo, hi = good[q].get("coupled_law", good[q])["ci95"]  # the coupled law's own interval: closed here
        assert lo <= value <= hi, (q, good[q], value)
        lo, hi = good[q]["ci95"]  # published: 6 points cannot reject a power law, whose limits may open
        assert (lo is None or lo <= value) and (hi is None or value <= hi), (q, good[q], value)
    assert good["bootstrap"]["kind"] == "replicates" and good["bootstrap"]["n"] == 100
    assert any("prompts measured at every t" in n for n in good.get("notes", []))
    short = by_key["short-run|gsm8k|test|self|per_token"]
    assert "fit" not in short and short["note"].startswith("too few points to fit")
    assert fitted["n_fitted"] == 3  # good-run test and train, fast-run


def test_fit_store_writes_and_replaces_fits(db, fitted):
    fits = store.query(db, "SELECT * FROM fits WHERE unit = 'per_token'")
    assert set(fits.fit_key) == {"good-run|gsm8k|test|self|per_token", "good-run|gsm8k|train|self|per_token",
                                 "fast-run|gsm8k|test|self|per_token"}
    row = fits[(fits.fit_key == "good-run|gsm8k|test|self|per_token") & (fits.law == "coupled")
               & (fits.quantity == "solver_limit")].iloc[0]
    assert row.run_id == "good-run" and row.split == "test" and row.verifier == "self" and row.r2 > 0.9
    assert json.loads(row.details)["model"] == "org/good-model"
    n = len(fits)
    api.fit(db, FitOptions(unit="per_token", n_boot=20, seed=1))
    again = store.query(db, "SELECT fit_key, law, quantity, count(*) AS n FROM fits WHERE unit = 'per_token' "
                            "GROUP BY ALL")
    assert len(again) == n and (again.n == 1).all()


def test_fit_store_without_runs(tmp_path):
    empty = tmp_path / "empty.duckdb"
    with store.write(empty):
        pass
    with pytest.raises(SIBenchError, match="no self-improvement runs in"):
        api.fit(empty)
    with pytest.raises(SIBenchError, match="group-by"):
        api.fit(empty, group_by="panel")


MEASURED = {"good-run", "short-run", "fast-run", "link-run"}


def test_leaderboard_files(board):
    out, res = board
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html", "data.parquet"):
        assert (out / name).is_file(), name
    assert res["rows"] == len(MEASURED) + 4
    j = _strict((out / "leaderboard.json").read_text())
    rows = {r["run_id"]: r for r in j["rows"]}
    assert set(rows) == MEASURED | {f"reference-{p}" for p in TABLE_A}  # the test split of each run
    assert [r["source"] == "measured" for r in j["rows"]] == [True] * len(MEASURED) + [False] * 4
    good, short = rows["good-run"], rows["short-run"]
    lo, hi = good["solver_limit_lo"], good["solver_limit_hi"]  # an end may be open (null): a power law fits too
    assert (lo is None or lo <= 50 * TRUTH["us_inf"]) and (hi is None or 50 * TRUTH["us_inf"] <= hi)  # 50 tokens
    assert lo is not None or hi is not None
    assert 0 < good["solver_accuracy_initial"] < good["solver_accuracy_final"] <= 1
    assert good["r2_solver"] > 0.9 and good["best_law"] is not None and good["coupled_skill"] is not None
    assert good["law"] in ("supported", "conditional") and good["seeds"] == 1
    assert short["note"] == "too few points to fit" and short["solver_limit"] is None
    assert short["solver_accuracy_final"] is not None and short["mode"] == "fixed"
    csv = pd.read_csv(out / "leaderboard.csv")
    assert list(csv.run_id) == [r["run_id"] for r in j["rows"]]
    md = (out / "leaderboard.md").read_text()
    assert "| model" in md and "org/good-model" in md and "too few points to fit" in md


def test_open_ends_are_null_with_a_reason_everywhere(board):
    out, _ = board
    fast = next(r for r in _strict((out / "leaderboard.json").read_text())["rows"] if r["run_id"] == "fast-run")
    assert fast["rate"] is not None and fast["rate_hi"] is None and "not determined" in fast["rate_reason"]
    csv = pd.read_csv(out / "leaderboard.csv").set_index("run_id")
    assert pd.isna(csv.loc["fast-run", "rate_hi"]) and "not determined" in csv.loc["fast-run", "rate_reason"]
    assert ", open]" in (out / "leaderboard.md").read_text() and ", open]" in (out / "index.html").read_text()


def test_reference_rows_are_the_papers_curves(board):
    out, _ = board
    for row in _strict((out / "leaderboard.json").read_text())["rows"]:
        if row["source"] == "measured":
            continue
        assert "digitised" in row["source"] and "not measured here" in row["source"]
        panel = row["run_id"].removeprefix("reference-")
        assert (row["r2_solver"], row["r2_verifier"], row["r2_gap"]) == pytest.approx(TABLE_A[panel], abs=0.002)
    md = (out / "leaderboard.md").read_text()
    assert "| Phi-4-mini (Sun et al., ICLR 2026) (reference)" in md and "\\(" not in md  # no stray escapes


def test_every_format_says_how_to_read_it(board):
    out, _ = board
    md, page = (out / "leaderboard.md").read_text(), (out / "index.html").read_text()
    companion = pd.read_csv(out / "leaderboard.columns.csv").fillna("")
    explained = dict(zip(companion.column, companion.meaning, strict=True))
    guide = _strict((out / "leaderboard.json").read_text())["guide"]
    for term, text in board_module.guide("total"):
        assert f"**{term}**: {text}" in md and explained[f"({term})"] == text and guide[term] == text
        assert f"<dt>{html.escape(term)}</dt>" in page
    for phrase in ("one model × dataset/split × verifier × mode", "lower is better", "G_inf", "open",
                   "not identified", "conditional"):
        assert phrase in md and phrase in " ".join(explained.values()), phrase
    csv_columns = pd.read_csv(out / "leaderboard.csv").columns
    assert [c for c in companion.column if not c.startswith("(")] == list(csv_columns)  # every column, in order
    assert all(explained[c] for c in csv_columns)
    assert companion.set_index("column").loc["solver_limit", "better"] == "lower"


def test_cells_without_a_number_say_why(board):
    out, _ = board
    md = (out / "leaderboard.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    short = next(line for line in rows if "too few points to fit" in line)  # the note says why
    reference = next(line for line in rows if "(reference)" in line)
    assert short.count("not fitted") == 8  # 6 limits, R², law
    assert reference.count("not in the figure") == 3  # the figure's accuracy: t0 → last and both limits
    cells = {cell.strip() for line in rows for cell in line.split("|")[1:-1]}
    assert not cells & {"–", "– → –", "– / – / –"}, cells
    page = (out / "index.html").read_text()
    assert "<span class=\"why\">not fitted</span>" in page and "<span class=\"why\">not in the figure</span>" in page


def test_published_fits_are_the_stored_fits(db, tmp_path, monkeypatch):
    class Clock(datetime):  # a second passes between any two readings: rows built twice would differ
        ticks = 0

        @classmethod
        def now(cls, tz=None):
            cls.ticks += 1
            return datetime(2026, 1, 1, tzinfo=tz) + timedelta(seconds=cls.ticks)

    monkeypatch.setattr(trajectories, "datetime", Clock)
    api.leaderboard(db, tmp_path / "same", options=FitOptions(n_boot=20))
    columns = ["fit_key", "law", "quantity", "estimate", "ci_low", "ci_high", "fitted_at"]
    data = pd.read_parquet(tmp_path / "same" / "data.parquet")
    published = data[(data["kind"] == "fits") & ~data["run_id"].str.startswith("reference-")][columns]
    stored = store.query(db, "SELECT * FROM fits WHERE unit = 'total'")[columns]
    order = ["fit_key", "law", "quantity"]
    published, stored = (f.sort_values(order).reset_index(drop=True).astype({"fitted_at": str})
                         for f in (published, stored))
    assert len(published) > 0
    pd.testing.assert_frame_equal(published, stored, check_dtype=False)


def test_reference_rows_are_never_stored_and_can_be_left_out(db, tmp_path):
    res = api.leaderboard(db, tmp_path / "plain", options=FitOptions(n_boot=20), reference=False)
    assert res["rows"] == len(MEASURED)
    assert not store.query(db, "SELECT * FROM fits WHERE run_id LIKE 'reference-%'").shape[0]


def test_outputs_cannot_inject(board):
    out, _ = board
    csv_text = (out / "leaderboard.csv").read_text()
    assert "'" + FORMULA.replace('"', '""') in csv_text or "'=cmd" in csv_text
    assert not any(cell.startswith("=") for line in csv_text.splitlines() for cell in line.split(","))
    md = (out / "leaderboard.md").read_text()
    assert LINK not in md and "\\[x\\](javascript:alert(1))" in md  # no link without its brackets


def test_html_is_static_and_escaped(board):
    out, _ = board
    html = (out / "index.html").read_text()
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == len(MEASURED) + 4
    for src in srcs:
        assert not src.startswith(("/", "data:", "//")) and (out / src).is_file()


def test_plots_are_pngs(board):
    out, _ = board
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == len(MEASURED) + 4
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_regenerate_from_parquet(board, tmp_path):
    out, _ = board
    data = pd.read_parquet(out / "data.parquet")
    assert set(data["kind"]) == {"summary", "fits", "curves", "meta"}
    again = tmp_path / "again"
    res = api.leaderboard(None, again, from_parquet=out / "data.parquet")
    assert res["rows"] == len(MEASURED) + 4
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (again / name).read_text() == (out / name).read_text(), name
    assert (again / "index.html").read_text() == (out / "index.html").read_text()
    assert len(list((again / "plots").glob("*.png"))) == len(MEASURED) + 4 and (again / "data.parquet").is_file()
    with pytest.raises(SIBenchError, match="not found"):
        api.leaderboard(None, tmp_path / "x", from_parquet=tmp_path / "missing.parquet")


def test_cli_leaderboard_from_parquet(board, tmp_path):
    out, _ = board
    r = run_cli("leaderboard", "--from-parquet", str(out / "data.parquet"), "--out", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli" / "leaderboard.md").read_text() == (out / "leaderboard.md").read_text()
    r = run_cli("leaderboard", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "cli2"))
    assert r.returncode == 2 and r.stderr.startswith("error: ")
