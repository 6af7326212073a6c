# kiln: the two commands a newcomer needs are `make run` and `make test`.
# Both create .venv and install everything into it when it is missing or pyproject.toml changed.

VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.kiln-installed
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# The runs table in MLflow 3's model-training view (core/ui_links.py); without the query it opens on GenAI pages.
MLFLOW_RUNS_URL := http://127.0.0.1:5000/\#/experiments/0/runs?workflowType=machine_learning
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export PYTHONUNBUFFERED := 1
# `mlflow run --env-manager local` runs `python` from PATH: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test test-fast check install browser-deps postgres-deps ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's chromium for the browser test; Playwright never downloads its own browser.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# Debian's PostgreSQL server for the team-server tests (tests/cloud start their own throwaway cluster).
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi; }

# Trains the full 31M-parameter edgnet_large on 60 generated drawings at 96 px: about 6 CPU-minutes of work,
# a few minutes on 2 idle cores (best val IoU 0.89 when measured), instead of the seed's 100 epochs at 512 px.
run: $(STAMP)
	$(VENV)/bin/mlflow run . -e edgnet_large --env-manager local \
	  -P epochs=6 -P img_size=96 -P batch_size=8 -P lr=0.002 -P num_samples=60
	@echo "Open the MLflow UI with: make ui, then $(MLFLOW_RUNS_URL)"

# pytest exits 5 when a selection collects no tests; that is not a failure of the suite.
test: $(STAMP) browser-deps postgres-deps
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; rc=0; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# Every package pyproject.toml's [tool.setuptools.packages.find] includes: mypy --strict covers all of them.
PACKAGES := core kiln projects registry serving data jobs experiments efficiency cloud

check: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict $(PACKAGES)
	$(PY) -m kiln mlproject --check

ui: $(STAMP)
	@echo "runs of the Default experiment: $(MLFLOW_RUNS_URL)"
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)

clean:
	rm -rf .kiln mlruns mlartifacts .pytest_cache .mypy_cache .ruff_cache
