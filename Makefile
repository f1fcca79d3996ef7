# authmw developer commands. `make test` and `make demo` bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: install lint typecheck test bench demo docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples adapters
	$(VENV)/bin/ruff format --check src tests benchmarks examples adapters

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src

test: lint typecheck
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_signing.py
	$(PY) benchmarks/bench_policy.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_tokens.py
	$(PY) benchmarks/bench_replay.py

demo: $(STAMP)
	$(PY) examples/demo.py

# Regenerate docs/configuration.md, docs/cli.md and docs/errors.md from the code (tests/project/test_docs.py
# fails while they are stale).
docs: $(STAMP)
	$(PY) scripts/gen_docs.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
