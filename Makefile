# Two commands for a newcomer: `make run` and `make test` (only python3 and make needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench check-rules explain clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/cds-service check-rules
	$(BIN)/gunicorn -c python:cds_service.gunicorn_conf 'cds_service.app:create_app()'

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

check-rules: $(STAMP)
	$(BIN)/cds-service check-rules

explain: $(STAMP)
	$(BIN)/cds-service check-rules --explain

clean:
	rm -rf $(VENV) .pytest_cache
