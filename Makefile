# make run       : set up .venv (pinned) and train on the embedded generated data through `mlflow run`
# make test      : set up, check formatting and lint, and run the whole test suite (what CI runs)
# make test-fast : the inner loop: unit and in-process tests (no tests/e2e, nothing that starts a process)
# make spark-archive : once per Java and Spark installation: Spark's classes archived for a faster JVM start
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# `mlflow run --env-manager local` runs the entry point with whatever `python` is first on PATH:
# make it the project's environment.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

# Extra arguments for `make run`, e.g. make run ARGS="-P num_trees=200 -P max_depth=8"
ARGS ?=
ENTRY ?= main
PYTEST_ARGS ?=
# pytest-xdist workers: the suite is CPU-bound, one worker per core (2 on the reference machine). Each
# worker takes whole test modules, longest first (tests/conftest.py), and has its own Spark session,
# tracking store and temp dir.
TEST_WORKERS ?= 2
PYTEST := python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
UI_PORT ?= 5000

.PHONY: setup run test test-fast lint format ui pins bench clean cluster-up cluster-down spark-up spark-down spark-archive

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 13) else "make setup needs Python 3.10 to 3.13 (3.11 preferred), found %d.%d: set PYTHON=/path/to/python3.11" % v)'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: setup
	mlflow run . -e $(ENTRY) --env-manager local $(ARGS)
	@echo "Runs are in $$(python -c 'import mlflow; print(mlflow.get_tracking_uri())'). Open the UI with: make ui  (then http://127.0.0.1:$(UI_PORT))"

test: setup lint spark-archive
	$(PYTEST) $(PYTEST_ARGS)

# The local JVM each entry point launches maps it, not over Connect (docs/cluster.md#a-faster-jvm-start); in
# ~/.cache/sparkmlops per Java and Spark jars, built only when missing. A failed build only costs the speed.
spark-archive: setup
	-python -m tools.class_archive build

# The formatter and linter (configuration: pyproject.toml); `make format` rewrites the tree.
lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff format .
	ruff check --fix .

test-fast: setup spark-archive
	$(PYTEST) -m "not process and not e2e" $(PYTEST_ARGS)

ui: setup
	mlflow ui --host 127.0.0.1 --port $(UI_PORT)

# Copy requirements.txt's pins into conda.yaml (tests fail while they differ).
pins: setup
	python -m sparkmlops.core.environment sync-conda-pins

bench: setup
	python bench/bench_train.py

# A Spark standalone cluster (master + 2 workers) and a Spark Connect server on 127.0.0.1, from the pyspark
# package; PIDs, logs and spark-defaults.conf in .cluster/. Then: source .cluster/env.sh (or SPARK_REMOTE=...).
CLUSTER_ARGS ?= --connect
cluster-up: setup
	python -m tools.local_cluster up --state-dir .cluster $(CLUSTER_ARGS)

cluster-down:
	$(BIN)/python -m tools.local_cluster down --state-dir .cluster

# A warm local Spark Connect server kept between commands (PySpark's SPARK_LOCAL_CONNECT_REUSE opt-in);
# then export SPARK_REMOTE='local[*]' SPARK_LOCAL_CONNECT_REUSE=1 (docs/cluster.md#a-warm-local-spark).
spark-up: setup
	$(BIN)/python -m tools.warm_spark up

spark-down:
	$(BIN)/python -m tools.warm_spark down

clean:
	rm -rf $(VENV) data/generated spark-warehouse .pytest_cache
