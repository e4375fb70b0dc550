"""`si-bench sql`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.errors import SIBenchError
from si_bench.reports.tables import OutputFormat
from si_bench.store import SqlStatement, StoreOptions


@options_command(SqlStatement, StoreOptions, OutputFormat)
def command(statement: SqlStatement, where: StoreOptions, output: OutputFormat) -> None:
    """Run one SELECT over the results, read-only, with no access outside the store (tables: runs, checkpoints,
    prompts, generations, samples, verdicts, evaluations, run_evals, picks, metrics, training_data, fits; view:
    summary)."""
    import typer

    from si_bench import store
    from si_bench.reports.tables import render_frame

    frame = store.user_query(where.db, statement.query, statement)
    typer.echo(render_frame(frame, output.format))
    if frame.attrs["more_rows"]:  # a limit hit, as the others: what was printed is not the whole result
        raise SIBenchError(f"the result has more than {statement.max_rows} rows; the first {statement.max_rows} are "
                           "shown (--max-rows, or LIMIT in the query)")
