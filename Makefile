# acmon: the two commands a new user needs are `make demo` and `make test`.
.DEFAULT_GOAL := help
.PHONY: help setup demo test test-unit clean

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

test-unit:  ## only the fast offline unit tests
	.venv/bin/python -m pytest tests/unit -q

clean:  ## remove generated data, models and the virtual environments
	rm -rf data/demo models/demo .venv .venv-tflite .pytest_cache
