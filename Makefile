# Two commands matter: `make demo` and `make test`. Each builds or refreshes the venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test soak demo bench lint typecheck clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not soak"

# A 3-node devnet mining for SOAK_SECONDS (default 600) while a hostile peer cycles attacks.
soak: venv
	$(BIN)/python -m pytest -q -m soak tests/chain/net/p2p/test_soak.py

demo: venv
	$(BIN)/blockcoin demo

bench: venv
	@for s in scripts/bench/[!_]*.py; do echo "== $$s"; $(BIN)/python $$s --json || exit 1; done

lint: venv
	$(BIN)/ruff check chain ledger globaltree miner storage_market tests scripts
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
