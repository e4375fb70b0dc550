"""`si-bench import-lm-eval`: the outputs of si-bench's tasks run under lm-eval's own CLI, on any lm-eval backend,
brought into the store as one evaluation.

Three runs make one evaluation (docs/design.md, "Under lm-eval's own CLI"): a solver task with --log_samples, the
NLL task (`si_nll`: each logged sample's NLL given its prompt) and a verifier task (`si_verify_tf`, `si_verify_qe`,
`si_verify_majority`), the last two reading the solver's samples file (`--metadata samples=PATH`) and naming it in
each document by its digest. The samples, verdicts, picks and metrics are stored as `evaluate` stores them (its
`measure`, `pick_rows`, `metric_rows`) through a scratch store merged into the target by `merge`: one transaction,
the same-measurement rules, and a repeated import adds nothing. Their ids start with `lm-eval-` and hash where the
numbers came from (the files' digests, lm-eval's model type and arguments, its version), so they never meet an
evaluation si-bench sampled itself.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from si_bench import store
from si_bench.datasets import Prompt, get_dataset
from si_bench.errors import SIBenchError
from si_bench.evaluation import measure, metric_rows, pick_rows, stable_hash
from si_bench.lmeval import SOLVER_TASK_PREFIX, SolverLog, read_solver_log
from si_bench.measures import Measure
from si_bench.merge import Merged, merge
from si_bench.options import BOOT_MAX, SEED_MAX, Options, option
from si_bench.verify import VERIFIERS, Candidate, MajorityMethod, Verifier, VerifierMethod

ID_PREFIX = "lm-eval-"
NLL_TASK = "si_nll"
SPLIT = "test"  # lm-eval's solver tasks read si-bench's test prompts (tasks/utils.py)
VERIFIER_TASKS: dict[str, Verifier] = {m.task: m for m in VERIFIERS.values()}
KINDS: dict[str, Callable[[str], bool]] = {
    "solver": lambda task: task.startswith(SOLVER_TASK_PREFIX),
    "NLL": lambda task: task == NLL_TASK,
    "verifier": lambda task: task in VERIFIER_TASKS,
}
KIND_TASKS = {"solver": f"{SOLVER_TASK_PREFIX}*", "NLL": NLL_TASK, "verifier": ", ".join(VERIFIER_TASKS)}


def check_tokenizer(name: str) -> None:
    """A directory that exists, or a name that can only be a hub id (org/name)."""
    if not Path(name).expanduser().exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise SIBenchError(f"no tokenizer at {name} (give a model directory or a hub id)")


@dataclass
class LmEvalImportOptions(Options):
    output_path: str = option(help="Folder holding the lm-eval outputs (--output_path) of a solver run with "
                                   "--log_samples, its NLL run and one verifier run.", argument=True)
    verifier: str | None = option(None, "The verifier whose output to import where the folder holds several: tf, "
                                        "qe or majority (default: the only one).",
                                  choices=lambda: [m.name for m in VERIFIER_TASKS.values()])
    sigma: float = option(0.5, "Verifier score threshold of the hybrid best-of-N pick.", min=0, max=1)
    n_boot: int = option(1000, "Bootstrap replicates for the 95% CIs (0: no intervals).", min=0, max=BOOT_MAX)
    seed: int = option(0, "Seed of the bootstrap over prompts.", min=0, max=SEED_MAX)
    tokenizer: str | None = option(None, "Tokenizer (model directory or hub id) that counts each sample's tokens as "
                                         "lm-eval split them for the NLL (default: the NLL run's tokenizer= or "
                                         "pretrained= model argument).", check=check_tokenizer)


@dataclass(frozen=True)
class Output:
    """One task of one lm-eval run: its results file's contents and its --log_samples file."""

    task: str
    results: dict
    samples: Path

    @property
    def config(self) -> dict:
        return self.results.get("config") or {}

    @property
    def model(self) -> str:
        return str(self.results.get("model_name"))

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.samples.read_bytes()).hexdigest()[:16]

    def provenance(self) -> dict[str, Any]:
        """Where its numbers came from: lm-eval's model type and arguments, its version, the file's digest."""
        return {"task": self.task, "backend": self.config.get("model"), "model_args": self.config.get("model_args"),
                "lm_eval_version": self.results.get("lm_eval_version"), "limit": self.config.get("limit"),
                "num_fewshot": (self.results.get("n-shot") or {}).get(self.task),
                "chat_template": self.results.get("chat_template_sha"),
                "samples": self.digest}

    @cached_property
    def rows(self) -> list[dict]:
        """Its logged samples, parsed once (the checks and the measures both read them)."""
        rows = []
        for number, line in enumerate(self.samples.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row.get("doc"), dict):
                    raise ValueError("no document")
            except (ValueError, AttributeError) as exc:
                raise SIBenchError(f"{self.samples}, line {number} is not a logged sample: {exc}") from None
            rows.append(row)
        return rows


