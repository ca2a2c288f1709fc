# edgeprune: `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast test-tvm test-openvino bench install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeprune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

$(VENV)/.installed-tvm: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,tvm]"
	touch $@

test-tvm: $(VENV)/.installed-tvm
	$(BIN)/python -m pytest -q -ra tests/test_tvm.py

$(VENV)/.installed-openvino: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,openvino]"
	touch $@

test-openvino: $(VENV)/.installed-openvino
	$(BIN)/python -m pytest -q -ra tests/test_openvino.py

bench: $(STAMP)
	$(BIN)/python benchmarks/headline.py

lint: $(STAMP)
	$(BIN)/ruff check edgeprune tests benchmarks tools

clean:
	rm -rf build .pytest_cache
