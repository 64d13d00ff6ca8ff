# Two entry points, both self-contained on a machine with only Python and make:
#   make demo   set everything up and run the supervised example training
#   make test   set everything up and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# torch, for the examples and tests only (the supervisor never imports it). PyPI's Linux
# wheel is the multi-GB CUDA build, so where pip finds no local wheel (its find-links), take
# the CPU build from TORCH_INDEX_URL; `make TORCH_INDEX_URL=` installs PyPI's build instead.
# TORCH_SPEC may name another build or a wheel file; it must satisfy the test extra's pin.
TORCH_SPEC      ?= torch==2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test lint bench bytecode clean

$(BIN)/supervise: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# A dry run with no index looks only at local wheels: quick, and needs no network.
	if [ -z '$(TORCH_INDEX_URL)' ] || $(BIN)/pip install --quiet --dry-run --no-index \
	    --no-deps --ignore-installed '$(TORCH_SPEC)' >/dev/null 2>&1; then \
	  $(BIN)/pip install --quiet '$(TORCH_SPEC)'; \
	else \
	  echo "no local torch wheel: installing $(TORCH_SPEC) from $(TORCH_INDEX_URL)"; \
	  $(BIN)/pip install --quiet --index-url '$(TORCH_INDEX_URL)' '$(TORCH_SPEC)'; \
	fi
	# compat: a plain .pth path entry; the default editable finder costs every start ~25 ms.
	# setuptools calls compat transitional, so fall back to the default if it is ever gone.
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat \
	  || $(BIN)/pip install --quiet -e '.[test]'
	$(MAKE) bytecode
	touch $@

# An editable install ships no bytecode, and with PYTHONDONTWRITEBYTECODE (common in CI
# and images) every start would compile supervise from source: ~30 ms on PID 1.
bytecode:
	$(BIN)/python -m compileall -q supervisor

demo: $(BIN)/supervise
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

test: $(BIN)/supervise
	$(BIN)/ruff check supervisor tests bench examples
	$(BIN)/ruff format --check supervisor tests bench examples
	# pytest exits 5 when it collected nothing; pass that through as a failure, not a pass.
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; fi; exit $$status

bench: $(BIN)/supervise bytecode
	for b in bench/bench_*.py; do echo "== $$b"; PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
