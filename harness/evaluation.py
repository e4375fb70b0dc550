"""`evaluate`: sample N answers per prompt, self-verify them, pick best-of-N, measure, store.

Every stage reads what the store already has and does only the rest, so an interrupted evaluation
resumes where it stopped and a repeated one adds nothing. Results are keyed by hashes of everything
that changes the numbers: `gen_id` for the samples (checkpoint, prompts, shots, template, sampling,
N, seed) and `eval_id` for what the verifier adds (method, its prompt, sigma).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from si_bench import faults, store
from si_bench.backends import args_in_id, check_backend_args, check_model, get_backend, parse_backend_args
from si_bench.datasets import DATASETS, MAX_PROMPTS, Dataset, Prompt, get_dataset, sample_prompts
from si_bench.devices import DTYPES, Placement, check_device, resolve
from si_bench.errors import SIBenchError
from si_bench.measures import SIGNAL_MEASURES, Measure, compute_measures, verifier_signal
from si_bench.models import ModelRef, resolve_model
from si_bench.options import BOOT_MAX, SEED_MAX, Options, option
from si_bench.select import Selection, hybrid_best_of_n
from si_bench.tasks import TASKS_DIR
from si_bench.verify import VERIFIERS, Candidate, Verifier, get_verifier

FEWSHOT_POOL = 8  # few-shot examples come from a fixed seeded sample of the training split
MAX_SAMPLES = 1024  # N per prompt: far past the paper's best-of-N, and N x a split's prompts still fits a store
MAX_BATCH = 4096  # sequences per batch: more than an 80 GB accelerator holds of the smallest model
MAX_NEW_TOKENS = 131_072  # the longest context of any model si-bench can load


@dataclass
class SamplingConfig(Options):
    """What sampling and self-verification take: shared by `evaluate` and `run` (defined once here)."""

    model: str = option("smollm2-135m", "Preset (smollm2-135m, tiny-test), model directory or hub id.")
    dataset: str = option("arith", "Dataset: arith, gsm8k, math or math500.", choices=lambda: DATASETS)
    samples: int = option(4, "N sampled answers per prompt.", min=1, max=MAX_SAMPLES)
    verifier: str = option("tf", "Self-verification method: tf (True/False), qe (quality rating) or majority "
                                 "(self-consistency: the share of the N samples with the same answer; no forward "
                                 "pass).",
                           choices=lambda: VERIFIERS)
    sigma: float = option(0.5, "Verifier score threshold of the hybrid best-of-N pick.", min=0, max=1)
    num_fewshot: int = option(3, "Few-shot examples in the solver prompt.", min=0, max=FEWSHOT_POOL)
    verifier_shots: int = option(2, "Few-shot examples in the verifier prompt.", min=0, max=FEWSHOT_POOL)
    apply_chat_template: bool = option(False, "Render prompts with the model's chat template.",
                                       flag="--apply-chat-template")
    backend: str = option("hf", "Sampling backend: hf (CPU or GPU), vllm (GPU) or mock (a scripted model "
                                "directory, for tests).", check=get_backend)
    # device, dtype and backend_args enter the ids through `engine_identity` (only where they change numbers).
    device: str = option("auto", "Where the model runs: auto (cuda when torch sees a GPU, else cpu), cpu, cuda "
                                 "or cuda:N.", check=check_device, in_id=False)
    dtype: str = option("auto", "Number format of sampling and fine-tuning: auto (bfloat16 on a GPU that supports "
                                "it, else float32), float32, bfloat16 or float16.", choices=DTYPES, in_id=False)
    backend_args: str | None = option(None, "Backend arguments key=value,... as lm-eval's --model_args, checked "
                                            "against what the backend accepts (for vllm its engine arguments: "
                                            "tensor_parallel_size, gpu_memory_utilization, max_model_len, "
                                            "enable_prefix_caching, max_loras, max_lora_rank, ...).",
                                      check=parse_backend_args, in_id=False)
    batch_size: int = option(32, "Sequences per generation batch.", min=1, max=MAX_BATCH, in_id=False)
    max_new_tokens: int | None = option(None, "Cap on generated tokens (default: the task's own maximum).", min=1,
                                        max=MAX_NEW_TOKENS)
    seed: int = option(0, "Seed of the prompt sample, the sampling and the bootstrap.", min=0, max=SEED_MAX)
    n_boot: int = option(1000, "Bootstrap replicates for the 95% CIs (0: no intervals).", min=0, max=BOOT_MAX,
                         in_id=False)
    chunk_prompts: int = option(8, "Prompts per stored chunk: the most work a crash can lose.", min=1,
                                max=MAX_PROMPTS, in_id=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Concrete from here on: a stored run configuration says where it ran, and resumes only there.
        placement = resolve(self.device, self.dtype)
        self.device, self.dtype = placement.device, placement.dtype
        check_backend_args(self.backend, self.backend_kwargs())

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.dtype)

    def backend_kwargs(self) -> dict[str, Any]:
        return parse_backend_args(self.backend_args) if self.backend_args else {}

    def engine_identity(self) -> dict[str, Any]:
        """What device, dtype and backend arguments add to the ids: nothing for the CPU in float32 with no
        arguments (every id stored before these options existed), else what may change the numbers."""
        key: dict[str, Any] = self.placement.id_key()
        numeric = args_in_id(self.backend, self.backend_kwargs())
        if numeric:
            key["backend_args"] = numeric
        return key

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), **self.engine_identity()}


@dataclass
class EvalConfig(SamplingConfig):
    """Everything `si-bench evaluate` takes. Settings that change the numbers enter the ids."""

    split: str = option("test", "Dataset split.")
    limit: int | None = option(None, "Seeded random sample of N prompts (stratified by subject or level).",
                                min=1, max=MAX_PROMPTS)

    def check(self) -> None:
        get_dataset(self.dataset).check_split(self.split)


@dataclass
class EvalResult:
    eval_id: str
    gen_id: str
    config: EvalConfig
    metrics: dict[str, Measure]
    timings: dict[str, float]
    n_prompts: int
    generated: int  # samples generated by this call (0 when everything was already stored)
    scored: int  # candidates scored by this call
    picks: dict[str, str] = field(default_factory=dict)  # prompt_id -> picked response text


@dataclass(frozen=True)
class RunLink:
    """Where an evaluation sits in a self-improvement run (`run_evals`), and the checkpoint it measures."""

    run_id: str
    step: int
    t: float
    t_unit: str
    role: str  # test or train
    checkpoint_id: str  # the run's checkpoint at this step (its lineage, not only its weights)


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fewshot_pool(dataset: Dataset, seed: int = 0) -> list[Prompt]:
    return sample_prompts(dataset.load(dataset.train_split), FEWSHOT_POOL, seed=10_000 + seed)


def select_prompts(cfg: EvalConfig) -> list[Prompt]:
    dataset = get_dataset(cfg.dataset)
    pool_ids = {p.prompt_id for p in fewshot_pool(dataset)}
    prompts = [p for p in dataset.load(cfg.split) if p.prompt_id not in pool_ids]
    return sample_prompts(prompts, cfg.limit, cfg.seed)


def generation_settings(cfg: EvalConfig, checkpoint: str, prompts: list[Prompt]) -> dict:
    task = get_dataset(cfg.dataset).task
    task_yaml = (TASKS_DIR / f"{task}.yaml").read_bytes() + (TASKS_DIR / "_solver.yaml").read_bytes()
    return {
        "checkpoint": checkpoint, "backend": cfg.backend, "dataset": cfg.dataset, "split": cfg.split,
        "prompts": stable_hash(sorted(p.prompt_id for p in prompts)), "num_fewshot": cfg.num_fewshot,
        "apply_chat_template": cfg.apply_chat_template, "task": hashlib.sha256(task_yaml).hexdigest()[:16],
        "samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, **cfg.engine_identity(),
    }


class Evaluation:
    """One evaluation's state machine over the store: sample -> verify -> select -> measure."""

    def __init__(self, cfg: EvalConfig, *, db: str = store.DEFAULT_DB, model: ModelRef | None = None,
                 prompts: list[Prompt] | None = None, link: RunLink | None = None, progress: Any = None,
                 serving: dict[str, Any] | None = None):
        self.cfg, self.db, self.link, self.progress = cfg, db, link, progress
        self.serving = serving or {}  # backend settings of a run that serves its adapters on one base model
        self.dataset = get_dataset(cfg.dataset)
        self.method: Verifier = get_verifier(cfg.verifier)
        self.model = model or resolve_model(cfg.model)
        check_model(cfg.backend, self.model.path)
        self.prompts = prompts if prompts is not None else select_prompts(cfg)
        if not self.prompts:
            raise SIBenchError(f"no prompts to evaluate in {cfg.dataset}/{cfg.split}")
        self.fewshot = fewshot_pool(self.dataset)
        self.settings = generation_settings(cfg, self.model.identity, self.prompts)
        self.gen_id = stable_hash(self.settings)
        self.verifier_key = self.method.key(cfg.verifier_shots, cfg.apply_chat_template)
        self.eval_id = stable_hash({"gen": self.gen_id, "verifier": self.verifier_key, "sigma": cfg.sigma})
        self._lm = None
        self.timings: dict[str, float] = {}

    @property
    def lm(self):
        """The model, loaded only when there is work left."""
        if self._lm is None:
            from si_bench.backends import load_lm

            self._lm = load_lm(self.cfg.backend, self.model.path, self.model.adapter, batch_size=self.cfg.batch_size,
                               max_new_tokens=self.cfg.max_new_tokens, seed_base=self.gen_id, device=self.cfg.device,
                               dtype=self.cfg.dtype, **{**self.serving, **self.cfg.backend_kwargs()})
        return self._lm

    def run(self) -> EvalResult:
        if self._register():
            return self._stored_result()
        generated = self._sample()
        scored = self._verify()
        metrics, picks = self._measure()
        return EvalResult(
            self.eval_id, self.gen_id, self.cfg, metrics, self.timings, len(self.prompts), generated, scored, picks
        )

    def _register(self) -> bool:
        """Write what this evaluation is (once) and its place in a run; True when it is already done."""
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        checkpoint_id = self.link.checkpoint_id if self.link else self.model.identity
        with store.write(self.db) as con:
            done = self._check_stored(con)
            store.upsert(con, "prompts", [
                {"dataset": self.cfg.dataset, "split": self.cfg.split, "prompt_id": p.prompt_id,
                 "question": p.question, "reference": p.reference, "answer": p.answer, "meta": p.meta}
                for p in self.prompts
            ])
            base = checkpoint_id == self.model.identity  # a model evaluated outside a run, or a run's step 0
            known = con.execute("SELECT 1 FROM checkpoints WHERE checkpoint_id = ?", [checkpoint_id]).fetchall()
            if base and not known:
                store.upsert(con, "checkpoints", [{
                    "checkpoint_id": self.model.identity, "model_spec": self.model.spec,
                    "path": self.model.adapter or self.model.path, "weights_hash": self.model.identity,
                    "created_at": now,
                }])
            if not con.execute("SELECT 1 FROM generations WHERE gen_id = ?", [self.gen_id]).fetchall():
                store.upsert(con, "generations", [{
                    "gen_id": self.gen_id, "checkpoint_id": checkpoint_id, "model": self.model.spec,
                    "backend": self.cfg.backend, "dataset": self.cfg.dataset,
                    "split": self.cfg.split, "n_prompts": len(self.prompts), "n_samples": self.cfg.samples,
                    "settings": self.settings, "created_at": now,
                }])
            if not con.execute("SELECT 1 FROM evaluations WHERE eval_id = ?", [self.eval_id]).fetchall():
                store.upsert(con, "evaluations", [{
                    "eval_id": self.eval_id, "gen_id": self.gen_id, "verifier": self.cfg.verifier,
                    "verifier_key": self.verifier_key, "sigma": self.cfg.sigma,
                    "settings": {"verifier_shots": self.cfg.verifier_shots, "n_boot": self.cfg.n_boot},
                    "status": "running", "created_at": now,
                }])
            if self.link is not None:
                store.upsert(con, "run_evals", [{
                    "run_id": self.link.run_id, "eval_id": self.eval_id, "step": self.link.step, "t": self.link.t,
                    "t_unit": self.link.t_unit, "role": self.link.role,
                }])
        return done

    def _check_stored(self, con) -> bool:
        """A finished evaluation's numbers are never rewritten: the same settings find them, another --n-boot
        (which would change its intervals) is refused before any work."""
        row = con.execute("SELECT status, settings FROM evaluations WHERE eval_id = ?", [self.eval_id]).fetchone()
        if row is None:
            return False
        settings = json.loads(row[1] or "{}")
        if row[0] != "done":
            if settings.get("n_boot") != self.cfg.n_boot:
                con.execute("UPDATE evaluations SET settings = ? WHERE eval_id = ?",
                            [json.dumps({**settings, "n_boot": self.cfg.n_boot}), self.eval_id])
            return False
        stored = settings.get("n_boot", self.cfg.n_boot)
        if stored != self.cfg.n_boot:
            raise SIBenchError(f"evaluation {self.eval_id} is stored with 95% intervals from --n-boot {stored}, and "
                               f"stored numbers are never rewritten: run it with --n-boot {stored}")
        return True

    def _stored_result(self) -> EvalResult:
        with store.read(self.db) as con:
            metrics = {name: Measure(value, lo, hi, int(n), reason) for name, value, lo, hi, n, reason in con.execute(
                "SELECT name, value, ci_low, ci_high, n, reason FROM metrics WHERE eval_id = ?", [self.eval_id]
            ).fetchall()}
            picks = dict(con.execute(
                """SELECT p.prompt_id, s.text FROM picks p JOIN samples s ON s.gen_id = ? AND s.prompt_id = p.prompt_id
                   AND s.sample_idx = p.sample_idx WHERE p.eval_id = ?""", [self.gen_id, self.eval_id]).fetchall())
            timings = json.loads(store.fetch_one(con, "SELECT timings FROM evaluations WHERE eval_id = ?",
                                                 [self.eval_id])[0] or "{}")
        metrics |= self._missing_signal(metrics)
        return EvalResult(self.eval_id, self.gen_id, self.cfg, metrics, timings, len(self.prompts), 0, 0, picks)

    def _missing_signal(self, metrics: dict[str, Measure]) -> dict[str, Measure]:
        """An evaluation finished before the verifier's signal was measured gets those figures now, from its stored
        samples and verdicts with its own seed and --n-boot (so exactly what a fresh one stores), added beside its
        other metrics, which stay as they are."""
        missing = [name for name in (*SIGNAL_MEASURES, "verifier_signal") if name not in metrics]
        if not missing:
            return {}
        try:
            a = self.load_arrays()
        except SIBenchError:
            return {}  # its samples or verdicts are not all in this store: the figures stay absent
        selection = hybrid_best_of_n(a["score"], a["nll"], a["n_tokens"], sigma=self.cfg.sigma)
        computed = compute_measures(a["nll"], a["n_tokens"], a["correct"], a["score"], selection,
                                    n_boot=self.cfg.n_boot, seed=self.cfg.seed, sigma=self.cfg.sigma)
        computed["verifier_signal"] = verifier_signal(computed)
        added = {name: computed[name] for name in missing if name in computed}
        with store.write(self.db) as con:
            store.upsert(con, "metrics", metric_rows(self.eval_id, added))
        return added

    def _chunks(self, items: list) -> list[list]:
        size = self.cfg.chunk_prompts
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _sample(self) -> int:
        from si_bench import lmeval

        with store.read(self.db) as con:
            done = {
                row[0] for row in con.execute(
                    "SELECT prompt_id FROM samples WHERE gen_id = ? GROUP BY prompt_id HAVING count(*) = ?",
                    [self.gen_id, self.cfg.samples],
                ).fetchall()
            }
        todo = [p for p in self.prompts if p.prompt_id not in done]
        started = time.perf_counter()
        task = self._task("sampling", len(todo) * self.cfg.samples)
        if todo:
            self.lm.on_batch = lambda n: self._advance(task, n)
        for chunk in self._chunks(todo):
            texts = lmeval.sample_solutions(
                self.lm, self.cfg.dataset, chunk, self.fewshot, n=self.cfg.samples, shots=self.cfg.num_fewshot,
                apply_chat_template=self.cfg.apply_chat_template,
            )
            rows = []
            for prompt, responses in zip(chunk, texts, strict=True):
                for k, text in enumerate(responses):
                    answer, correct = self.dataset.check(str(text), prompt.answer)
                    rows.append({
                        "gen_id": self.gen_id, "prompt_id": prompt.prompt_id, "sample_idx": k, "text": str(text),
                        "answer": answer, "correct": correct, "nll": -float(text.logprob),
                        "n_tokens": int(text.n_tokens),
                    })
            with store.write(self.db) as con:
                store.upsert(con, "samples", rows)
            faults.point("sample_chunk")
        self.timings["sampling_s"] = time.perf_counter() - started
        return len(todo) * self.cfg.samples

    def _verify(self) -> int:
        by_id = {p.prompt_id: p for p in self.prompts}
        with store.read(self.db) as con:
            rows = con.execute(
                """SELECT s.prompt_id, s.sample_idx, s.text, s.answer, v.score IS NULL AS todo FROM samples s
                   LEFT JOIN verdicts v ON v.gen_id = s.gen_id AND v.prompt_id = s.prompt_id
                        AND v.sample_idx = s.sample_idx AND v.verifier_key = ?
                   WHERE s.gen_id = ? ORDER BY s.prompt_id, s.sample_idx""",
                [self.verifier_key, self.gen_id],
            ).fetchall()
        rows = [row for row in rows if row[0] in by_id]
        answers: dict[str, list] = {}
        for pid, _, _, answer, _ in rows:
            answers.setdefault(pid, []).append(answer)
        todo = [(pid, k, Candidate(by_id[pid], text, answer, tuple(answers[pid])))
                for pid, k, text, answer, missing in rows if missing]
        started = time.perf_counter()
        task = self._task("verifying", len(todo))
        for chunk in self._chunks_of_rows(todo):
            scores = self.method.verdicts(
                lambda: self.lm, [c for _, _, c in chunk], self.fewshot,
                shots=self.cfg.verifier_shots, apply_chat_template=self.cfg.apply_chat_template,
            )
            verdicts = [
                {"gen_id": self.gen_id, "verifier_key": self.verifier_key, "prompt_id": pid, "sample_idx": k,
                 "score": score, "raw": raw}
                for (pid, k, _), (score, raw) in zip(chunk, scores, strict=True)
            ]
            with store.write(self.db) as con:
                store.upsert(con, "verdicts", verdicts)
            self._advance(task, len(verdicts))
            faults.point("verify_chunk")
        self.timings["verification_s"] = time.perf_counter() - started
        return len(todo)

    def _chunks_of_rows(self, rows: list) -> list[list]:
        size = self.cfg.chunk_prompts * self.cfg.samples
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def load_arrays(self) -> dict[str, np.ndarray]:
        """(P, N) arrays of the stored samples and verdicts, in prompt order."""
        with store.read(self.db) as con:
            frame = con.execute(
                """SELECT s.prompt_id, s.sample_idx, s.text, s.answer, s.correct, s.nll, s.n_tokens, v.score
                   FROM samples s LEFT JOIN verdicts v ON v.gen_id = s.gen_id AND v.prompt_id = s.prompt_id
                        AND v.sample_idx = s.sample_idx AND v.verifier_key = ?
                   WHERE s.gen_id = ?""",
                [self.verifier_key, self.gen_id],
            ).df()
        order = {p.prompt_id: i for i, p in enumerate(self.prompts)}
        frame = frame[frame.prompt_id.isin(order)]
        P, N = len(self.prompts), self.cfg.samples
        if len(frame) != P * N or frame.score.isna().any():
            raise SIBenchError(f"evaluation {self.eval_id} is incomplete in the store ({len(frame)} of {P * N} "
                               "samples)")
        rows = frame.prompt_id.map(order).to_numpy()
        cols = frame.sample_idx.to_numpy()
        arrays: dict[str, np.ndarray] = {}
        for name, dtype in (("nll", float), ("n_tokens", int), ("correct", bool), ("score", float), ("answer", object),
                            ("text", object)):
            grid = np.empty((P, N), dtype=dtype)
            grid[rows, cols] = frame[name].to_numpy()
            arrays[name] = grid
        return arrays

    def _measure(self) -> tuple[dict[str, Measure], dict[str, str]]:
        started = time.perf_counter()
        a = self.load_arrays()
        metrics, selection = measure(a, sigma=self.cfg.sigma, n_boot=self.cfg.n_boot, seed=self.cfg.seed)
        picks = {p.prompt_id: a["text"][i, selection.index[i]] for i, p in enumerate(self.prompts)}
        self.timings["measures_s"] = time.perf_counter() - started
        with store.write(self.db) as con:
            store.upsert(con, "picks", pick_rows(self.eval_id, [p.prompt_id for p in self.prompts], selection))
            store.upsert(con, "metrics", metric_rows(self.eval_id, metrics))
            previous = store.fetch_one(con, "SELECT timings FROM evaluations WHERE eval_id = ?", [self.eval_id])[0]
            timings = {**json.loads(previous or "{}"), **{k: v for k, v in self.timings.items() if v > 0.01}}
            con.execute(
                "UPDATE evaluations SET status = 'done', finished_at = now(), timings = ? WHERE eval_id = ?",
                [json.dumps(timings), self.eval_id],
            )
        return metrics, picks

    # ---- progress ----
    def _task(self, phase: str, total: int):
        if self.progress is None or total == 0:
            return None
        return self.progress.add_task(f"{self.cfg.split} · {phase}", total=total)

    def _advance(self, task, n: int) -> None:
        if task is not None:
            self.progress.advance(task, n)


