"""Data frames as text: a terminal table, CSV or JSON (non-finite numbers as null)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
from tabulate import tabulate

from si_bench.options import Options, option

FORMATS = ("table", "csv", "json")


@dataclass
class OutputFormat(Options):
    format: str = option("table", "Output: table, csv or json.", choices=FORMATS, aliases=("-f",))


@dataclass
class JsonOutput(Options):
    as_json: bool = option(False, "Print JSON instead of tables.", flag="--json")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def frame_records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def render_frame(frame: pd.DataFrame, format: str = "table") -> str:
    if format == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if format == "json":
        return json.dumps(frame_records(frame), allow_nan=False, default=str)
    return tabulate(frame.astype(object).where(frame.notna(), None).values.tolist(), headers=list(frame.columns),
                    tablefmt="simple", floatfmt=".4g", missingval="NULL")
