# NVIDIA-style entry points over the `unet3d` CLI (python -m core), so auditors can type what they know:
#   make run RUN_ARGS="--benchmarks=3d-unet --scenarios=Offline --config_ver=default --test_mode=AccuracyOnly"
#   make preprocess_data
#   make calibrate RUN_ARGS="--benchmarks=3d-unet"
#   make demo
#   make run RUN_ARGS="..." DRY_RUN=1     (print the equivalent commands only)
#   make run_audit_harness RUN_ARGS="--scenarios=Offline ..."   (TEST01 run + its verification)
#   make stage_results SUBMITTER=ORG SYSTEM_NAME=NAME [STAGE_ARGS="--division=open --version=v6.0"]
#   make truncate_results | make check_submission [CHECKER=path/to/inference]
# Paths come from the environment as in NVIDIA's harness (DATA_DIR, PREPROCESSED_DATA_DIR, MODEL_DIR,
# LOG_DIR, UNET3D_WORKSPACE) or from UNET3D_ARGS (global flags, e.g. --workspace=DIR).

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
# torch is pinned to the CPU build this project's machines carry; on a GPU machine install the CUDA
# build you need instead (`make install-gpu TORCH_VERSION=...`).
TORCH_VERSION ?= 2.13.0
UNET3D := $(PYTHON) -m core $(UNET3D_ARGS)
RUN_ARGS ?=
DRY_RUN ?=
PREPROCESS_ARGS ?=
DEMO_WORKSPACE ?= unet3d-demo
# submission (NVIDIA's Makefile.submission names): the tree is staged in the workspace's
# build/submission-staging (full logs in build/submission-staging.full) unless SUBMISSION_DIR names another
SUBMISSION_DIR ?=
SUBMITTER ?=
SYSTEM_NAME ?=
STAGE_ARGS ?=
CHECKER ?=
CHECK_ARGS ?=
AUDIT_TEST ?= TEST01
AUDIT_OUT ?=
VERIFY_ARGS ?=

.PHONY: install install-dev help run run_harness preprocess_data download_model download_data calibrate demo status history test test_fast lint
.PHONY: run_audit_harness stage_results truncate_results check_submission

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

demo: install
	$(UNET3D) demo --workspace=$(DEMO_WORKSPACE)

status:
	$(UNET3D) status

history:
	$(UNET3D) history

# TEST01: the audit run (RUN_ARGS + --audit_test), then its verification against the accuracy and performance
# runs the stage would choose (VERIFY_ARGS="--scenario=SingleStream" for SingleStream) into the workspace's
# build/compliance/<scenario>/TEST01 (or AUDIT_OUT/TEST01), where the auditor checklist finds it
run_audit_harness:
	$(UNET3D) run --run-args="$(RUN_ARGS) --audit_test=$(AUDIT_TEST)"
	$(UNET3D) submission verify-test01 $(if $(AUDIT_OUT),--out=$(AUDIT_OUT)) $(VERIFY_ARGS)

stage_results:
	$(if $(SUBMITTER),,$(error give SUBMITTER=ORG))
	$(if $(SYSTEM_NAME),,$(error give SYSTEM_NAME=NAME))
	$(UNET3D) submission stage $(if $(SUBMISSION_DIR),--out=$(SUBMISSION_DIR)) --submitter=$(SUBMITTER) --system-name=$(SYSTEM_NAME) $(STAGE_ARGS)

# the stage already truncates; this is for accuracy logs placed in the tree by hand
truncate_results:
	$(UNET3D) submission truncate $(SUBMISSION_DIR)

check_submission:
	$(UNET3D) submission check $(SUBMISSION_DIR) $(if $(CHECKER),--checker=$(CHECKER)) $(if $(SUBMITTER),--submitter=$(SUBMITTER)) $(CHECK_ARGS)

# set-up: a virtual environment with the package and its pinned dependencies (CPU: the ort backend)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

# + what the tests need: torch and Triton (kernels run under TRITON_INTERPRET=1 on CPU), pytest,
# ruff, mypy, scipy-stubs and the TensorRT type stubs (--no-deps: they depend on the uninstallable tensorrt)
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(VENV)/bin/pip install -q torch==$(TORCH_VERSION)
	$(VENV)/bin/pip install -q -e '.[gpu,dev]'
	$(VENV)/bin/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	touch $@

# the test command (CI runs exactly this): install, lint, type-check (mypy over core/ and plugins/, the
# TensorRT code against tensorrt-stubs; its cache makes pytest's repeat of it take a second), all tests
test: install-dev
	$(PYTHON) -m ruff check core console screens plugins tests tools bench
	$(PYTHON) -m tests.test_mypy
	$(PYTHON) -m pytest -q tests

test_fast: install-dev
	$(PYTHON) -m pytest -q -m "not slow" tests

lint:
	$(PYTHON) -m ruff check core console screens plugins tests tools
