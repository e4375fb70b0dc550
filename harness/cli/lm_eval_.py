"""`si-bench lm-eval`: lm-eval's own command line, with si-bench's model classes registered."""

from __future__ import annotations

import typer

# Every argument, --help included, belongs to lm-eval, except si-bench's --quiet (lm-eval has no such flag).
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
QUIET = "--quiet"


def command(ctx: typer.Context) -> None:
    """lm-eval's own CLI (same arguments) with --model si-hf, si-vllm and si-mock: adds U_s and each sample's NLL.
    Their sampling shows progress (bars on a terminal, periodic lines elsewhere) unless --quiet."""
    from si_bench import api
    from si_bench.cli._show import reporter
    from si_bench.progress import ProgressOptions

    args = [a for a in ctx.args if a != QUIET]
    with reporter(ProgressOptions(quiet=len(args) < len(ctx.args))):
        api.lm_eval(args)
