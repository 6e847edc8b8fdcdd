# mmsfr: the two entry points are `make demo` and `make test`; both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench-smoke clean-demo help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/\t/'

setup:  ## create/update the project-local virtualenv with the pinned stack
	VENV=$(VENV) tools/setup_env.sh

demo: setup  ## the main job on the embedded default data (CPU)
	$(PY) tools/misc/demo.py

test: setup  ## run the test suite, printing the slowest tests
	$(PY) -m pytest tests --durations=15 $(PYTEST_ARGS)
