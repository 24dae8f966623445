# Two commands matter: `make demo` and `make test`. Each builds or refreshes the venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UI := chain/api/ui
UI_BUILT := $(UI)/vendor/.built
NPM_DIR := build/npm

.PHONY: venv ui test soak demo bench lint typecheck clean

venv: $(STAMP) $(UI_BUILT)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The dashboard's charting library (uPlot), from the npm registry at the version
# package-lock.json pins, copied where the node serves it; nothing is fetched at run time.
ui: $(UI_BUILT)

$(UI_BUILT): $(UI)/package.json $(UI)/package-lock.json
	mkdir -p $(NPM_DIR) $(UI)/vendor
	cp $(UI)/package.json $(UI)/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	cp $(NPM_DIR)/node_modules/uplot/dist/uPlot.iife.min.js \
	   $(NPM_DIR)/node_modules/uplot/dist/uPlot.min.css $(UI)/vendor/
	cp $(NPM_DIR)/node_modules/uplot/LICENSE $(UI)/vendor/uPlot.LICENSE
	touch $@

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
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache $(UI)/vendor
