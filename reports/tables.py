"""Data frames as text: a terminal table, CSV or JSON (non-finite numbers as null), each safe to open:
control characters never reach a terminal, and a CSV cell never starts a spreadsheet formula."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pandas as pd
from tabulate import tabulate

from si_bench.options import Options, option

FORMATS = ("table", "csv", "json")


@dataclass
class OutputFormat(Options):
    format: str = option("table", "Output: table, csv or json.", choices=FORMATS, aliases=("-f",))


@dataclass
class PlotOutput(Options):
    plot: str | None = option(None, "Write a PNG of the trajectory to this path.", output="file")


@dataclass
class JsonOutput(Options):
    as_json: bool = option(False, "Print JSON instead of tables.", flag="--json")


# The one rule for text that leaves si-bench (terminal, log, CSV, Markdown, HTML): no C0/C1 control characters
# (escape sequences, BEL, CR, LF) and no invisible Unicode that reorders or hides text (bidi overrides, zero
# width, line separators). CSV keeps tab and line breaks (data: as LF, which quotes their cell) and loses the rest.
_INVISIBLE = "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]+")
CSV_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]+")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _clean(value):
    """A JSON-ready value: non-finite numbers as None, lists (DuckDB LIST, numpy arrays) element by element."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_clean(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def terminal_text(value) -> str:
    """Text for a terminal, a log, Markdown or HTML: control characters (escape sequences, newlines) become one
    space."""
    return CONTROL.sub(" ", str(value))


def csv_safe(value):
    """A CSV cell: line breaks as LF (a bare CR would end the row for some readers but is not quoted), other control
    characters but tab dropped, and text a spreadsheet would open as a formula (starting with = + - @ or a line
    break) given a leading quote."""
    if not isinstance(value, str):
        return value
    value = CSV_CONTROL.sub(" ", value.replace("\r\n", "\n").replace("\r", "\n"))
    return "'" + value if value.startswith(FORMULA_START) else value


def safe_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell and every header cell made safe by csv_safe."""
    safe = frame.astype(object).map(csv_safe)
    safe.columns = [csv_safe(str(c)) for c in frame.columns]
    return safe


@overload
def to_csv(frame: pd.DataFrame, path: None = None) -> str: ...
@overload
def to_csv(frame: pd.DataFrame, path: Any) -> str | None: ...


def to_csv(frame: pd.DataFrame, path=None) -> str | None:
    """The one way si-bench writes CSV: safe cells, every cell holding a line break quoted."""
    return safe_csv_frame(frame).to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def interval_text(q: dict | None, digits: int = 3, pct: bool = False) -> str:
    """"2.45 [1.24, open]": an estimate and its 95% interval, an end the data do not determine shown as open;
    "not identified" when the data pin no value down."""
    if not q:
        return "–"
    if q.get("estimate") is None:
        return "not identified"

    def num(v) -> str:
        return "open" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.{digits}g}")

    ci = q.get("ci95")
    return num(q["estimate"]) + ("" if not ci else f" [{num(ci[0])}, {num(ci[1])}]")


def frame_records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def render_frame(frame: pd.DataFrame, format: str = "table") -> str:
    if format == "csv":
        return to_csv(frame).rstrip("\n")
    if format == "json":
        return json.dumps(frame_records(frame), allow_nan=False, default=str)
    cells = [[None if is_missing(v) else (terminal_text(v) if isinstance(v, str) else _clean(v)) for v in row]
             for row in frame.astype(object).values.tolist()]
    return tabulate(cells, headers=[terminal_text(c) for c in frame.columns], tablefmt="simple", floatfmt=".4g",
                    missingval="NULL")


def is_missing(value) -> bool:
    """None, NaN, NaT or pd.NA (DuckDB's NULL in an integer or list column); a list cell is a value."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
