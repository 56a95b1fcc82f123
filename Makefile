# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
FLEET  ?= fleet_configs/demo.yaml

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tcu-sim needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tcu-sim up $(FLEET)

test: $(STAMP) lint
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	@# Test folders have no __init__.py and some have a conftest.py: mypy checks each folder on its own.
	$(VENV)/bin/mypy tests/conftest.py
	@for dir in tests/*/; do \
		if ls $$dir*.py >/dev/null 2>&1; then \
			echo "mypy $$dir"; $(VENV)/bin/mypy "$$dir" || exit 1; \
		fi; \
	done

bench: $(STAMP)
	$(PY) -m tcu_sim.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .tcu-sim
