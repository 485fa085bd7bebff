# The two set-up commands of the README: `make test` and `make demo`. Both start from nothing
# but python3: they make the virtual environment and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC ?= ../shared/sage-api/swagger-v3.1.json
LINT_PATHS := $(wildcard tap_sage target_sage tests bench scripts orchestrator hatch_build.py)

.PHONY: test lint typecheck pytest demo bench stress schemas check-schemas clean postgres loaders warehouse-all store-soak

$(STAMP): pyproject.toml hatch_build.py tap_sage/sage/_wirescan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) lint typecheck postgres loaders pytest

# The warehouse tests' PostgreSQL server: the distribution's package, installed with apt-get when
# its binaries are missing (root only; elsewhere the message says what to install). The server
# itself is started by the tests (the `pg_server` fixture) or by `scripts/pgserver.py start`.
postgres:
	$(PYTHON) scripts/pgserver.py install

# The real loaders the warehouse tests feed, each in .venv-loaders/<name> (their pins clash with
# ours); rebuilt only when their pins in scripts/loader_venvs.py change.
loaders:
	$(PYTHON) scripts/loader_venvs.py

# tests/test_warehouse.py with every stream instead of five (about two minutes more).
warehouse-all: $(STAMP) postgres loaders
	WAREHOUSE_STREAMS=all $(BIN)/pytest tests/test_warehouse.py

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The two-machine proof of the database token store for 60 s (make test runs it for 12 s).
store-soak: $(STAMP) postgres
	SAGE_MACHINES_SECONDS=60 $(BIN)/pytest -q -s tests/test_store_db_machines.py

# Regenerate the catalogue and schemas from Sage's spec (never committed).
schemas: $(STAMP)
	$(BIN)/python scripts/generate_catalogue.py --spec $(SPEC)

# Every kill point of target-sage against several versions and deletes (minutes; not in `test`).
.PHONY: test-target-matrix
test-target-matrix: $(STAMP)
	TARGET_MATRIX=full $(BIN)/pytest -q tests/test_target_matrix.py

# Fail when the committed catalogue or schemas differ from what the spec gives (writes nothing).
check-schemas: $(STAMP)
	$(BIN)/python scripts/generate_catalogue.py --spec $(SPEC) --check

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The list reader under concurrent writes, thousands of seeds (not part of `make test`):
# STRESS_SEEDS seeds x 16 cases (workers 1/2/4/8, sortable or not, deletion feed or not),
# stopping after STRESS_SECONDS; then the scan at concurrency 1 with 30% of its answers lost
# after they began (asked again once the next page was asked for), for STRESS_SECONDS / 3.
# A failure names its seed: replay it with `$(BIN)/python scripts/stress_reader.py --seed N`.
STRESS_SEEDS ?= 3000
STRESS_SECONDS ?= 300
stress: $(STAMP)
	$(BIN)/python scripts/stress_reader.py --seeds $(STRESS_SEEDS) --seconds $(STRESS_SECONDS)
	$(BIN)/python scripts/stress_reader.py --workers 1 --lost-answers 0.3 --seeds $(STRESS_SEEDS) \
		--seconds $$(( $(STRESS_SECONDS) / 3 ))

demo: $(STAMP)
	bash scripts/demo.sh

# The orchestrator example (orchestrator/, docs/scale.md): Dagster (dagster-meltano) runs two
# business partitions of tap-sage at once against the sandbox, with Meltano's state, the token
# store and the warehouse in one PostgreSQL database, twice (full, then incremental), and checks
# the result. Its own venv (orchestrator/.venv, stamped); about 5 minutes; not in `test`.
.PHONY: scale-demo
scale-demo: $(STAMP) postgres
	$(BIN)/python orchestrator/scale_demo.py

# Regenerate the settings and streams tables of README.md and meltano.yml from the executables'
# `--about` and discovery (tests/test_readme.py fails when they drift).
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python scripts/gen_settings_docs.py

clean:
	-[ ! -f .pgserver/server.json ] || $(PYTHON) scripts/pgserver.py stop --remove
	rm -rf $(VENV) .venv-loaders .pgserver .pytest_cache .mypy_cache .ruff_cache
	rm -rf orchestrator/.venv orchestrator/.meltano orchestrator/.work
