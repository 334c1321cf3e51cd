# NVIDIA-style entry points over the `unet3d` CLI (python -m core), so auditors can type what they know:
#   make run RUN_ARGS="--benchmarks=3d-unet --scenarios=Offline --config_ver=default --test_mode=AccuracyOnly"
#   make preprocess_data
#   make calibrate RUN_ARGS="--benchmarks=3d-unet"
#   make demo
#   make run RUN_ARGS="..." DRY_RUN=1     (print the equivalent commands only)
# Paths come from the environment as in NVIDIA's harness (DATA_DIR, PREPROCESSED_DATA_DIR, MODEL_DIR,
# LOG_DIR, UNET3D_WORKSPACE) or from UNET3D_ARGS (global flags, e.g. --workspace=DIR).

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
UNET3D := $(PYTHON) -m core $(UNET3D_ARGS)
RUN_ARGS ?=
DRY_RUN ?=
PREPROCESS_ARGS ?=
DEMO_WORKSPACE ?= unet3d-demo

.PHONY: help run run_harness preprocess_data download_model download_data calibrate demo status history test test_all lint

help:
	@echo "make run RUN_ARGS=\"--benchmarks=3d-unet --scenarios=Offline --config_ver=default --test_mode=PerformanceOnly\""
	@echo "make preprocess_data | make calibrate RUN_ARGS=\"--benchmarks=3d-unet\" | make demo | make status | make test"

run run_harness:
	$(UNET3D) run --run-args="$(RUN_ARGS)"$(if $(DRY_RUN), --dry-run)

preprocess_data:
	$(UNET3D) preprocess $(PREPROCESS_ARGS)

download_model:
	$(UNET3D) download --model

download_data:
	$(UNET3D) download --data

calibrate:
	$(UNET3D) calibrate --run-args="$(RUN_ARGS)"

demo:
	$(UNET3D) demo --workspace=$(DEMO_WORKSPACE)

status:
	$(UNET3D) status

history:
	$(UNET3D) history

# fast tests (no @slow); `make test_all` includes the end-to-end runs
test:
	$(PYTHON) -m pytest -q -m "not slow" tests

test_all:
	$(PYTHON) -m pytest -q tests

lint:
	$(PYTHON) -m ruff check core console screens plugins tests tools
