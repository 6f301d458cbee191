# bodycam: the two commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= run-data
STAMP := $(VENV)/.installed

.PHONY: setup run test lint unit integration bench faults clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/demo.py --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check agent hal hq drivers tests scripts
	$(BIN)/mypy agent hal hq

test: lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

faults: $(STAMP)
	$(BIN)/python scripts/faults.py --trials 25

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
