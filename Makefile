# Two commands for a newcomer: `make run` and `make test` (only python3 and make needed).
# Everything is installed from uv.lock; uv itself comes from PyPI with pip, pinned with
# hashes in requirements-uv.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs into our .venv, never downloads a Python, and keeps pip and itself there.
# It compiles the .pyc files as pip does (uv does not by default): with
# PYTHONDONTWRITEBYTECODE set, imports would otherwise read source every time (3x slower).
UV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 $(BIN)/uv
SYNC := $(UV) sync --frozen --inexact --all-extras
# What `make lint` checks (the whole tree once it has been formatted).
LINT_PATHS ?= cds_service tests bench

.PHONY: venv run test lint bench check-rules explain lock clean

# A first run says what it is doing (about a minute from nothing, mostly downloads):
# one line per step, then uv's own progress and the packages it installs.
$(STAMP): pyproject.toml setup.py uv.lock requirements-uv.txt
	@test -x $(BIN)/python || { echo "make: creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "make: installing uv into $(VENV) (pinned with hashes: requirements-uv.txt)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-uv.txt
	@echo "make: installing the locked dependencies and this package (uv.lock; a first run downloads them)"
	$(SYNC)
	@touch $(STAMP)
	@echo "make: $(VENV) is ready"

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/cds-service check-rules
	@echo "make: starting gunicorn on http://$${CDS_HOST:-127.0.0.1}:$${CDS_PORT:-8080} (Ctrl-C stops it)"
	$(BIN)/gunicorn -c python:cds_service.web.gunicorn_conf 'cds_service.web.app:create_app()'

# The linters run first: a style or type error fails `make test` like a failing test.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# Then the serving-fault cases with the quiet-machine timing targets, which `make test`
# does not hold a shared machine to (tests/test_serving_faults.py, CDS_BENCH_TIMING).
bench: $(STAMP)
	$(BIN)/python bench/run.py
	CDS_BENCH_TIMING=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider \
		tests/test_serving_faults.py -k "slow_header or misbehaving"

check-rules: $(STAMP)
	$(BIN)/cds-service check-rules

# After changing dependencies in pyproject.toml: re-resolve uv.lock, then install it.
lock:
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --require-hashes -r requirements-uv.txt; }
	$(UV) lock
	$(SYNC)
	touch $(STAMP)

explain: $(STAMP)
	$(BIN)/cds-service check-rules --explain

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
