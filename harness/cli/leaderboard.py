"""`si-bench leaderboard`: fit every stored run and write the leaderboard files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def command(
    db: Path = typer.Option(Path("si-bench.duckdb"), "--db", help="The si-bench DuckDB store."),
    out: Path = typer.Option(Path("leaderboard"), "--out", help="Output directory."),
    from_parquet: Optional[Path] = typer.Option(
        None, "--from-parquet", help="Rebuild from an earlier data.parquet export instead of the store."),
    unit: str = typer.Option("total", "--unit", help="Uncertainty to fit: total or per_token."),
    boot: int = typer.Option(200, "--boot", help="Bootstrap replicates (over prompts) for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the bootstrap."),
    save_fits: bool = typer.Option(True, "--save-fits/--no-save-fits", help="Save the fits into the store."),
) -> None:
    """Write the leaderboard: leaderboard.md/.csv/.json, index.html, per-run plots and data.parquet.

    Fits the coupled law to every run's trajectory in --db (runs with fewer than 4 points are listed with their accuracies and a note) and saves the fits into the store. With --from-parquet the same files are rebuilt from an earlier data.parquet export, without the store.
    """
    from si_bench import api
    from si_bench.errors import SIBenchError

    if unit not in ("total", "per_token"):
        raise SIBenchError(f"--unit must be total or per_token (got {unit!r})")
    if boot < 0:
        raise SIBenchError("--boot must be >= 0")
    if from_parquet is None and not db.exists():
        raise SIBenchError(f"store not found: {db}")
    res = api.leaderboard(db, out, from_parquet=from_parquet, unit=unit, boot=boot, seed=seed, save_fits=save_fits)
    typer.echo(f"leaderboard: {res['rows']} rows -> {res['out_dir']}/ ({len(res['files'])} files; open index.html)")
