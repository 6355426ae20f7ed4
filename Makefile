# Set-up and entry points. `make demo` and `make test` each work on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Python 3.12 is required (pandas-ta needs it). Look in the usual places, pyenv's included.
PYTHON312 := $(shell for p in "$$PYTHON312" "$$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python" \
	$$(ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python 2>/dev/null) python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	[ -n "$$p" ] && "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)

.PHONY: install demo test bench lock clean help
help:
	@echo "make demo   - install, then run the main job end to end on the bundled sample data"
	@echo "make test   - install, then run the test suite"
	@echo "make bench  - install, then run the benchmarks in bench/"
	@echo "make lock   - refresh requirements.lock from the current environment"

$(PY):
	@if [ -z "$(PYTHON312)" ]; then echo "error: Python 3.12 not found; install it (e.g. 'pyenv install 3.12.1') or set PYTHON312=/path/to/python3.12" >&2; exit 2; fi
	"$(PYTHON312)" -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml requirements.lock
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c requirements.lock -e '.[dev,bench]'
	# fyers-apiv3 pins old requests/aiohttp/setuptools that clash with Ray and MLflow: install it
	# without its pins; its real dependencies are in pyproject.toml.
	$(PY) -m pip install -q --no-deps -c requirements.lock fyers-apiv3==3.2.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

test: install
	# layer contracts (pyproject's [tool.importlinter]) on the installed layout: one root, tradebot
	$(PY) scripts/lint_imports.py
	# one torch/BLAS thread per worker: two xdist workers on 2 cores would otherwise oversubscribe them
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --timeout 900

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

lock: install
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
