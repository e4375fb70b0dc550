"""The whole measurement under stock lm-eval: a solver task with --log_samples, the NLL task and a verifier task read
its samples file (--metadata samples=PATH), and `si-bench import-lm-eval` stores them as one evaluation whose measures
are those si-bench computes from the same samples and verdicts."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, index_our_tasks_only, run_cli, table_rows

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.evaluation import measure
from si_bench.lmeval import read_solver_log
from si_bench.verify import agreement, true_probability

SOLVER = "si_solver_arith"
BASE = ["--include_path", "tasks", "--device", "cpu", "--batch_size", "8", "--log_samples"]


def stock_lm_eval(model: list[str], task: str, out: Path, *extra: str) -> Path:
    """`lm_eval MODEL --tasks TASK ...` in this process; the folder it wrote."""
    from lm_eval.__main__ import cli_evaluate

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        index_our_tasks_only(patch)
        patch.setattr(sys, "argv", ["lm_eval", *model, *BASE, "--tasks", task, "--output_path", str(out), *extra])
        cli_evaluate()
    return out


def logged(folder: Path, task: str) -> Path:
    [path] = folder.rglob(f"samples_{task}_*.jsonl")
    return path


def outputs_of(*folders: Path) -> list[Path]:
    """The results and samples files of lm-eval runs."""
    return [f for folder in folders for f in folder.rglob("*") if f.suffix in (".json", ".jsonl")]


def assemble(target: Path, files: list[Path]) -> Path:
    """One --output_path holding these runs' files (as runs sharing an --output_path leave them)."""
    target.mkdir()
    for f in files:
        shutil.copy(f, target / f.name)
    return target


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """The stock runs, once: the solver (2 prompts x 4 samples, few tokens), its NLL, TF and majority verifiers."""
    from lm_eval.models.dummy import DummyLM

    root = tmp_path_factory.mktemp("lm-eval-runs")
    hf = ["--model", "hf", "--model_args", f"pretrained={tiny_model.path}"]
    solver = stock_lm_eval(hf, SOLVER, root / "solver", "--limit", "2", "--gen_kwargs", "max_gen_toks=12")
    samples = ["--metadata", f"samples={logged(solver, SOLVER)}"]
    nll = stock_lm_eval(hf, "si_nll", root / "nll", *samples)
    tf = stock_lm_eval(hf, "si_verify_tf", root / "tf", *samples)
    with pytest.MonkeyPatch.context() as patch:  # offline: lm-eval's dummy model would fetch a tokenizer to log
        patch.setattr(DummyLM, "tokenizer", None)
        majority = stock_lm_eval(["--model", "dummy"], "si_verify_majority", root / "majority", *samples)
    return {"root": root, "solver": solver, "nll": nll, "tf": tf, "majority": majority}


def all_runs(runs, folder: Path) -> Path:
    """One --output_path holding the four runs (two verifiers: --verifier picks one)."""
    return assemble(folder, outputs_of(runs["solver"], runs["nll"], runs["tf"], runs["majority"]))


@pytest.fixture(scope="module")
def outputs(runs) -> Path:
    return all_runs(runs, runs["root"] / "all")


def stored(db: str, eval_id: str) -> dict[str, np.ndarray]:
    """The stored samples and verdicts of an evaluation as (P, N) arrays (prompts in the order of its picks)."""
    with store.read(db) as con:
        frame = con.execute(
            """SELECT s.prompt_id, s.sample_idx, s.text, s.answer, s.correct, s.nll, s.n_tokens, v.score
               FROM evaluations e JOIN samples s USING (gen_id)
               JOIN verdicts v ON v.gen_id = s.gen_id AND v.verifier_key = e.verifier_key
                    AND v.prompt_id = s.prompt_id AND v.sample_idx = s.sample_idx
               WHERE e.eval_id = ? ORDER BY s.prompt_id, s.sample_idx""", [eval_id]).df()
    P = frame.prompt_id.nunique()
    return {name: frame[name].to_numpy().reshape(P, -1) for name in frame.columns}


def stored_metrics(db: str, eval_id: str) -> dict[str, tuple]:
    return {name: (value, lo, hi, n) for name, value, lo, hi, n in store.query(
        db, "SELECT name, value, ci_low, ci_high, n FROM metrics WHERE eval_id = ?", [eval_id]).itertuples(index=False)}


def imported(db: str, folder: Path, verifier: str = "tf") -> dict:
    result = run_cli("import-lm-eval", str(folder), "--db", db, "--verifier", verifier, "--n-boot", "50", "--json",
                     check=True)
    return json.loads(result.stdout)


def same(a, b) -> bool:
    return (a is None or a != a) and (b is None or b != b) or a == pytest.approx(b)