@dataclass(frozen=True)
class Imported:
    eval_id: str
    gen_id: str
    verifier: str
    n_prompts: int
    n_samples: int
    metrics: dict[str, Measure]
    counts: Merged


def import_lm_eval(opts: LmEvalImportOptions, db: str | Path = store.DEFAULT_DB) -> Imported:
    """Read, check and measure the outputs; write them as one evaluation (nothing when any check fails)."""
    outputs = find_outputs(Path(opts.output_path).expanduser(), opts.verifier)
    solver, nll, verifier = outputs["solver"], outputs["NLL"], outputs["verifier"]
    log = read_solver_log(solver.samples)
    check_outputs(log, solver, nll, verifier)
    method = VERIFIER_TASKS[verifier.task]
    prompts = stored_prompts(log)
    arrays = sample_arrays(log, prompts)
    arrays["nll"], arrays["n_tokens"] = nll_arrays(log, nll, tokenizer_name(opts, nll))
    verdicts = verdict_grid(log, prompts, method, verifier, arrays)
    arrays["score"] = np.array([[score for score, _ in row] for row in verdicts], dtype=float)
    metrics, selection = measure(arrays, sigma=opts.sigma, n_boot=opts.n_boot, seed=opts.seed)
    settings = generation_settings(opts, log, prompts, solver, nll)
    ids = identities(settings, opts, method, solver, verifier)
    prompt_ids = [p.prompt_id for p, _ in prompts]
    rows = {**record_rows(ids, settings, opts, prompts, solver, verifier, method),
            "samples": sample_rows(ids.gen_id, prompt_ids, arrays),
            "verdicts": [{"gen_id": ids.gen_id, "verifier_key": ids.verifier_key, "prompt_id": pid, "sample_idx": k,
                          "score": score, "raw": raw}
                         for pid, row in zip(prompt_ids, verdicts, strict=True) for k, (score, raw) in enumerate(row)],
            "picks": pick_rows(ids.eval_id, prompt_ids, selection),
            "metrics": metric_rows(ids.eval_id, metrics)}
    counts = write(rows, db)
    return Imported(ids.eval_id, ids.gen_id, method.name, len(prompts), settings["samples"], metrics, counts)


@dataclass(frozen=True)
class Ids:
    checkpoint_id: str
    gen_id: str
    verifier_key: str
    eval_id: str


def generation_settings(opts: LmEvalImportOptions, log: SolverLog, prompts: list[tuple[Prompt, str]], solver: Output,
                        nll: Output) -> dict[str, Any]:
    """What the imported samples and their NLLs are: si-bench's own words (dataset, prompts, N) and the two runs'."""
    return {"source": "lm-eval", "dataset": prompts[0][1], "split": SPLIT, "task": log.task,
            "prompts": stable_hash(sorted(p.prompt_id for p, _ in prompts)), "samples": len(log.prompts[0].texts),
            "solver": solver.provenance(), "nll": nll.provenance(), "tokenizer": tokenizer_name(opts, nll)}


