"""Helpers named by the task YAML with `!function` (lm-eval imports this file by path).

The task YAML stays as it is: si-bench's generation ids hash the solver tasks' bytes and verdict keys the verifier
tasks'. What the tasks do beyond it lives here (and in new YAML files: si_nll, si_verify_majority).
"""

from si_bench.datasets import get_dataset
from si_bench.errors import SIBenchError
from si_bench.lmeval import nll_docs, read_solver_log
from si_bench.tasks import dataset_dict, solver_docs, staged


def solver_dataset(**kwargs):
    """si-bench stages its prompts under `docs_key`; without one (lm-eval's own CLI) the shipped data is read."""
    if "docs_key" in kwargs:
        return staged(kwargs["docs_key"])
    return shipped_solver_dataset(kwargs["dataset"])


def shipped_solver_dataset(name: str):
    """Few-shot examples from si-bench's seeded pool of training prompts; the test split, less that pool,
    in its shipped order (what `si-bench evaluate --dataset NAME` samples from)."""
    from si_bench.evaluation import EvalConfig, fewshot_pool, select_prompts

    fewshot = fewshot_pool(get_dataset(name))
    test = select_prompts(EvalConfig(dataset=name, split="test"))
    return dataset_dict(solver_docs(fewshot, name), solver_docs(test, name))


def verifier_dataset(**kwargs):
    """si-bench stages its candidates under `docs_key`; under lm-eval's own CLI they are a solver run's logged
    samples, named with `--metadata samples=PATH`."""
    if "docs_key" in kwargs:
        return staged(kwargs["docs_key"])
    from si_bench.evaluation import fewshot_pool
    from si_bench.verify import logged_docs

    log = read_solver_log(samples_path(kwargs))
    return dataset_dict(*logged_docs(log, fewshot_pool(get_dataset(log.prompts[0].doc["dataset"]))))


def nll_dataset(**kwargs):
    """Each sample of a solver run's --log_samples file (`--metadata samples=PATH`) after the prompt it was sampled
    from."""
    return dataset_dict([], nll_docs(read_solver_log(samples_path(kwargs))))


def samples_path(metadata: dict) -> str:
    if "samples" not in metadata:
        raise SIBenchError("this task scores a solver run's logged samples: name its --log_samples file with "
                           "--metadata samples=PATH")
    return str(metadata["samples"])


def nll_results(doc, results):
    """The sample's total NLL given its prompt (lm-eval's loglikelihood of the continuation)."""
    [(loglik, _greedy)] = results
    return {"nll": -float(loglik)}


def majority_results(doc, results):
    """Self-consistency (verify.agreement): the share of the prompt's samples with the candidate's answer; `acc`
    is whether that score, read as a judgment (above 1/2), is right. The placeholder request's result is unused."""
    from si_bench.verify import agreement

    score = agreement(doc["answer"], doc["answers"])
    return {"score": score, "acc": float((score > 0.5) == doc["correct"])}


def keep_all(resps, docs):
    """Pass every sample through: the N samples of a prompt are all measured."""
    return resps


def solver_results(doc, results):
    """Accuracy over the N samples; with a backend that returns log-probabilities (`--model si-hf`, `si-vllm`),
    also the prompt's solver uncertainty (the mean total NLL of its samples: averaged over prompts it is U_s)
    and each sample's NLL."""
    samples = results[0] if results and isinstance(results[0], list) else results
    dataset = get_dataset(doc["dataset"])
    out = {"acc": sum(dataset.check(s, doc["answer"])[1] for s in samples) / max(len(samples), 1)}
    if samples and all(hasattr(s, "logprob") for s in samples):
        nlls = [-float(s.logprob) for s in samples]
        out["solver_uncertainty"] = sum(nlls) / len(nlls)
        out.update({f"sample_nll_{k}": nll for k, nll in enumerate(nlls)})
    return out
