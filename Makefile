# The two commands a new user needs:  make demo   and   make test
# Both create .venv on first use: torch==2.13.0 first (explicitly, so pip takes the CPU build
# this machine offers instead of a multi-gigabyte CUDA one), then sdlab with its dev extras.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdlab-installed
PYTEST_ARGS ?=
# Test processes: most tests wait on sockets, subprocesses and simulated instruments, so two
# workers take about half the time on two cores. Each worker is a pytest session with its
# own Ray instance. tests/conftest.py groups the tests: an end-to-end (slow) module's tests
# are handed out one by one, longest modules first, so both workers share them; every other
# module stays whole on one worker, so its module fixtures are built once (--dist loadgroup;
# --no-loadscope-reorder keeps that order instead of sorting by tests per group).
# PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_DIST ?= --dist loadgroup --no-loadscope-reorder

.PHONY: venv demo test lint typecheck unit bench bench-planners clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sdlab run examples/hartmann6.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_DIST) $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks.controller_overhead

# The planner benchmark (docs/benchmarks.md): every planner on the same problems and seeds.
# Resumable (runs are cached under benchmarks/results/planners); BENCH_ARGS narrows it, e.g.
#   make bench-planners BENCH_ARGS="--problems suzuki,branin --seeds 0-4"
BENCH_ARGS ?=
bench-planners: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[benchmarks]"
	$(BIN)/python -c "import importlib.util as u; exit(u.find_spec('olympus') is None)" \
		|| $(BIN)/python -m pip install --quiet --no-deps olymp
	$(BIN)/python -m benchmarks.planner_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
