# The two commands: `make demo` (install, anonymize the bundled sample, show the audit rows) and
# `make test` (install, lint, type-check, run the whole suite). Both work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output

.PHONY: install demo test test-fast lint bench clean

# After the packages, the detectors are built into the user's model cache (`efface models prepare`): the fp32
# graph every run loads, and the int8 model, so that no first run pays for building them. A warm-up only: where
# the cache cannot be written (the command says so) every run builds its model in memory, so install goes on.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	-$(VENV)/bin/efface models prepare --precision fp32
	-$(VENV)/bin/efface models prepare
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf $(DEMO_DIR)
	$(PY) examples/make_sample.py $(DEMO_DIR)/sample
	$(VENV)/bin/efface anonymize $(DEMO_DIR)/sample
	$(VENV)/bin/efface audit show latest

lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

# Everything but the slow real-model and killed-process tests.
test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) bench/image_latency.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