def test_imported_evaluation_is_what_si_bench_computes_from_its_samples_and_verdicts(runs, outputs, tiny_model, db):
    from lm_eval.models.huggingface import HFLM

    done = imported(db, outputs)
    assert done["eval_id"].startswith("lm-eval-") and done["gen_id"].startswith("lm-eval-")
    a = stored(db, done["eval_id"])
    # The samples are the solver's logged texts, their NLLs the NLL run's, the scores TF's mapping of the logged
    # choices' log-likelihoods; the token counts are those lm-eval scored.
    log = read_solver_log(logged(runs["solver"], SOLVER))
    texts = {(p.doc["prompt_id"], k): t for p in log.prompts for k, t in enumerate(p.texts)}
    keys = list(zip(a["prompt_id"].flat, a["sample_idx"].flat, strict=True))
    assert dict(zip(keys, a["text"].flat, strict=True)) == texts
    nll_rows = [json.loads(line) for line in logged(runs["nll"], "si_nll").read_text().splitlines()]
    by_key = {(r["doc"]["prompt_id"], r["doc"]["sample_idx"]): r for r in nll_rows}
    lm = HFLM(pretrained=tiny_model.path, device="cpu")
    for (pid, k), nll, n_tokens in zip(keys, a["nll"].flat, a["n_tokens"].flat, strict=True):
        doc = by_key[(pid, k)]["doc"]
        assert nll == pytest.approx(by_key[(pid, k)]["nll"])
        assert n_tokens == len(lm._encode_pair(doc["context"], doc["continuation"])[1])  # noqa: SLF001 (lm-eval's split)
    tf_rows = [json.loads(line) for line in logged(runs["tf"], "si_verify_tf").read_text().splitlines()]
    scores = {(r["doc"]["prompt_id"], r["doc"]["sample_idx"]): true_probability([float(c[0][0]) for c in r["resps"]])
              for r in tf_rows}
    assert [scores[key] for key in keys] == pytest.approx(list(a["score"].flat))
    # Its measures are si-bench's measures of those samples and verdicts, with the same bootstrap.
    expected, selection = measure(a, sigma=0.5, n_boot=50, seed=0)
    got = stored_metrics(db, done["eval_id"])
    assert set(got) == set(expected)
    for name, m in expected.items():
        assert all(same(x, y) for x, y in zip(got[name], (m.value, m.ci_low, m.ci_high, m.n), strict=True)), name
    picks = dict(store.query(db, "SELECT prompt_id, sample_idx FROM picks WHERE eval_id = ?",
                             [done["eval_id"]]).itertuples(index=False))
    assert [picks[pid] for pid in a["prompt_id"][:, 0]] == list(selection.index)
    # Its provenance says where it came from; the summary lists it like any evaluation.
    settings = json.loads(store.query(db, "SELECT settings FROM generations").settings[0])
    assert settings["solver"]["backend"] == "hf" and settings["solver"]["lm_eval_version"]
    assert settings["solver"]["model_args"]["pretrained"] == tiny_model.path
    [row] = store.query(db, "SELECT backend, verifier, n_prompts, n_samples, status FROM summary").itertuples(
        index=False)
    assert tuple(row) == ("lm-eval:hf", "tf", 2, 4, "done")


def test_the_tasks_send_what_si_bench_sends(runs):
    """The NLL requests are the solver's logged prompts and texts, as they were; the TF requests are the prompts
    si-bench renders for the same candidates (its few-shot examples and shots)."""
    from si_bench.datasets import get_dataset
    from si_bench.evaluation import fewshot_pool
    from si_bench.lmeval import build_task, quiet
    from si_bench.tasks import stage
    from si_bench.verify import VERIFIERS, candidate_doc, fewshot_docs

    log = read_solver_log(logged(runs["solver"], SOLVER))
    sent = {(p.doc["prompt_id"], k): (p.context, text) for p in log.prompts for k, text in enumerate(p.texts)}
    for row in map(json.loads, logged(runs["nll"], "si_nll").read_text().splitlines()):
        args = row["arguments"]["gen_args_0"]
        assert (args["arg_0"], args["arg_1"]) == sent[(row["doc"]["prompt_id"], row["doc"]["sample_idx"])]
    rows = [json.loads(line) for line in logged(runs["tf"], "si_verify_tf").read_text().splitlines()]
    questions = {p.doc["prompt_id"]: p.doc["question"] for p in log.prompts}
    docs = [candidate_doc(questions[r["doc"]["prompt_id"]], sent[(r["doc"]["prompt_id"], r["doc"]["sample_idx"])][1])
            for r in rows]
    train = fewshot_docs(VERIFIERS["tf"], fewshot_pool(get_dataset("arith")))
    with stage(train, docs) as key, quiet():
        task = build_task({"task": "si_verify_tf", "dataset_kwargs": {"docs_key": key}, "num_fewshot": 2})
        task.build_all_requests()
        inside = sorted((inst.doc_id, inst.idx, inst.args) for inst in task.instances)
    standalone = sorted((i, int(name.rsplit("_", 1)[1]), (args["arg_0"], args["arg_1"]))
                        for i, r in enumerate(rows) for name, args in r["arguments"].items())
    assert inside == standalone
    # One set of few-shot documents serves every model method: each reads its own target field.
    from si_bench.tasks import utils
    from si_bench.verify import model_methods

    standalone_train = utils.verifier_dataset(samples=str(logged(runs["solver"], SOLVER)))["train"].to_list()
    for method in model_methods():
        own = fewshot_docs(method, fewshot_pool(get_dataset("arith")))
        fields = ("question", "candidate", *method.correct_label)
        assert [{k: d[k] for k in fields} for d in standalone_train] == [{k: d[k] for k in fields} for d in own]


