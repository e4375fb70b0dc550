"""Helpers named by the task YAML with `!function` (lm-eval imports this file by path)."""

from si_bench.datasets import get_dataset
from si_bench.tasks import staged


def solver_dataset(**kwargs):
    return staged(kwargs["docs_key"])


def verifier_dataset(**kwargs):
    return staged(kwargs["docs_key"])


def keep_all(resps, docs):
    """Pass every sample through: the N samples of a prompt are all measured."""
    return resps


def solver_results(doc, results):
    samples = results[0] if results and isinstance(results[0], list) else results
    dataset = get_dataset(doc["dataset"])
    return {"acc": sum(dataset.check(s, doc["answer"])[1] for s in samples) / max(len(samples), 1)}
