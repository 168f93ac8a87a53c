# The two entry points (see README):
#   make run   create .venv, install, and run the whole DVC pipeline on params.yaml
#   make test  create .venv, install, and run the test suite
# Everything else here is plumbing for those two.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Where the CPU build of torch comes from. Empty: the configured pip indexes (a local
# wheel on the project's machines). Elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-stamp
export DVC_NO_ANALYTICS := 1
# stages run `python stages/...`: the venv must come first on PATH
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test env clean-env

run: $(STAMP)
	$(BIN)/dvc repro

# Tests run in parallel worker processes (pytest-xdist), one OpenMP thread each: tiny tensor
# ops gain nothing from a second thread and several threads per worker only contend.
TEST_WORKERS ?= auto
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean-env:
	rm -rf $(VENV)
