# Two commands on a fresh machine with Python 3.11+ and make:
#   make up     bootstrap, then run the whole pipeline locally (pass options with ARGS="...")
#   make test   bootstrap, then lint, type-check and run the whole test suite
PYTHON ?= python3
BOOTSTRAP := .bootstrap
UV := $(BOOTSTRAP)/bin/uv
SYNCED := .venv/.synced

.PHONY: up test lint typecheck pytest status schemas clean bench asyncapi openapi settings-reference fuzz soak

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"

# Re-sync only when the lock or a project file changed, so a second run costs nothing.
# Byte-compiled at install: where PYTHONDONTWRITEBYTECODE is set (this CI's machines), every
# process would otherwise compile ccxt's hundreds of exchange modules again (~10 s a service start).
$(SYNCED): $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml)
	$(UV) sync --locked --compile-bytecode
	@touch $@

up: $(SYNCED)
	$(UV) run --no-sync cryptoflow up $(ARGS)

status: $(SYNCED)
	$(UV) run --no-sync cryptoflow status $(ARGS)

lint: $(SYNCED)
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .

typecheck: $(SYNCED)
	$(UV) run --no-sync mypy libs/*/src services/*/src tools/*/src

# Two workers, each taking whole test files (module fixtures start once): most tests wait on
# servers and OS processes, so on 2 cores two at a time take little more than half the time.
PYTEST_WORKERS ?= 2
pytest: $(SYNCED)
	$(UV) run --no-sync pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

# Hostile input against running services; `make test` runs 1,000 messages per event type.
FUZZ_MESSAGES ?= 20000
fuzz: $(SYNCED)
	FUZZ_MESSAGES=$(FUZZ_MESSAGES) $(UV) run --no-sync pytest tests/e2e/test_fuzz_consumers.py $(PYTEST_ARGS)

# The stack under a random fault every ~30 s; last line `soak: minutes=… lost=0 duplicated=0 …`.
MINUTES ?= 5
RATE ?= 4
soak: $(SYNCED)
	MINUTES=$(MINUTES) RATE=$(RATE) $(UV) run --no-sync python tests/soak.py

# The AsyncAPI document of every subject; `make asyncapi ARGS=--check` verifies it is current.
asyncapi: $(SYNCED)
	$(UV) run --no-sync python -m cryptoflow_cli.asyncapi $(ARGS)

# docs/openapi.json: the read API's OpenAPI document; `make openapi ARGS=--check` verifies it is current.
openapi: $(SYNCED)
	$(UV) run --no-sync python -m cryptoflow_cli.openapi $(ARGS)

# docs/settings.md: every service's environment variables; `make settings-reference ARGS=--check`.
settings-reference: $(SYNCED)
	$(UV) run --no-sync python -m cryptoflow_cli.settings_reference $(ARGS)

schemas: $(SYNCED)
	$(UV) run --no-sync cryptoflow-schemas docs/schemas

# Benchmarks (not tests): `make bench` runs all; `make bench BENCH=loader ROWS=1000000` one.
# They start their own PostgreSQL (durable settings) unless DATABASE_URL is set.
BENCH ?= all
ROWS ?= 1000000
bench: $(SYNCED)
	ROWS=$(ROWS) $(UV) run --no-sync python -m bench $(BENCH)

clean:
	rm -rf .venv $(BOOTSTRAP) .mypy_cache .ruff_cache .pytest_cache
