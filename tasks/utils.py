"""Helpers named by the task YAML with `!function`. lm-eval imports this file by path, so the
documents themselves are staged in `si_bench.lmeval` (one module instance) and fetched by key."""

from si_bench import lmeval


def solver_dataset(**kwargs):
    return lmeval.staged(kwargs["docs_key"])


def verifier_dataset(**kwargs):
    return lmeval.staged(kwargs["docs_key"])


def keep_all(resps, docs):
    """Pass every sample through: the N samples of a prompt are all measured."""
    return resps


def solver_results(doc, results):
    samples = results[0] if results and isinstance(results[0], list) else results
    return {"acc": lmeval.solver_accuracy(doc, samples)}
