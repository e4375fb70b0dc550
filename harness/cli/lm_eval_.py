"""`si-bench lm-eval`: lm-eval's own command line, with si-bench's model classes registered."""

from __future__ import annotations

import typer

# Every argument, --help included, belongs to lm-eval.
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def command(ctx: typer.Context) -> None:
    """lm-eval's own CLI (same arguments) with --model si-hf, si-vllm and si-mock: adds U_s and each sample's NLL."""
    from si_bench import api

    api.lm_eval(list(ctx.args))
