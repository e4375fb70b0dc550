"""`si-bench import-lm-eval`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.lm_eval_import import LmEvalImportOptions
from si_bench.reports.tables import JsonOutput
from si_bench.store import StoreOptions


@options_command(LmEvalImportOptions, StoreOptions, JsonOutput)
def command(opts: LmEvalImportOptions, where: StoreOptions, output: JsonOutput) -> None:
    """Store the outputs of si-bench's tasks run under lm-eval's own CLI (any backend) as one evaluation.

    OUTPUT_PATH holds a solver run with --log_samples, the NLL run (si_nll) and one verifier run (si_verify_tf,
    si_verify_qe or si_verify_majority) over its samples file. Samples, verdicts, picks and metrics with 95% CIs are
    stored as `evaluate` stores them, under ids that start with lm-eval- and name the runs' backend, model arguments,
    lm-eval version and files; importing the same outputs again adds nothing. A missing, partial or mismatched output
    (another model, another solver output, a --limit) refuses the import and writes nothing.
    """
    import json

    import typer

    from si_bench import api

    done = api.import_lm_eval(opts, db=where.db)
    added = sum(c["added"] + c["updated"] for c in done.counts.values())
    if output.as_json:
        typer.echo(json.dumps({"eval_id": done.eval_id, "gen_id": done.gen_id, "verifier": done.verifier,
                               "n_prompts": done.n_prompts, "n_samples": done.n_samples, "rows": added,
                               "metrics": {name: m.value for name, m in done.metrics.items()}}))
        return
    what = f"{done.n_prompts} prompts x {done.n_samples} samples, verifier {done.verifier}"
    typer.echo(f"imported {opts.output_path} into {where.db} as evaluation {done.eval_id} ({what}): {added} rows"
               if added else f"nothing new in {opts.output_path}: evaluation {done.eval_id} is stored ({what})")
