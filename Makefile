# Two commands for a new user:  `make run` (the main job)  and  `make test` (the test suite).
# Both create the virtual environment and install the project on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/hapt.yaml

.PHONY: install run test lint format bench-ingest bench-ingest-many clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing cnnlstm and its dependencies into $(VENV) (about 7 GB with torch's CUDA build; 5-7 minutes on a quiet 2-core machine, more on a busy one)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## the main job: the pipeline on the bundled HAPT data (lake under ./lake, outputs under ./runs)
run: $(STAMP)
	$(VENV)/bin/cnnlstm run --config $(CONFIG)

## the test suite (what CI runs through .ci/run): one pytest-xdist worker per core, a test file per worker
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-ingest: $(STAMP)
	$(PY) benchmarks/ingest.py

## 10,000 small files in one ingest: per-file time of the first and last 1,000 (FILES=N: fewer)
bench-ingest-many: $(STAMP)
	$(PY) benchmarks/ingest_many.py --files $(or $(FILES),10000)

## remove generated data (lake, runs, MLflow store) - not the virtual environment
clean-data:
	rm -rf lake runs mlflow.db mlartifacts