def test_a_repeated_import_adds_nothing_and_majority_shares_the_generation(outputs, db):
    first = imported(db, outputs)
    counts = {t: len(table_rows(db, t, "1")) for t in ("samples", "verdicts", "metrics", "picks", "evaluations")}
    again = run_cli("import-lm-eval", str(outputs), "--db", db, "--verifier", "tf", "--n-boot", "50", check=True)
    assert "nothing new" in again.stdout
    assert {t: len(table_rows(db, t, "1")) for t in counts} == counts
    # Stored numbers are never rewritten: other intervals over the same outputs are a conflict.
    other_boot = run_cli("import-lm-eval", str(outputs), "--db", db, "--verifier", "tf", "--n-boot", "40")
    assert other_boot.returncode == 2 and "import refused" in other_boot.stderr
    assert {t: len(table_rows(db, t, "1")) for t in counts} == counts
    other = imported(db, outputs, "majority")
    assert other["gen_id"] == first["gen_id"] and other["eval_id"] != first["eval_id"]
    a = stored(db, other["eval_id"])
    assert list(a["score"].flat) == pytest.approx([agreement(ans, list(row)) for row in a["answer"] for ans in row])


def test_fit_and_leaderboard_take_a_store_holding_it(outputs, db, tmp_path):
    from synth_store import make_run

    make_run(db, ts=(0, 1, 2, 3), P=6, n_boot=20)
    imported(db, outputs)
    assert run_cli("fit", "--db", db, "--n-boot", "20", "--json").returncode == 0
    board = run_cli("leaderboard", "--db", db, "--out", str(tmp_path / "board"), "--n-boot", "20", "--no-reference")
    assert board.returncode == 0, board.stderr


def drop_a_sample(folder: Path) -> None:
    path = logged(folder, "si_nll")
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")


def another_model(folder: Path) -> None:
    [path] = [p for p in folder.glob("results_*.json") if "si_nll" in p.read_text()]
    results = json.loads(path.read_text())
    path.write_text(json.dumps({**results, "model_name": "another/model"}))


def another_solver_output(folder: Path) -> None:
    path = logged(folder, SOLVER)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["filtered_resps"][0][0] += " changed"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def no_solver(folder: Path) -> None:
    logged(folder, SOLVER).unlink()


BAD = {
    "mismatched counts": (drop_a_sample, ["--verifier", "tf"], "scores 7 of the 8 samples"),
    "different models": (another_model, ["--verifier", "tf"], "different models"),
    "another solver output": (another_solver_output, ["--verifier", "tf"], "scored another solver output"),
    "no samples file": (no_solver, ["--verifier", "tf"], "has no samples of si_solver_arith beside it"),
    "two verifiers": (lambda folder: None, [], "2 verifier outputs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_outputs_are_one_line_and_write_nothing(runs, tmp_path, case):
    damage, args, message = BAD[case]
    folder = all_runs(runs, tmp_path / "outputs")
    damage(folder)
    db = str(tmp_path / "si.duckdb")
    result = run_cli("import-lm-eval", str(folder), "--db", db, *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not Path(db).exists()


def test_the_tasks_name_a_bad_samples_file_in_one_error(runs, tmp_path):
    """What the NLL and verifier tasks' datasets raise (lm-eval shows it) for a missing file, none named, and the
    samples file of another task."""
    from si_bench.tasks import utils

    for kwargs, message in (({"samples": str(tmp_path / "none.jsonl")}, "no solver samples file at"),
                            ({}, "--metadata samples=PATH"),
                            ({"samples": str(logged(runs["tf"], "si_verify_tf"))}, "not of an si-bench solver task")):
        for dataset in (utils.nll_dataset, utils.verifier_dataset):
            with pytest.raises(SIBenchError, match=message):
                dataset(**kwargs)


def test_an_empty_sample_has_no_nll_request(runs, tmp_path):
    """Nothing to score: the import gives it NLL 0 over 0 tokens (per-token measures then leave it out)."""
    from si_bench.lmeval import nll_docs

    rows = [json.loads(line) for line in logged(runs["solver"], SOLVER).read_text().splitlines()]
    rows[0]["filtered_resps"][0][1] = ""
    path = tmp_path / f"samples_{SOLVER}_2026-01-01T00-00-00.000000.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored = {(d["prompt_id"], d["sample_idx"]) for d in nll_docs(read_solver_log(path))}
    assert len(scored) == 7 and (rows[0]["doc"]["prompt_id"], 1) not in scored
