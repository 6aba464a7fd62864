# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv/ and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-stress clean

install: $(STAMP)

# torch's CPU build first, at the version constraints.txt pins: PyPI's torch wheel for
# Linux x86_64 is the multi-GB CUDA build, so the requirement names the CPU build
# (+cpu), which lives on PyTorch's CPU index. From local wheels when pip's configuration
# has them (--no-index asks no index, so nothing can hang), else from that index; its
# dependencies come with the next step. A torch already in the venv (a CUDA build
# installed by hand) is kept.
# See "Installing with CUDA" in the README for GPU machines.
TORCH_CPU := torch==$(shell sed -n 's/^torch==//p' constraints.txt)+cpu
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Tributary needs Python 3.11+; run: make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c 'import torch' 2>/dev/null || \
		$(BIN)/pip install --quiet --no-deps --no-index "$(TORCH_CPU)" 2>/dev/null || \
		$(BIN)/pip install --quiet --no-deps --index-url $(TORCH_CPU_INDEX) "$(TORCH_CPU)"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/tributary demo

# promtool, for the alerting rules' unit tests (deploy/prometheus/rules.test.yml): taken
# from Debian's prometheus package where apt-get can fetch it; elsewhere those tests skip.
PROMTOOL := $(VENV)/tools/promtool
$(PROMTOOL):
	@mkdir -p $(@D); tmp=$$(mktemp -d); \
	if (cd $$tmp && timeout 120 apt-get download -q -o Acquire::http::Timeout=20 prometheus && \
	    dpkg-deb -x prometheus_*.deb x) >/dev/null 2>&1; then cp $$tmp/x/usr/bin/promtool $@; \
	else echo "promtool not fetched (no apt-get, or no Debian mirror): the alert-rule unit tests will skip"; fi; \
	rm -rf $$tmp

# Lint and type checks first (ruff, and mypy as a ratchet: see pyproject.toml), then the tests.
test: install $(PROMTOOL)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# The fault tests (marker `fault`) RUNS times beside a CPU hog; not part of `make test`.
RUNS ?= 20
test-stress: install
	$(BIN)/python -m tests.stress --runs $(RUNS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
