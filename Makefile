# edgeprune: `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast test-install test-tvm test-arm arm-board test-openvino bench install lint clean

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
	$(BIN)/python -m pytest -q -ra tests/test_tvm.py tests/test_tvm_tuning.py

# an emulated arm64 board (QEMU user-mode) behind a TVM RPC tracker; docs/tvm.md "An emulated ARM board".
# Setup builds the arm64 userland once into the user cache (needs root for apt-get, Debian's archive and PyPI);
# then the tests run offline. In .ci/run: a setup that cannot finish (no root, no archive) is reported and the
# board's tests skip with the missing piece named; once the board is up, they must pass.
ARM_BOARD := bash tools/arm_board.sh
arm-board: $(VENV)/.installed-tvm
	PY=$(abspath $(BIN)/python) $(ARM_BOARD) setup

test-arm: $(VENV)/.installed-tvm
	PY=$(abspath $(BIN)/python) $(ARM_BOARD) setup || echo "test-arm: the emulated arm64 board could not be set up (above); its tests skip" >&2
	EDGEPRUNE_ARM_BOARD_DIR="$$($(ARM_BOARD) dir)" $(BIN)/python -m pytest -q -ra tests/test_arm_board.py

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
