"""`si-bench import`: merge another store into this one, in one transaction.

Two rows are the same row when their key is the same and they hold the same measurement (docs/design.md,
"The same measurement"): timestamps, timings, local paths and provenance (git commit, package versions, the
checkpoint that first sampled a generation) are not results, and floats that agree to float32 arithmetic
(FLOAT_RTOL, FLOAT_ATOL) are equal, so the same work done in two processes or on two machines merges cleanly.
Progress is not a conflict either: a run further along, or an evaluation finished on one side and still running
on the other, replaces the copy behind it.

A generation sampled on both sides with different texts (or verdicts beyond float noise: another CPU can pick
another token) is kept whole from one side, ours unless `--on-conflict theirs`, with the evaluations over it,
never mixed, and the result says how many were kept from where. Any other difference is a conflict: it refuses
the whole import by default, naming the first conflicting key; `--on-conflict theirs` or `ours` decides instead,
and a row family always moves together: a generation with its samples, verdicts and the evaluations over them;
an evaluation with its metrics and picks; a run with its checkpoints, links and training data.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.options import Options, option

ON_CONFLICT = ("refuse", "theirs", "ours")
# Float32 noise (docs/design.md, "The same measurement"): a sum of n float32 terms is off by about sqrt(n) eps
# (eps = 1.2e-7), so 1e-5 covers an NLL summed over thousands of tokens on another CPU's kernels; the 3e-6
# reported between thread counts on an NLL near 30 is 1e-7. The absolute part is for values near 0 (a gap).
FLOAT_RTOL, FLOAT_ATOL = 1e-5, 1e-6
NOT_RESULTS = {"created_at", "updated_at", "finished_at", "fitted_at", "timings", "path", "git_commit", "versions",
               "raw", "hyperparameters"}
SOURCE = "import_src"


@dataclass
class ImportOptions(Options):
    other: str = option(help="The other si-bench store (opened read-only).", argument=True)
    on_conflict: str = option("refuse", "When a row differs in both stores: refuse the import (default), take "
                                        "theirs or keep ours (row families move together).", choices=ON_CONFLICT)


@dataclass(frozen=True)
class Table:
    name: str
    match: tuple[str, ...]  # the columns two copies of one row share
    family: str | None  # the family's key column: run_id, gen_id or eval_id (None: a row of its own)
    compare: tuple[str, ...] | None = None  # result columns (default: all but match and NOT_RESULTS)
    where: str = "TRUE"  # which rows of the table this entry covers (alias r)
    both: str = "TRUE"  # compare only where this holds for both copies (aliases s: theirs, t: ours)


TABLES = [
    Table("prompts", ("dataset", "split", "prompt_id"), None),
    Table("checkpoints", ("checkpoint_id",), None, where="r.run_id IS NULL"),
    Table("checkpoints", ("run_id", "step"), "run_id", ("checkpoint_id", "weights_hash", "parent_id", "data_hash"),
          where="r.run_id IS NOT NULL"),
    Table("runs", ("run_id",), "run_id", ("model", "backend", "dataset", "mode", "verifier", "seed", "config_hash")),
    Table("run_evals", ("run_id", "step", "role"), "run_id", ("eval_id", "t", "t_unit")),
    Table("training_data", ("run_id", "step", "prompt_id"), "run_id"),
    # A generation's model is a run checkpoint's local path; its checkpoint_id says which weights it sampled.
    # Its checkpoint_id is provenance: the same weights reached in two runs give one gen_id (settings name the
    # weights), and the generation keeps the lineage of the run that sampled it first.
    Table("generations", ("gen_id",), "gen_id", ("backend", "dataset", "split", "n_prompts", "n_samples", "settings")),
    Table("samples", ("gen_id", "prompt_id", "sample_idx"), "gen_id"),
    Table("verdicts", ("gen_id", "verifier_key", "prompt_id", "sample_idx"), "gen_id"),
    Table("evaluations", ("eval_id",), "eval_id", ("gen_id", "verifier", "verifier_key", "sigma", "settings"),
          both="s.status = 'done' AND t.status = 'done'"),
    Table("metrics", ("eval_id", "name"), "eval_id"),
    Table("picks", ("eval_id", "prompt_id"), "eval_id"),
]
SAMPLED = ("samples", "verdicts")  # a difference here is a generation sampled twice, kept whole from one side
OWN_KEYS = {t.name: t.match for t in TABLES if t.family is None}  # rows that are a family of their own
# Every table, in an order that keeps references resolvable, with the family key its rows carry.
FAMILY_KEY = {"prompts": None, "runs": "run_id", "checkpoints": "run_id", "generations": "gen_id",
              "samples": "gen_id", "verdicts": "gen_id", "evaluations": "eval_id", "metrics": "eval_id",
              "picks": "eval_id", "run_evals": "run_id", "training_data": "run_id", "fits": None}
# Where their copy is further along, it replaces ours (progress, not a conflict).
AHEAD = {
    "runs": "s.steps_done > t.steps_done OR (s.steps_done = t.steps_done AND s.status = 'done' AND t.status <> 'done')",
    "evaluations": "s.status = 'done' AND t.status <> 'done'",
    "fits": "s.fitted_at > t.fitted_at",
}


class Merged(dict):
    """{table: {"added": n, "updated": n}}, and the generations sampled on both sides with different texts:
    `diverged` (their gen_ids) were kept whole from side `kept` (ours or theirs)."""

    def __init__(self, counts: dict, diverged: list[str], kept: str):
        super().__init__(counts)
        self.diverged, self.kept = diverged, kept


def merge(source_db, target_db=store.DEFAULT_DB, on_conflict: str = "refuse") -> Merged:
    """Merge source_db into target_db; returns {table: {"added": n, "updated": n}} (a `Merged`)."""
    src, dst = Path(source_db), Path(target_db)
    if on_conflict not in ON_CONFLICT:
        raise SIBenchError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}")
    if not src.is_file():
        raise SIBenchError(f"no store to import at {src}")
    if dst.exists() and src.resolve() == dst.resolve():
        raise SIBenchError(f"cannot import {src} into itself")
    with tempfile.TemporaryDirectory(prefix="si-bench-import-") as scratch:
        source = _migrated(src, Path(scratch))
        with store.write(dst) as con:
            _attach(con, source, src)
            return _Merge(con, src, on_conflict).run()


def _migrated(src: Path, scratch: Path) -> Path:
    """A store of an older schema is merged from a migrated copy; the original is never written."""
    try:
        version = store.schema_version(src)
    except (duckdb.Error, SIBenchError):
        return src  # not a store: _attach says what is wrong with it
    if version is None or version >= store.SCHEMA_VERSION:
        return src  # not a store, or a current or newer one: _attach says what is wrong with it, if anything
    copy = scratch / src.name
    shutil.copy(src, copy)
    with store.write(copy):
        pass
    return copy


def _attach(con, path: Path, named: Path) -> None:
    try:
        con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS {SOURCE} (READ_ONLY)")
    except duckdb.Error as exc:
        raise SIBenchError(f"{named} is not a DuckDB file, or cannot be opened: {str(exc).splitlines()[0]}") from None
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'", [SOURCE]).fetchall()}
    if "schema_version" not in tables:
        raise SIBenchError(f"{named} is not an si-bench store (no schema_version table)")
    version = con.execute(f"SELECT coalesce(max(version), 0) FROM {SOURCE}.schema_version").fetchone()[0]
    if version > store.SCHEMA_VERSION:
        raise SIBenchError(f"{named} has schema v{version}, newer than this si-bench (v{store.SCHEMA_VERSION}); "
                           "upgrade si-bench first")


def _columns(con, table: str) -> dict[str, str]:
    rows = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                       "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]).fetchall()
    return dict(rows)


def _same(column: str, kind: str) -> str:
    if kind == "DOUBLE":
        a, b = f"s.{column}", f"t.{column}"
        return (f"(({a} IS NULL AND {b} IS NULL) OR {a} = {b} OR "
                f"abs({a} - {b}) <= {FLOAT_ATOL} + {FLOAT_RTOL} * greatest(abs({a}), abs({b})))")
    return f"s.{column}::VARCHAR IS NOT DISTINCT FROM t.{column}::VARCHAR"


class _Merge:
    def __init__(self, con, named: Path, on_conflict: str):
        self.con, self.named, self.on_conflict = con, named, on_conflict
        self.counts: dict[str, dict[str, int]] = {}
        self.diverged: list[str] = []

    def run(self) -> Merged:
        conflicts = self._conflicts()
        theirs = self.on_conflict == "theirs"
        if theirs:
            self._replace(conflicts)
        skip = {} if theirs else conflicts  # refuse: only generations sampled twice remain, kept ours
        self._add(skip=skip)
        self._take_progress(skip=skip)
        return Merged(dict(sorted(self.counts.items())), self.diverged, "theirs" if theirs else "ours")

    def _count(self, table: str, kind: str, n: int) -> None:
        self.counts.setdefault(table, {"added": 0, "updated": 0})[kind] += int(n)

    # ---- conflicts ----
    def _conflicts(self) -> dict[str, set[str]]:
        """The families (by key column: run_id, gen_id, eval_id) whose rows differ in the two stores; rows of
        their own (prompts, base checkpoints) count as families keyed by their primary key. A generation whose
        samples or verdicts differ was sampled twice: it is kept whole from one side, never refused."""
        differing = [(table, key, row) for table in TABLES for key, row in self._differing(table)]
        self.diverged = sorted({key for table, key, _ in differing if table.name in SAMPLED})
        found: dict[str, set[str]] = {"gen_id": set(self.diverged)}
        self._with_evaluations(found)
        for table, key, row in differing:
            family = table.family or table.name
            if key in found.get(family, ()):
                continue  # part of a generation sampled twice, or of a family already chosen
            if self.on_conflict == "refuse":
                raise SIBenchError(
                    f"import refused: {table.name} ({row}) differs in {self.named} and here; "
                    "--on-conflict theirs or ours decides (row families move together)")
            found.setdefault(family, set()).add(key)
        self._with_evaluations(found)
        return found

    def _with_evaluations(self, found: dict[str, set[str]]) -> None:
        """A generation carries the evaluations over it, theirs and ours."""
        gens = sorted(found.get("gen_id", ()))
        if not gens:
            return
        for db in (f"{SOURCE}.main", "main"):
            found.setdefault("eval_id", set()).update(r[0] for r in self.con.execute(
                f"SELECT eval_id FROM {db}.evaluations WHERE gen_id IN (SELECT unnest(?::VARCHAR[]))", [gens]
            ).fetchall())

    def _differing(self, table: Table) -> list[tuple[str, str]]:
        kinds = _columns(self.con, table.name)
        compare = table.compare or tuple(c for c in kinds if c not in table.match and c not in NOT_RESULTS)
        match = " AND ".join(f"s.{c} IS NOT DISTINCT FROM t.{c}" for c in table.match)
        differs = " OR ".join(f"NOT {_same(c, kinds[c])}" for c in compare)
        family = f"s.{table.family}" if table.family else _own_key(table.name, "s")
        described = " || ', ' || ".join(f"'{c}=' || coalesce(s.{c}::VARCHAR, 'NULL')" for c in table.match)
        where = f"({table.where.replace('r.', 's.')}) AND ({table.where.replace('r.', 't.')}) AND ({table.both})"
        return self.con.execute(
            f"SELECT DISTINCT {family}, {described} FROM {SOURCE}.main.{table.name} s "
            f"JOIN main.{table.name} t ON {match} WHERE {where} AND ({differs}) ORDER BY 2").fetchall()

    # ---- writing ----
    def _replace(self, families: dict[str, set[str]]) -> None:
        """Theirs: every row of a conflicting family is deleted here and copied from their store."""
        for table in reversed(FAMILY_KEY):
            doomed, params = _belongs(table, families, table)
            if params:
                self.con.execute(f"DELETE FROM main.{table} WHERE {doomed}", params)
        for table in FAMILY_KEY:
            chosen, params = _belongs(table, families, "s")
            if params:
                self._count(table, "updated", self._insert(table, f"WHERE {chosen}", params))

    def _add(self, skip: dict[str, set[str]]) -> None:
        for table in FAMILY_KEY:
            match = " AND ".join(f"t.{c} = s.{c}" for c in store.primary_key(self.con, table))
            skipped, params = _belongs(table, skip, "s")
            n = self._insert(table, f"WHERE NOT EXISTS (SELECT 1 FROM main.{table} t WHERE {match}) "
                                    f"AND NOT ({skipped})", params)
            self._count(table, "added", n)

    def _take_progress(self, skip: dict[str, set[str]]) -> None:
        for table, ahead in AHEAD.items():
            pk = store.primary_key(self.con, table)
            match = " AND ".join(f"t.{c} = s.{c}" for c in pk)
            skipped, params = _belongs(table, skip, "s")
            keys = self.con.execute(f"SELECT {', '.join('s.' + c for c in pk)} FROM {SOURCE}.main.{table} s "
                                    f"JOIN main.{table} t ON {match} WHERE ({ahead}) AND NOT ({skipped})",
                                    params).fetchall()
            where = " AND ".join(f"{c} = ?" for c in pk)
            for key in keys:
                self.con.execute(f"DELETE FROM main.{table} WHERE {where}", list(key))
                self._insert(table, "WHERE " + " AND ".join(f"s.{c} = ?" for c in pk), list(key))
            self._count(table, "updated", len(keys))

    def _insert(self, table: str, where: str, params) -> int:
        """Copy their rows of `table` matching `where` (alias s); returns how many."""
        cols = list(_columns(self.con, table))
        query = f"SELECT {', '.join(f's.{c}' for c in cols)} FROM {SOURCE}.main.{table} s {where}"
        return self.con.execute(f"INSERT INTO main.{table} ({', '.join(cols)}) {query}", params).fetchone()[0]


def _own_key(table: str, alias: str) -> str:
    """The key of a row that is a family of its own."""
    return "concat_ws('|', " + ", ".join(f"{alias}.{c}" for c in OWN_KEYS[table]) + ")"


def _belongs(table: str, families: dict[str, set[str]], alias: str) -> tuple[str, dict]:
    """SQL (and its parameters) selecting the rows of `table` (under `alias`) in one of `families`."""
    clauses, params = [], {}
    column = FAMILY_KEY[table]
    if column and families.get(column):
        clauses.append(f"{alias}.{column} IN (SELECT unnest($family::VARCHAR[]))")
        params["family"] = sorted(families[column])
    own = families.get(table)
    if own:
        clauses.append(f"{_own_key(table, alias)} IN (SELECT unnest($own::VARCHAR[]))")
        params["own"] = sorted(own)
    return (" OR ".join(clauses) or "FALSE"), params
