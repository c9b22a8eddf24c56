# The two commands of the README: `make demo` (set up, then run the main job on the sample sites)
# and `make test` (set up, then run the tests). Both are idempotent: set-up re-runs only when
# pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sysdeps demo lint test bench schema clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# R (rms, pROC, metafor) for the conformance tests, Debian's chromium for the browser tests and the PDF,
# poppler-utils (pdftotext, pdftoppm) to read the PDF back in its tests.
# Installed when missing and we are root; otherwise those tests skip (CI makes them required).
sysdeps:
	@if command -v Rscript >/dev/null && Rscript -e 'library(rms);library(pROC);library(jsonlite);library(metafor)' >/dev/null 2>&1 \
	    && test -x /usr/bin/chromium && command -v pdftotext >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing R (rms, pROC, jsonlite, metafor), chromium and poppler-utils with apt-get ..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        r-base-core r-cran-rms r-cran-proc r-cran-jsonlite r-cran-metafor chromium poppler-utils) >/dev/null || \
	    echo "warning: apt-get could not install R/chromium/poppler: their tests will be skipped"; \
	else echo "note: R/chromium/poppler missing and not root: their tests will be skipped"; fi

# Exit code 1 means "a release gate failed": the demo completed and says so (the heart model's AUROC
# interval at VA Long Beach is below the protocol's goal). Only bad input (2) or a crash fails make.
demo: setup
	@$(BIN)/validate demo; rc=$$?; if [ $$rc -eq 1 ]; then echo "demo finished: at least one gate failed (see runs/)"; exit 0; fi; exit $$rc

# Lint and type check (configured in pyproject.toml): a finding fails `make test`, hence CI.
LINT_PATHS := validate dashboard tests benchmarks sample_sites
lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# Plain `pytest` skips the tests marked slow (the default run stays under 3 minutes); `make test`
# runs them all (-m "" clears the marker filter), as CI does, after the lint.
test: setup sysdeps lint
	$(BIN)/python -m pytest -q -m ""

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# the protocol's JSON Schema, and the bundle contract's (one file per bundle JSON, validate/contract.py)
schema: setup
	$(BIN)/python -m validate.protocol > protocols/schema.json
	$(BIN)/python -m validate.contract schemas/bundle

clean:
	rm -rf $(VENV) runs .pytest_cache
