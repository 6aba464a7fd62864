# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv/ and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-stress clean

install: $(STAMP)

# constraints.txt pins torch to the CPU build: a bare `torch` requirement would pull a
# multi-GB CUDA build. See "Installing with CUDA" in the README for GPU machines.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Tributary needs Python 3.11+; run: make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/tributary demo

# Lint and type checks first (ruff, and mypy as a ratchet: see pyproject.toml), then the tests.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# The fault tests (marker `fault`) RUNS times beside a CPU hog; not part of `make test`.
RUNS ?= 20
test-stress: install
	$(BIN)/python -m tests.stress --runs $(RUNS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