def identities(settings: dict, opts: LmEvalImportOptions, method: Verifier, solver: Output, verifier: Output) -> Ids:
    """Ids as `evaluate` forms them (eval_id from gen_id, verifier key and sigma), over where the numbers came from;
    `lm-eval-` says so on every id of an imported generation and evaluation."""
    gen_id = ID_PREFIX + stable_hash(settings)
    own = method.key(verifier_shots(verifier), verifier.results.get("chat_template") is not None)
    verifier_key = stable_hash({"verifier": own, "source": "lm-eval", "run": verifier.provenance()})
    eval_id = ID_PREFIX + stable_hash({"gen": gen_id, "verifier": verifier_key, "sigma": opts.sigma})
    return Ids(ID_PREFIX + stable_hash({"model": solver.model}), gen_id, verifier_key, eval_id)


def verifier_shots(verifier: Output) -> int:
    return int(verifier.provenance()["num_fewshot"] or 0)


def record_rows(ids: Ids, settings: dict, opts: LmEvalImportOptions, prompts: list[tuple[Prompt, str]],
                solver: Output, verifier: Output, method: Verifier) -> dict[str, list[dict]]:
    """The prompts, model, generation and evaluation rows, as `evaluate` registers its own."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "prompts": [{"dataset": dataset, "split": SPLIT, "prompt_id": p.prompt_id, "question": p.question,
                     "reference": p.reference, "answer": p.answer, "meta": p.meta} for p, dataset in prompts],
        "checkpoints": [{"checkpoint_id": ids.checkpoint_id, "model_spec": solver.model, "path": solver.model,
                         "weights_hash": None, "created_at": now}],
        "generations": [{"gen_id": ids.gen_id, "checkpoint_id": ids.checkpoint_id, "model": solver.model,
                         "backend": f"lm-eval:{solver.config.get('model')}", "dataset": settings["dataset"],
                         "split": SPLIT, "n_prompts": len(prompts), "n_samples": settings["samples"],
                         "settings": settings, "created_at": now}],
        "evaluations": [{"eval_id": ids.eval_id, "gen_id": ids.gen_id, "verifier": method.name,
                         "verifier_key": ids.verifier_key, "sigma": opts.sigma,
                         "settings": {"verifier_shots": verifier_shots(verifier), "n_boot": opts.n_boot,
                                      "seed": opts.seed, "verifier_run": verifier.provenance()},
                         "status": "done", "timings": {}, "created_at": now, "finished_at": now}],
    }


def sample_rows(gen_id: str, prompt_ids: list[str], a: dict[str, np.ndarray]) -> list[dict]:
    return [{"gen_id": gen_id, "prompt_id": pid, "sample_idx": k, "text": a["text"][i, k], "answer": a["answer"][i, k],
             "correct": bool(a["correct"][i, k]), "nll": float(a["nll"][i, k]), "n_tokens": int(a["n_tokens"][i, k])}
            for i, pid in enumerate(prompt_ids) for k in range(a["text"].shape[1])]


def find_outputs(folder: Path, verifier: str | None = None) -> dict[str, Output]:
    """The one solver, NLL and verifier output under `folder` (lm-eval's results_<date>.json beside the
    samples_<task>_<date>.jsonl of each of its tasks); other tasks' outputs, and other verifiers' when `verifier`
    names one, are left alone."""
    if not folder.is_dir():
        raise SIBenchError(f"no lm-eval outputs at {folder} (give the folder its runs wrote with --output_path)")
    found: dict[str, list[Output]] = {kind: [] for kind in KINDS}
    for results_file in sorted(folder.rglob("results_*.json")):
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
            tasks = list(results["configs"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SIBenchError(f"{results_file} is not an lm-eval results file: {type(exc).__name__} {exc}") from None
        date = results_file.name.removeprefix("results_").removesuffix(".json")
        for task in tasks:
            kind = next((k for k, is_kind in KINDS.items() if is_kind(task)), None)
            if kind is None or (kind == "verifier" and verifier and VERIFIER_TASKS[task].name != verifier):
                continue
            samples = results_file.with_name(f"samples_{task}_{date}.jsonl")
            if not samples.is_file():
                raise SIBenchError(f"{results_file} has no samples of {task} beside it: run it with --log_samples")
            found[kind].append(Output(task, results, samples))
    for kind, outputs in found.items():
        if len(outputs) != 1:
            choose = "--verifier picks one" if kind == "verifier" and not verifier else "each its own --output_path"
            what = f"no {kind} output ({KIND_TASKS[kind]}) with --log_samples" if not outputs else (
                f"{len(outputs)} {kind} outputs ({', '.join(str(o.samples.name) for o in outputs)}): one evaluation "
                f"is one solver, one NLL and one verifier run ({choose})")
            raise SIBenchError(f"{folder} holds {what}")
    return {kind: outputs[0] for kind, outputs in found.items()}


def check_outputs(log: SolverLog, solver: Output, nll: Output, verifier: Output) -> None:
    """The three runs belong together: one model, and the NLL and verifier runs scored every sample of this very
    solver output (its digest in each document), as stock lm-eval renders them (NLL: the logged prompts as they are)."""
    if log.task != solver.task:
        raise SIBenchError(f"{solver.samples} holds the samples of {log.task}, not of {solver.task}")
    runs = {"solver": solver, "NLL": nll} | ({} if verifier.task == MajorityMethod.task else {"verifier": verifier})
    if len({run.model for run in runs.values()}) > 1:
        raise SIBenchError("the outputs are of different models: " + ", ".join(f"{kind} {run.model}"
                                                                                 for kind, run in runs.items()))
    if nll.results.get("chat_template") is not None or (nll.results.get("n-shot") or {}).get(NLL_TASK):
        raise SIBenchError(f"{nll.samples} was run with --apply_chat_template or --num_fewshot: the NLL task scores "
                           "the solver's prompts as it logged them (run it with neither)")
    expected_nll = {(p.doc["prompt_id"], k) for p in log.prompts for k, text in enumerate(p.texts) if text}
    expected_all = {(p.doc["prompt_id"], k) for p in log.prompts for k in range(len(p.texts))}
    for kind, output, expected in (("NLL", nll, expected_nll), ("verifier", verifier, expected_all)):
        docs = [row["doc"] for row in output.rows]
        sources = {doc.get("source") for doc in docs}
        if sources != {log.digest}:
            raise SIBenchError(f"the {kind} output {output.samples} scored another solver output than "
                               f"{log.path} (documents from {', '.join(sorted(map(str, sources)))}, "
                               f"this one is {log.digest})")
        scored = {(doc.get("prompt_id"), doc.get("sample_idx")) for doc in docs}
        if scored != expected or len(docs) != len(expected):
            raise SIBenchError(f"the {kind} output {output.samples} scores {len(docs)} of the {len(expected)} samples "
                               f"of {log.path} (run it over all of them: no --limit)")


def stored_prompts(log: SolverLog) -> list[tuple[Prompt, str]]:
    """(prompt, dataset) of each logged prompt, as si-bench's dataset holds it (the rows `evaluate` writes)."""
    dataset = log.prompts[0].doc["dataset"]
    by_id = {p.prompt_id: p for p in get_dataset(dataset).load(SPLIT)}
    missing = [p.doc["prompt_id"] for p in log.prompts if p.doc["prompt_id"] not in by_id]
    if missing:
        raise SIBenchError(f"{log.path} holds prompts that are not in si-bench's {dataset} {SPLIT} split "
                           f"({', '.join(missing[:3])})")
    return [(by_id[p.doc["prompt_id"]], dataset) for p in log.prompts]


