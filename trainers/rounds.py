"""Self-improvement rounds: sample -> self-verify -> best-of-N -> (external data) -> SFT -> evaluate.

Every step reads what the store already holds and does only what is missing, so a run killed at
any moment continues from its last finished step with the same command. The sampling that builds a
round's training data is that checkpoint's train-split measurement (stored as an evaluation, never
generated twice).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from si_bench import backends, faults, locks, store
from si_bench.datasets import Prompt, get_dataset, sample_prompts
from si_bench.errors import SIBenchError
from si_bench.evaluation import EvalResult, Evaluation, RunLink, fewshot_pool
from si_bench.models import ModelRef, resolve_model
from si_bench.options import check_directory
from si_bench.progress import scope
from si_bench.trainers.config import SelfImproveConfig
from si_bench.trainers.external import check_budget, check_source, choose_prompts, source_for
from si_bench.trainers.sft import checkpoint_ref, fine_tune


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _versions() -> dict:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("si-bench", "lm_eval", "trl", "transformers", "torch", "peft")}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Checkpoint:
    """A step of a run: its id (lineage: run, step, parent and weights) and the model it loads."""

    step: int
    checkpoint_id: str
    model: ModelRef


def lineage_id(run_id: str, step: int, parent_id: str, weights: str) -> str:
    """Two steps with identical weights are still two checkpoints, each with its own parent."""
    blob = json.dumps({"run": run_id, "step": step, "parent": parent_id, "weights": weights}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SelfImproveRun:
    """One run in the store: its configuration, checkpoints and measurements."""

    def __init__(self, cfg: SelfImproveConfig, db: str = store.DEFAULT_DB, workdir: str | None = None,
                 progress: Any = None, log: Any = print):
        self.db, self.progress, self.log = db, progress, log
        self.run_id = cfg.run_id
        self.cfg = self._with_shares(cfg)
        self.workdir = Path(workdir or Path(db).resolve().parent / "si-bench-runs") / self.run_id
        check_directory(self.workdir, "the work directory")
        self.dataset = get_dataset(cfg.dataset)
        self.base = resolve_model(cfg.model)
        backends.check_model(cfg.backend, self.base.path)
        self.timings: dict[str, float] = {}
        # A backend that can serves every round's adapter on the base model it loads for the first measurement.
        self.serving = backends.serving_settings(cfg.backend, cfg.lora_r if cfg.lora else None)
        pool = {p.prompt_id for p in fewshot_pool(self.dataset)}
        train = [p for p in self.dataset.load(self.dataset.train_split) if p.prompt_id not in pool]
        self.train_prompts = sample_prompts(train, cfg.train_prompts, seed=cfg.seed)
        # Everything that can fail on the user's input fails here, before anything is written.
        self.external_counts()
        check_source(cfg.external)

    def _with_shares(self, cfg: SelfImproveConfig) -> SelfImproveConfig:
        """The external budget's shares as the run stored them when it was made (new runs resolve them now)."""
        if not cfg.external:
            return cfg
        stored = store.query(self.db, "SELECT config FROM runs WHERE run_id = ?", [self.run_id]) \
            if Path(self.db).exists() else None
        source = SelfImproveConfig.from_json(stored.config[0]) if stored is not None and len(stored) else cfg
        return replace(cfg, external_shares=source.shares())

    def external_counts(self) -> list[int]:
        """External items per round (regenerate mode), from the budget and the allocation's shares."""
        if not self.cfg.external:
            return [0] * self.cfg.rounds
        return check_budget(self.cfg.shares(), self.cfg.budget, len(self.train_prompts))

    # ---------- bookkeeping ----------
    @classmethod
    def load(cls, run_id: str, db: str, **kwargs: Any) -> "SelfImproveRun":
        rows = store.query(db, "SELECT config FROM runs WHERE run_id = ?", [run_id])
        if rows.empty:
            raise SIBenchError(f"unknown run id {run_id!r} (see `si-bench runs`)")
        return cls(SelfImproveConfig.from_json(rows.config[0]), db, **kwargs)

    def register(self) -> None:
        with store.write(self.db) as con:
            exists = con.execute("SELECT 1 FROM runs WHERE run_id = ?", [self.run_id]).fetchall()
            if exists:
                con.execute("UPDATE runs SET config = ?, updated_at = now() WHERE run_id = ?",
                            [self.cfg.to_json(), self.run_id])
                return
            store.upsert(con, "runs", [{
                "run_id": self.run_id, "model": self.cfg.model, "backend": self.cfg.backend,
                "dataset": self.cfg.dataset, "mode": self.cfg.mode, "verifier": self.cfg.verifier,
                "seed": self.cfg.seed, "config": self.cfg.to_json(), "config_hash": self.cfg.config_hash,
                "status": "running", "steps_done": 0, "git_commit": _git_commit(), "versions": _versions(),
                "created_at": _now(), "updated_at": _now(), "external_used": 0,
            }])

    def steps_total(self) -> int:
        return self.cfg.rounds * (2 if self.cfg.mode == "fixed" else 1)

    def t_of(self, step: int) -> float:
        return step / 2 if self.cfg.mode == "fixed" else float(step)

    @property
    def t_unit(self) -> str:
        return "epoch" if self.cfg.mode == "fixed" else "round"

    def checkpoint(self, step: int) -> Checkpoint:
        """Step `step`'s checkpoint, after checking that its directory still holds the weights recorded for it."""
        if step == 0:
            return Checkpoint(0, self.base.identity, self.base)
        rows = store.query(self.db, "SELECT checkpoint_id, path, weights_hash FROM checkpoints WHERE run_id = ? "
                                    "AND step = ?", [self.run_id, step])
        if rows.empty:
            raise SIBenchError(f"run {self.run_id} has no checkpoint for step {step}")
        path = Path(rows.path[0])
        if not path.exists():
            raise SIBenchError(f"checkpoint directory {path} of run {self.run_id} (step {step}) has vanished")
        ref = checkpoint_ref(self.base, path, self.cfg)
        if ref.identity != rows.weights_hash[0]:
            raise SIBenchError(f"checkpoint directory {path} holds other weights than step {step} of run "
                               f"{self.run_id} recorded ({ref.identity}, recorded {rows.weights_hash[0]}); "
                               "put the recorded checkpoint back or start a new run")
        return Checkpoint(step, str(rows.checkpoint_id[0]), ref)

    def steps_done(self) -> int:
        rows = store.query(self.db, "SELECT coalesce(max(step), 0) AS n FROM checkpoints WHERE run_id = ?",
                           [self.run_id])
        return int(rows.n[0])

    # ---------- measurements ----------
    def _evaluate(self, checkpoint: Checkpoint, split: str, prompts: list[Prompt] | None = None) -> EvalResult:
        step = checkpoint.step
        limit = self.cfg.test_limit if split == "test" else None
        started = time.perf_counter()
        link = RunLink(self.run_id, step, self.t_of(step), self.t_unit, split, checkpoint.checkpoint_id)
        result = Evaluation(self.cfg.eval_config(split, limit), db=self.db, model=checkpoint.model, prompts=prompts,
                            link=link, progress=self.progress, serving=self.serving).run()
        phase = "evaluation" if split == "test" else "train_sampling"
        self.timings[f"{phase}_s"] = self.timings.get(f"{phase}_s", 0.0) + time.perf_counter() - started
        return result

    def measure_test(self, step: int) -> EvalResult:
        return self._evaluate(self.checkpoint(step), "test")

    def _wants_test(self, step: int) -> bool:
        total = self.steps_total()
        every = 1 if self.cfg.mode == "fixed" else self.cfg.eval_every
        return step == total or step % every == 0

    # ---------- training data ----------
    def _training_rows(self, step: int, picks_eval: EvalResult) -> list[dict]:
        """Self picks, with the round's external share swapped in; stored so the round is reproducible."""
        with store.read(self.db) as con:
            stored = con.execute(
                "SELECT prompt_id, completion FROM training_data WHERE run_id = ? AND step = ?", [self.run_id, step]
            ).fetchall()
        if len(stored) == len(self.train_prompts):
            completions = dict(stored)
        else:
            completions = dict(picks_eval.picks)
            sources = {pid: "self" for pid in completions}
            n_external = self.external_counts()[step - 1] if self.cfg.mode == "regenerate" else 0
            if n_external and self.cfg.external:
                chosen = choose_prompts([p.prompt_id for p in self.train_prompts], n_external, self.cfg.seed, step)
                external = source_for(self.cfg.external)(
                    [p for p in self.train_prompts if p.prompt_id in set(chosen)], cfg=self.cfg, db=self.db,
                    progress=self.progress,
                )
                for pid in chosen:
                    completions[pid] = external[pid]
                    sources[pid] = "external"
            with store.write(self.db) as con:
                pick_rows = dict(
                    (r[0], (r[1], r[2])) for r in con.execute(
                        "SELECT prompt_id, sample_idx, score FROM picks WHERE eval_id = ?", [picks_eval.eval_id]
                    ).fetchall()
                )
                store.upsert(con, "training_data", [
                    {"run_id": self.run_id, "step": step, "prompt_id": pid, "source": sources[pid],
                     "eval_id": picks_eval.eval_id if sources[pid] == "self" else None,
                     "sample_idx": pick_rows[pid][0] if sources[pid] == "self" else None,
                     "score": pick_rows[pid][1] if sources[pid] == "self" else None, "completion": completions[pid]}
                    for pid in completions
                ])
                con.execute(
                    "UPDATE runs SET external_used = (SELECT count(*) FROM training_data WHERE run_id = ? "
                    "AND source = 'external') WHERE run_id = ?", [self.run_id, self.run_id],
                )
        return self._sft_rows(completions)

    def _sft_rows(self, completions: dict[str, str]) -> list[dict]:
        from si_bench.lmeval import render_contexts

        tokenizer = None
        if self.cfg.apply_chat_template:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.base.path)
        contexts = render_contexts(
            self.cfg.dataset, self.train_prompts, fewshot_pool(self.dataset), shots=self.cfg.num_fewshot,
            apply_chat_template=self.cfg.apply_chat_template, tokenizer=tokenizer,
        )
        stop = "\n\n"  # the solver tasks stop there: training on it teaches the model to stop
        return [
            {"prompt": ctx, "completion": " " + completions[p.prompt_id].strip() + stop}
            for p, ctx in zip(self.train_prompts, contexts, strict=True)
        ]

    # ---------- one step ----------
    def _train(self, step: int, parent: Checkpoint, rows: list[dict], epochs: float | None = None) -> None:
        target = self.workdir / f"step-{step:03d}"
        for scratch in self.workdir.glob(f".{target.name}-*"):  # left by a step killed while training
            shutil.rmtree(scratch, ignore_errors=True)
        data_hash = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
        self.log(f"{self.run_id} · step {step}: fine-tuning on {len(rows)} rows")
        started = time.perf_counter()
        backends.pause(self.cfg.backend)  # the sampling engine gives the accelerator's memory to the trainer
        stats = fine_tune(parent.model, rows, target, self.cfg, seed=self.cfg.seed * 1000 + step, epochs=epochs,
                          progress=self.progress)
        self.timings["training_s"] = self.timings.get("training_s", 0.0) + time.perf_counter() - started
        ref = checkpoint_ref(self.base, target, self.cfg)
        with store.write(self.db) as con:
            store.upsert(con, "checkpoints", [{
                "checkpoint_id": lineage_id(self.run_id, step, parent.checkpoint_id, ref.identity),
                "run_id": self.run_id, "step": step, "t": self.t_of(step),
                "t_unit": self.t_unit, "parent_id": parent.checkpoint_id, "model_spec": self.cfg.model,
                "path": str(target), "weights_hash": ref.identity, "data_hash": data_hash,
                "hyperparameters": {**{k: getattr(self.cfg, k) for k in (
                    "lora", "lora_r", "learning_rate", "epochs_per_round", "train_batch_size", "grad_accum")},
                    "lora_alpha": self.cfg.effective_lora_alpha, **stats, "epochs": epochs},
                "created_at": _now(),
            }])

    def _at(self, step: int):
        """Progress inside names the step: "step 3/10"."""
        return scope(self.progress, f"step {step}/{self.steps_total()}")

    def train_step(self) -> int:
        """Do the next step (a round, or a half epoch in fixed mode); return its number."""
        step = self.steps_done() + 1
        if step > self.steps_total():  # only a second writer could get here; the run lock keeps it out
            raise SIBenchError(f"run {self.run_id} has all {self.steps_total()} steps its settings ask for")
        with self._at(step):
            return self._train_step(step)

    def _train_step(self, step: int) -> int:
        parent = self.checkpoint(step - 1)
        if self.cfg.mode == "regenerate":
            picks = self._evaluate(parent, "train", prompts=self.train_prompts)
            rows = self._training_rows(step, picks)
            self._train(step, parent, rows)
        else:
            picks = self._evaluate(self.checkpoint(0), "train", prompts=self.train_prompts)
            rows = self._training_rows(0, picks)
            # Each half epoch is its own SFT call from the previous adapter (resumable at that grain); the
            # optimiser state restarts at each step, as it does between regenerate rounds.
            epoch, half = divmod(step - 1, 2)
            order = list(range(len(rows)))
            random.Random(f"fixed-{self.cfg.seed}-{epoch}").shuffle(order)
            part = order[: len(order) // 2] if half == 0 else order[len(order) // 2 :]
            self._train(step, parent, [rows[i] for i in part], epochs=1.0)
        faults.point("after_training")
        if self._wants_test(step):
            self.measure_test(step)
        self._finish_step(step)
        return step

    def _finish_step(self, step: int) -> None:
        done = step >= self.steps_total()
        with store.write(self.db) as con:
            con.execute("UPDATE runs SET steps_done = ?, status = ?, updated_at = now() WHERE run_id = ?",
                        [step, "done" if done else "running", self.run_id])
        if self.cfg.keep_checkpoints == "last":
            for old in self.workdir.glob("step-*"):
                if old.name != f"step-{step:03d}":
                    shutil.rmtree(old, ignore_errors=True)

    def run(self) -> None:
        """Round-0 measurement plus every remaining step; a rerun continues where it stopped. One process at a time
        (another is refused, naming this one)."""
        with locks.run_lock(self.db, self.run_id):
            self._run()

    def _run(self) -> None:
        self.register()
        while True:
            done = self.steps_done()
            if done == 0 or self._wants_test(done):
                with self._at(done):
                    self.measure_test(done)  # a no-op when stored; fills in a step killed before its measurement
            if done >= self.steps_total():
                break
            self.train_step()
        self._finish_step(self.steps_done())

    def next_step(self) -> int:
        """`train-round`: the next step of this run (a finished run gets one more round first)."""
        with locks.run_lock(self.db, self.run_id):
            return self._next_step()

    def _next_step(self) -> int:
        self.checkpoint(self.steps_done())  # fails before writing anything if its directory vanished
        if self.steps_done() >= self.steps_total():
            self.extend()
        if self.steps_done() == 0:
            with self._at(0):
                self.measure_test(0)
        return self.train_step()

    def extend(self) -> None:
        """One more round on a finished run (`train-round`): allowed while no external budget was planned."""
        if self.cfg.external:
            raise SIBenchError(f"run {self.run_id} planned its external budget over {self.cfg.rounds} rounds; "
                               "start a new run with more --rounds instead")
        self.cfg.rounds += 1
        self.register()
