# Entry points of the project. Every target sets up what it needs first:
# a virtualenv in .venv and, when run as root, the Debian packages.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The board-side packages: numpy only, Python 3.8, never torch.
BOARD_SIDE := fedcore device demo_app coordinator
TEST_EXTRAS ?= dev,device,coordinator,train
TEST_DEBS   := mosquitto
DATA_DEBS   := dataset-fashion-mnist

.PHONY: help setup test lint bench-codecs clean

help:
	@echo "make test          set up .venv and run lint + the test suite (< 10 min on 2 cores)"
	@echo "make lint          ruff, Python 3.8 compatibility and no-torch checks on the board side"
	@echo "make bench-codecs  compression codecs on a real trained Fashion-MNIST MLP"
	@echo "make clean         remove .venv and caches"

$(VENV)/.installed-$(TEST_EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

setup: $(VENV)/.installed-$(TEST_EXTRAS)
	@scripts/system-deps.sh $(TEST_DEBS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/vermin --target=3.8- --violations --no-tips --eval-annotations $(BOARD_SIDE)
	$(BIN)/python scripts/check_board_side.py $(BOARD_SIDE)

test: lint
	$(BIN)/python -m pytest

bench-codecs: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m benchmarks.codecs

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