def sample_arrays(log: SolverLog, prompts: list[tuple[Prompt, str]]) -> dict[str, np.ndarray]:
    """(P, N) texts, extracted answers and correctness, checked as `evaluate` checks its samples."""
    dataset = get_dataset(prompts[0][1])
    P, N = len(prompts), len(log.prompts[0].texts)
    arrays = {"text": np.empty((P, N), dtype=object), "answer": np.empty((P, N), dtype=object),
              "correct": np.zeros((P, N), dtype=bool)}
    for i, ((prompt, _), logged) in enumerate(zip(prompts, log.prompts, strict=True)):
        for k, text in enumerate(logged.texts):
            arrays["text"][i, k] = text
            arrays["answer"][i, k], arrays["correct"][i, k] = dataset.check(text, prompt.answer)
    return arrays


def nll_arrays(log: SolverLog, nll: Output, tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, N) total NLL and token counts of the samples; an empty sample has none to score (0 over 0 tokens)."""
    order = {p.doc["prompt_id"]: i for i, p in enumerate(log.prompts)}
    P, N = len(log.prompts), len(log.prompts[0].texts)
    values, n_tokens = np.zeros((P, N)), np.zeros((P, N), dtype=int)
    count = token_counter(tokenizer)
    for row in nll.rows:
        doc, i = row["doc"], order[row["doc"]["prompt_id"]]
        try:
            values[i, doc["sample_idx"]] = float(row["nll"])
        except (KeyError, TypeError, ValueError):
            raise SIBenchError(f"{nll.samples}: a logged sample has no nll (not the si_nll task's output)") from None
        n_tokens[i, doc["sample_idx"]] = count(doc["context"], doc["continuation"])
    return values, n_tokens


def tokenizer_name(opts: LmEvalImportOptions, nll: Output) -> str:
    return opts.tokenizer or tokenizer_name_of(nll)


def tokenizer_name_of(nll: Output) -> str:
    args = nll.config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    name = args.get("tokenizer") or args.get("pretrained") or args.get("model")
    if not name:
        raise SIBenchError(f"the NLL run ({nll.samples}) names no tokenizer or pretrained model: give --tokenizer")
    return str(name)


def token_counter(name: str) -> Callable[[str, str], int]:
    """The continuation's token count as lm-eval's causal loglikelihood splits it (`TemplateLM._encode_pair`:
    trailing spaces of the context move to the continuation; the whole is encoded and the context's tokens cut)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise SIBenchError(f"cannot load the tokenizer {name} that counts the samples' tokens "
                           f"({str(exc).splitlines()[0]}): give --tokenizer") from None

    def count(context: str, continuation: str) -> int:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = tok.encode(context + continuation, add_special_tokens=False)
        return len(whole) - len(tok.encode(context, add_special_tokens=False))

    return count


