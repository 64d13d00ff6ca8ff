# Two entry points, both self-contained on a machine with only Python and make:
#   make demo   set everything up and run the supervised example training
#   make test   set everything up and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench bytecode clean

$(BIN)/supervise: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned: the CPU build of 2.13.0; an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
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
