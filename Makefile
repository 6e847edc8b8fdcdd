# mmsfr: the two entry points are `make demo` and `make test`; both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_DATA ?= data/demo_coco
DEMO_CFG ?= configs/demo/retinanet_condensenetv2_demo.py
DEMO_WORK ?= work_dirs/demo_retinanet_condensenetv2

.PHONY: help setup demo test test-oldest

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/\t/'

setup:  ## create/update the project-local virtualenv with the pinned stack
	VENV=$(VENV) tools/setup_env.sh

demo: setup  ## generate shapes data, train RetinaNet-CondenseNetV2 on CPU, print COCO mAP
	$(PY) tools/misc/make_demo_coco.py --out $(DEMO_DATA)
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CFG) "$$(cat $(DEMO_WORK)/last_checkpoint)" --work-dir $(DEMO_WORK)

test: setup  ## run the test suite, printing the slowest tests
	$(PY) -m pytest tests --durations=15 $(PYTEST_ARGS)

test-oldest:  ## the smoke tests on the oldest supported stack (torch 2.1.2, .venv-oldest)
	tools/test_oldest.sh
