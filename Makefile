# acmon: the two commands a new user needs are `make demo` and `make test`.
.DEFAULT_GOAL := help
.PHONY: help setup demo test test-unit lint format pi-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## install Debian packages (as root) and the Python environment in .venv
	@scripts/setup.sh

demo:  ## set up, make demo recordings, train an int8 model, replay a fault and show the MQTT alert
	@scripts/setup.sh
	@scripts/demo.sh

test:  ## set up (with the tflite-runtime 2.14 environment) and run the whole test suite
	@scripts/setup.sh --tflite-runtime
	.venv/bin/python -m pytest

lint:  ## set up, then ruff (lint and format check) and mypy, as CI runs them first
	@scripts/setup.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

pi-check:  ## as root: the device on emulated ARM (arm64, armhf roots, cached): install, golden features, int8, MQTT alert
	@scripts/setup.sh --tflite-runtime
	@scripts/pi_check.sh

format:  ## let ruff fix what it can and format the code
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test-unit:  ## only the fast offline unit tests
	.venv/bin/python -m pytest tests/unit -q

clean:  ## remove generated data, models and the virtual environments
	rm -rf data/demo models/demo .venv .venv-tflite .pytest_cache
