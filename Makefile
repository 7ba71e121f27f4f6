# Set-up and the two everyday commands. Everything installs into .venv (created on first use).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run manager test lint

$(BIN)/.installed: setup.cfg setup.py
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $@

install: $(BIN)/.installed

# The manager on 127.0.0.1:8007 with the SQLite registry in ./data.
run: install
	$(BIN)/operategpt serve

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest
