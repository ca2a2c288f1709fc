# edgeprune: `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast test-install test-tvm test-openvino bench install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeprune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

# the wheel installed into a fresh venv outside the checkout, run from another folder (also part of `make test`)
test-install: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/test_install.py

$(VENV)/.installed-tvm: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,tvm]"
	touch $@

test-tvm: $(VENV)/.installed-tvm
	$(BIN)/python -m pytest -q -ra tests/test_tvm.py

$(VENV)/.installed-openvino: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,openvino]"
	touch $@

test-openvino: $(VENV)/.installed-openvino
	$(BIN)/python -m pytest -q -ra tests/test_openvino.py

bench: $(STAMP)
	$(BIN)/python benchmarks/headline.py

lint: $(STAMP)
	$(BIN)/ruff check edgeprune tests benchmarks tools

clean:
	rm -rf build .pytest_cache
