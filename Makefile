# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv when absent, install the project and the Debian packages
# it uses, and are safe to rerun (installs are skipped when nothing changed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmdx-installed
DEMO_DIR ?= data/demo-archive
FUZZ_SECONDS ?= 600

.PHONY: demo test lint typecheck contracts pytest bench fuzz sysdeps install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the dependency declaration changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

sysdeps:
	bash scripts/install-system-deps.sh

# Sample archive, small models, case index, `mmdx serve`, studies pushed with storescu,
# results printed; serves until Ctrl-C (MMDX_DEMO_EXIT=1: stop after the results).
demo: install sysdeps
	$(BIN)/python scripts/demo.py --archive $(DEMO_DIR)

lint: install
	$(BIN)/ruff check imaging multimodal_rag serving tests bench scripts
	$(BIN)/ruff format --check imaging multimodal_rag serving tests bench scripts

typecheck: install
	$(BIN)/mypy

contracts: install
	$(BIN)/lint-imports

pytest: install sysdeps
	$(BIN)/pytest -q

test: lint typecheck contracts pytest

bench: install sysdeps
	$(BIN)/python -m bench

# Mutation fuzzing of the DICOM reader, series assembler, cine decoder and STOW parser;
# findings land in fuzz-findings/ (make test runs a short, reproducible fuzz).
fuzz: install
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS) --out fuzz-findings

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
