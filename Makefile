# veil — one-command set-up, run and test.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint bench bench-utility data clean venv

run: $(STAMP)
	$(BIN)/veil demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Type check and lint (installs the `lint` extra: mypy, ruff); not part of `make test`.
lint: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[lint]' && $(BIN)/python -m ruff check src tests && $(BIN)/python -m mypy src/veil

BENCHES := simulation dpsgd secagg secagg_round audit

bench: $(STAMP)
	@for b in $(BENCHES); do $(BIN)/veil bench $$b --json benchmarks/latest-$$b.json || exit 1; done

bench-utility: $(STAMP) data
	$(BIN)/veil bench utility --json benchmarks/latest-utility.json

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,flower,synth]'
	touch $(STAMP)

# Fashion-MNIST (only for `veil bench utility`): Debian's package, gzipped IDX files.
# `dpkg -L dataset-fashion-mnist` (bookworm) puts them in /usr/share/datasets/fashion-mnist;
# apt runs only when no known location holds them.
FMNIST_DIRS := /usr/share/datasets/fashion-mnist /usr/share/dataset-fashion-mnist /usr/share/fashion-mnist

data:
	@for d in $(FMNIST_DIRS); do \
	  if ls $$d/train-images-idx3-ubyte* >/dev/null 2>&1; then echo "Fashion-MNIST: $$d"; exit 0; fi; \
	done; \
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist && \
	dpkg -L dataset-fashion-mnist | grep 'train-images-idx3-ubyte'

clean:
	rm -rf $(VENV) runs .pytest_cache
