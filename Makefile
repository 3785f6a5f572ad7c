# Two commands do everything on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
# The uv release, in one file that CI reads too.
UV_VERSION := $(shell cat .uv-version)
TOOLS := .tools
UV := $(TOOLS)/uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export GX_ANALYTICS_ENABLED := false

.PHONY: help setup run checks dev check-defs test test-quick lint sample-data clean-lake infra-tools infra-plan infra-apply bench mlflow-ui daemon spark-up spark-down spark-job-bundle

help:
	@echo "make run         set up .venv and materialise every asset on the bundled sample data"
	@echo "make checks      every asset check against the lake as it is (LAYER=bronze|silver|gold for one layer)"
	@echo "make test        run the whole test suite (what CI runs)"
	@echo "make test-quick  the suite without the slow end-to-end tests (-m 'not e2e')"
	@echo "make dev         open the Dagster UI (dg dev) on this project"
	@echo "make check-defs  dg check defs: the definitions load and validate"
	@echo "make lint        ruff + mypy"
	@echo "make bench       end-to-end cost by cohort size (1k, 10k, 50k subjects)"
	@echo "                 BENCH_SIZES=100000,1000000 BENCH_REPEATS=1 BENCH_LANDING=DIR: the big sizes, landing files kept in DIR"
	@echo "make spark-up    a local Spark cluster (master, 2 one-core workers, Connect) on 127.0.0.1; prints the sc:// URL"
	@echo "make spark-down  stop every process of that cluster"
	@echo "make spark-job-bundle  build/spark-jobs/: the silver Spark job for EMR Serverless (POTATO_ENGINE=emr-serverless)"
	@echo "make mlflow-ui   browse the MLflow runs of the model fits on http://127.0.0.1:5000"
	@echo "make infra-plan  terraform init + plan for terraform/envs/dev (needs backend.hcl, AWS credentials)"

$(UV):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/dagster: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --quiet --python $(PYTHON)
	@touch $@

setup: $(BIN)/dagster $(DAGSTER_HOME)/dagster.yaml

# DAGSTER_HOME holds instance storage; its dagster.yaml is the repository's, linked.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $@

# dg: Dagster's CLI, run on this project's .venv (VIRTUAL_ENV says so; dg warns otherwise).
DG := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(CURDIR)/$(BIN)/dg
# The run's console log level (the event log keeps every level): make run LOG_LEVEL=debug.
LOG_LEVEL ?= info
DEV_PORT ?= 3000
RUN_CONFIG := {"loggers": {"console": {"config": {"log_level": "$(shell echo $(LOG_LEVEL) | tr a-z A-Z)"}}}}

# Materialise everything, then summarise the run (also when it failed) and keep its exit code.
# The whole asset job (__ASSET_JOB, Dagster's implicit job of every asset) rather than
# `--assets '*'`, which leaves the landing sources out: the run first observes each landing file's
# version, so bronze records it and the landing sensor's first look (make dev) ingests nothing.
run: setup
	@echo "Materialising every asset (dg launch --job __ASSET_JOB, console at $(LOG_LEVEL))..."
	@status=0; $(DG) launch --job __ASSET_JOB --config-json '$(RUN_CONFIG)' || status=$$?; \
	$(BIN)/python -m potato_assets.where; exit $$status

# The asset checks against the tables already in POTATO_LAKE_URI (local or s3://): nothing is
# materialised or written there. Wraps
#   dagster job execute -m potato_assets.definitions -j lake_checks[_$(LAYER)]
# and prints each check's verdict; exit 1 when one failed with ERROR (warnings do not fail).
LAYER ?=
checks: setup
	$(BIN)/python -m potato_assets.lake_checks $(if $(LAYER),--layer $(LAYER))

# Started in DAGSTER_HOME: `dg dev` warns that a dagster.yaml in the directory it starts from "will
# not be used" whenever DAGSTER_HOME is elsewhere, although DAGSTER_HOME's is this very file (linked).
dev: setup
	cd $(DAGSTER_HOME) && $(DG) dev -w $(CURDIR)/workspace.yaml -h 127.0.0.1 -p $(DEV_PORT)

# What CI runs: the definitions load and validate.
check-defs: setup
	$(DG) check defs

test: setup
	$(BIN)/python -m pytest

test-quick: setup
	$(BIN)/python -m pytest -m "not e2e"

lint: setup
	$(BIN)/ruff check potato_assets potato_assets_tests
	$(BIN)/ruff format --check potato_assets potato_assets_tests
	$(BIN)/mypy potato_assets

sample-data: setup
	$(BIN)/python -m potato_assets.study.synthetic --subjects 50 --weeks 12 --out potato_assets/sample_data

clean-lake:
	rm -rf data/lake

TF_DIR := terraform/envs/dev

infra-tools:
	bash tools/infra/install.sh

infra-plan:
	terraform -chdir=$(TF_DIR) init -input=false -backend-config=backend.hcl
	terraform -chdir=$(TF_DIR) plan -input=false -out=tfplan

infra-apply:
	terraform -chdir=$(TF_DIR) apply -input=false tfplan

# Cohort sizes (subjects, comma-separated) and materialisations per size. The big sizes:
#   make bench BENCH_SIZES=100000,1000000 BENCH_REPEATS=1 BENCH_LANDING=/tmp/bench-landing
# write 0.64 and 6.4 GB of landing CSVs; with BENCH_LANDING set they are kept there and reused by
# the next bench of the same generator (default: a temp dir, removed).
BENCH_SIZES ?= 1000,10000,50000
BENCH_REPEATS ?= 3
BENCH_LANDING ?=

bench: setup
	$(BIN)/python scripts/bench.py --sizes $(BENCH_SIZES) --repeats $(BENCH_REPEATS) $(if $(BENCH_LANDING),--landing-dir $(BENCH_LANDING))

# The local store that `make run` writes (another: make mlflow-ui
# MLFLOW_STORE='postgresql+psycopg2://user:pw@host:5432/mlflow?sslmode=require': psycopg2 is the installed driver).
MLFLOW_STORE ?= sqlite:///$(CURDIR)/data/mlflow/mlflow.db

mlflow-ui: setup
	mkdir -p data/mlflow
	MLFLOW_DISABLE_TELEMETRY=$${MLFLOW_DISABLE_TELEMETRY:-true} $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_STORE) -h 127.0.0.1 -p 5000

# The daemon alone (schedules, sensors, automation); `make dev` already runs one.
daemon: setup
	$(BIN)/dagster-daemon run -w workspace.yaml

# A local Spark standalone cluster + Spark Connect server (needs Java 17): state, logs and pids in
# $(SPARK_STATE). Idempotent; prints the sc:// URL for POTATO_SPARK_REMOTE.
SPARK_STATE ?= .spark
SPARK_WORKER_MEMORY ?= 1g
SPARK_EXECUTOR_MEMORY ?= 768m

spark-up: setup
	$(BIN)/python -m potato_assets.lib.engine.spark_cluster up --state-dir $(SPARK_STATE) \
		--worker-memory $(SPARK_WORKER_MEMORY) --executor-memory $(SPARK_EXECUTOR_MEMORY)

spark-down:
	$(BIN)/python -m potato_assets.lib.engine.spark_cluster down --state-dir $(SPARK_STATE)

# The silver Spark job for EMR Serverless: build/spark-jobs/emr_job.py and potato_job.zip, to be
# uploaded to POTATO_EMR_JOB_CODE_URI (docs/spark.md, "AWS").
spark-job-bundle: setup
	$(BIN)/python scripts/spark_job_bundle.py --out build/spark-jobs
