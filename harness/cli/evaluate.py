"""`si-bench evaluate`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.evaluation import EvalConfig
from si_bench.progress import ProgressOptions
from si_bench.store import StoreOptions


@options_command(EvalConfig, StoreOptions, ProgressOptions)
def command(cfg: EvalConfig, where: StoreOptions, shown: ProgressOptions) -> None:
    """Measure solver and verifier accuracy and uncertainty (U_s, U_v, G) with 95% CIs; store everything."""
    from si_bench import api
    from si_bench.cli._show import reporter
    from si_bench.reports.terminal import evaluation_table, print_table

    with reporter(shown) as progress:
        result = api.evaluate(cfg, db=where.db, progress=progress)
    print_table(evaluation_table(result))
