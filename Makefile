# parwatch: two commands. `make run` starts the whole stack on embedded
# defaults; `make test` runs the test suite. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test venv clean benchmarks

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/parwatch up

demo: $(STAMP)
	$(BIN)/parwatch demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/deadlines.py

clean:
	rm -rf var .pytest_cache build *.egg-info
