# The two commands of the README. Everything else (venv, packages, Kafka jars, the local
# broker) is fetched and started by them on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit integration bench bench-peers broker-start broker-stop clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streams needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/streams demo

test: $(BIN)/.installed lint
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check streams tests topology benchmarks deploy
	$(BIN)/ruff format --check streams tests topology benchmarks deploy
	$(BIN)/mypy streams tests benchmarks topology deploy
	$(BIN)/lint-imports

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

integration: $(BIN)/.installed
	$(BIN)/pytest tests/integration

# streams, the bare loop, Quix Streams, arroyo and faust side by side (benchmarks/README.md
# "peers"); builds each peer's venv under benchmarks/peers/.venvs/ on first use.
bench-peers: $(BIN)/.installed
	$(BIN)/python -m benchmarks.peers

broker-start: $(BIN)/.installed
	$(BIN)/streams broker start

broker-stop: $(BIN)/.installed
	$(BIN)/streams broker stop

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