def verdict_grid(log: SolverLog, prompts: list[tuple[Prompt, str]], method: Verifier, verifier: Output,
                 arrays: dict[str, np.ndarray]) -> list[list[tuple[float, dict]]]:
    """(score, raw) per sample, as the method turns its evidence into a verdict inside si-bench: the choices'
    log-likelihoods of a model method's task, or agreement over the samples for majority."""
    if isinstance(method, MajorityMethod):
        return [method.verdicts(None, [Candidate(prompt, text, answer, tuple(row_answers))
                                       for text, answer in zip(texts, row_answers, strict=True)], [],
                                shots=0, apply_chat_template=False)
                for (prompt, _), texts, row_answers in zip(prompts, arrays["text"], arrays["answer"], strict=True)]
    return model_verdicts(log, method, verifier)


def model_verdicts(log: SolverLog, method: VerifierMethod, verifier: Output) -> list[list[tuple[float, dict]]]:
    order = {p.doc["prompt_id"]: i for i, p in enumerate(log.prompts)}
    grid: list[list[Any]] = [[None] * len(p.texts) for p in log.prompts]
    for row in verifier.rows:
        try:
            logliks = [float(choice[0][0]) for choice in row["resps"]]
        except (KeyError, TypeError, ValueError, IndexError):
            raise SIBenchError(f"{verifier.samples}: a logged sample has no choice log-likelihoods") from None
        doc = row["doc"]
        grid[order[doc["prompt_id"]]][doc["sample_idx"]] = (method.score(logliks),
                                                            {"method": method.name, "choice_logliks": logliks})
    return grid


def write(rows: dict[str, list[dict]], db: str | Path) -> Merged:
    """Into a scratch store first, then merged into `db` in one transaction by merge's rules."""
    with tempfile.TemporaryDirectory(prefix="si-bench-lm-eval-") as scratch:
        staged = Path(scratch) / "imported.duckdb"
        with store.write(staged) as con:
            for table, table_rows in rows.items():
                store.upsert(con, table, table_rows)
        return merge(staged, db)