def measure(a: dict[str, np.ndarray], *, sigma: float, n_boot: int, seed: int) -> tuple[dict[str, Measure], Selection]:
    """The measures of (P, N) arrays of samples and verdicts (`Evaluation.load_arrays`) and the hybrid best-of-N
    picks they rest on."""
    selection = hybrid_best_of_n(a["score"], a["nll"], a["n_tokens"], sigma=sigma)
    metrics = compute_measures(
        a["nll"], a["n_tokens"], a["correct"], a["score"], selection,
        [list(row) for row in a["answer"]],
        n_boot=n_boot, seed=seed, sigma=sigma,
    )
    metrics["verifier_signal"] = verifier_signal(metrics)
    return metrics, selection


def pick_rows(eval_id: str, prompt_ids: list[str], selection: Selection) -> list[dict]:
    return [{"eval_id": eval_id, "prompt_id": pid, "sample_idx": int(selection.index[i]), "source": "self",
             "reason": "fallback" if selection.fallback[i] else "passed", "score": float(selection.score[i])}
            for i, pid in enumerate(prompt_ids)]


def metric_rows(eval_id: str, metrics: dict[str, Measure]) -> list[dict]:
    return [{"eval_id": eval_id, "name": name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
             "n": m.n, "reason": m.reason} for name, m in metrics.items()]


def evaluate(cfg: EvalConfig | None = None, *, db: str = store.DEFAULT_DB, progress: Any = None) -> EvalResult:
    """Run (or resume, or look up) one evaluation."""
    return Evaluation(cfg or EvalConfig(), db=db, progress=progress).run()
