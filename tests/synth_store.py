"""Synthetic si-bench stores for tests: runs whose per-prompt NLLs follow the coupled law plus noise.

Each prompt has N samples: one "good" candidate (self-verification score 0.9, the only one above sigma, so
hybrid best-of-N picks it) whose NLL follows U_v(t), and N - 1 others whose NLLs bring the prompt's mean
to U_s(t). Metrics come from si_bench.measures.compute_measures and picks from si_bench.select, so the
rows are consistent with each other as in a real store.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

import numpy as np

from si_bench import store
from si_bench.measures import compute_measures
from si_bench.select import hybrid_best_of_n

TRUTH = {"us_inf": 1.0, "a_s": 2.0, "uv_inf": 0.6, "a_v": 1.2, "lam": 0.5}
TOKENS = 50


def law(t, p=TRUTH):
    t = np.asarray(t, dtype=float)
    return p["us_inf"] + p["a_s"] * np.exp(-p["lam"] * t), p["uv_inf"] + p["a_v"] * np.exp(-p["lam"] * t)


def make_run(db, run_id="tiny-gsm8k-regenerate-s0-abc", *, model="tiny", dataset="gsm8k", mode="regenerate",
             verifier="self", seed=0, ts=(0, 1, 2, 3, 4, 5), split="test", P=40, N=4, noise=0.25, truth=TRUTH,
             external_prompts=0, drop_prompt_at=None, n_boot=50) -> list[str]:
    """Write one run (runs row + one evaluation per t on `split`); returns the eval ids."""
    rng = np.random.default_rng(zlib.crc32(f"{run_id}|{split}|{seed}".encode()))
    base = datetime(2025, 1, 1)
    us, uv = law(ts, truth)
    difficulty = rng.normal(0.0, noise, size=P)  # shared over t: correlated noise, as with real prompts
    eval_ids = []
    with store.write(db) as con:
        if not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
            store.upsert(con, "runs", [{
                "run_id": run_id, "model": model, "backend": "hf", "dataset": dataset, "mode": mode,
                "verifier": verifier, "seed": seed, "config": {"model": model, "seed": seed, "mode": mode},
                "config_hash": "abc", "status": "done", "steps_done": int(max(ts)), "git_commit": "x",
                "versions": {}, "created_at": base, "updated_at": base + timedelta(hours=len(ts)),
            }])
        store.upsert(con, "prompts", [
            {"dataset": dataset, "split": split, "prompt_id": f"p{i}", "question": f"q{i}", "reference": "r",
             "answer": str(i), "meta": {}} for i in range(P)])
        for k, t in enumerate(ts):
            gen_id, eval_id, ck = f"{run_id}-{split}-g{k}", f"{run_id}-{split}-e{k}", f"{run_id}-ck{k}"
            eval_ids.append(eval_id)
            prompts = [i for i in range(P) if not (drop_prompt_at is not None and k == drop_prompt_at and i == 0)]
            Pk = len(prompts)
            d = difficulty[prompts]
            good = uv[k] + d + rng.normal(0, noise / 2, Pk)
            mean = us[k] + d + rng.normal(0, noise / 2, Pk)
            others = (N * mean - good)[:, None] / (N - 1) + rng.normal(0, noise / 4, (Pk, N - 1))
            others -= others.mean(axis=1, keepdims=True) - ((N * mean - good) / (N - 1))[:, None]
            nll = np.column_stack([good, others]) * TOKENS
            n_tokens = np.full((Pk, N), TOKENS)
            scores = np.column_stack([np.full(Pk, 0.9), np.full((Pk, N - 1), 0.1)])
            acc = 0.3 + 0.5 * (1 - np.exp(-truth["lam"] * t))
            correct = rng.random((Pk, N)) < acc
            correct[:, 0] = rng.random(Pk) < min(acc + 0.1, 1.0)
            sel = hybrid_best_of_n(scores, nll, n_tokens, 0.5)
            metrics = compute_measures(nll, n_tokens, correct, scores, sel, n_boot=n_boot, seed=0, sigma=0.5)
            when = base + timedelta(hours=k)
            store.upsert(con, "checkpoints", [{"checkpoint_id": ck, "run_id": run_id, "step": k, "t": float(t),
                                                "t_unit": "round", "created_at": when}])
            store.upsert(con, "generations", [{
                "gen_id": gen_id, "checkpoint_id": ck, "model": f"{model}@r{k}", "backend": "hf", "dataset": dataset,
                "split": split, "n_prompts": Pk, "n_samples": N, "settings": {}, "created_at": when}])
            store.upsert(con, "evaluations", [{
                "eval_id": eval_id, "gen_id": gen_id, "verifier": verifier, "verifier_key": "vk", "sigma": 0.5,
                "settings": {}, "status": "done", "timings": {}, "created_at": when, "finished_at": when}])
            store.upsert(con, "run_evals", [{"run_id": run_id, "eval_id": eval_id, "step": k, "t": float(t),
                                             "t_unit": "round", "role": split}])
            store.upsert(con, "samples", [
                {"gen_id": gen_id, "prompt_id": f"p{p}", "sample_idx": j, "text": f"s{j}", "answer": "a",
                 "correct": bool(correct[i, j]), "nll": float(nll[i, j]), "n_tokens": TOKENS}
                for i, p in enumerate(prompts) for j in range(N)])
            store.upsert(con, "verdicts", [
                {"gen_id": gen_id, "verifier_key": "vk", "prompt_id": f"p{p}", "sample_idx": j,
                 "score": float(scores[i, j]), "raw": {}} for i, p in enumerate(prompts) for j in range(N)])
            picks = [{"eval_id": eval_id, "prompt_id": f"p{p}", "sample_idx": int(sel.index[i]), "source": "self",
                      "reason": "fallback" if sel.fallback[i] else "passed", "score": float(sel.score[i])}
                     for i, p in enumerate(prompts)]
            for pk in picks[:external_prompts]:
                pk.update(sample_idx=None, source="external", reason="external", score=None)
            store.upsert(con, "picks", picks)
            store.upsert(con, "metrics", [
                {"eval_id": eval_id, "name": name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                 "n": m.n, "reason": m.reason} for name, m in metrics.items()])
    return eval_ids
