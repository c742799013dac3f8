# Set-up is idempotent: each target can run again safely.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.thaw-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then \
		$(BIN)/thaw doctor --install-criu || echo "Snapshots will not work here; see the output of 'thaw doctor' above."; \
	else echo "Not root: skipping the CRIU install; snapshots need root (see 'thaw doctor')."; fi

# llama-cpp-python has only a source release on PyPI, so pip compiles llama.cpp:
# about 6 minutes on 2 cores the first time, seconds later thanks to pip's wheel cache.
$(STAMP): pyproject.toml
	@if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || ! $(PYTHON) -c "import ensurepip" 2>/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing the build tools with apt-get..."; \
			apt-get update -qq && apt-get install -y -qq python3-venv python3-dev build-essential cmake; \
		else echo "Missing build tools: run 'sudo apt-get install python3-venv python3-dev build-essential cmake'."; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing thaw and its dependencies (compiling llama.cpp the first time takes minutes)..."
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --progress-bar on -v -e '.[bench,test]' \
		| { grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]|Successfully|Building wheel|Created wheel|ERROR' || true; }
	$(BIN)/python -c "import thawllm, llama_cpp, starlette, uvicorn"
	touch $(STAMP)

demo: setup
	$(BIN)/thaw demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/thaw bench

clean:
	rm -rf $(VENV) build src/*.egg-info
