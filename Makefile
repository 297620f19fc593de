# The README's commands. `make test` and `make demo` set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch and torchvision are pinned to releases that pip resolves from local wheels where present.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast test-all bench lint browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Mg-MRN and the pooled baseline on the parts set, both fine-tuned from the shipped backbone at
# the same budget, then both side by side
demo: install
	@run=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(VENV)/bin/mgmrn train output_dir=$$run/mgmrn && \
	$(VENV)/bin/mgmrn train --config parts-pretrained-baseline output_dir=$$run/baseline && \
	$(VENV)/bin/mgmrn compare $$run/mgmrn $$run/baseline --out $$run

# the unit, integration and parity tiers, without the tests that train for minutes (what CI runs)
test: install
	$(PY) -m pytest -q -m "not slow" tests/unit tests/integration tests/parity

# the unit tier alone, in under a minute
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests/unit

# every tier: slow tests, the browser tests (make browser installs Chromium) and the CUDA tests
test-all: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/throughput.py

# Debian's headless Chromium and its driver, for the browser tests (which skip without them); root.
browser:
	apt-get install -y chromium chromium-driver || (apt-get update && apt-get install -y chromium chromium-driver)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts examples

clean:
	rm -rf $(VENV) runs .cache
