# Two entry points: `make train` (set up, then the default run) and `make test`
# (set up, then the test suite). Pass ARGS="loss=focal ..." to train, PYTEST_ARGS to test.
VENV ?= .venv
PYTHON ?= python3
# Installed only when $(VENV) has no torch yet: an existing environment
# (make test VENV=$$CONDA_PREFIX) keeps the torch it has, CUDA or not.
TORCH_SPEC ?= torch==2.13.0
# sweep: the Optuna sweeper, so CI runs the Optuna sweep test instead of skipping it.
EXTRAS ?= dev,sweep

PY := $(VENV)/bin/python
STAMP := $(VENV)/.lit_imbalance-installed

.PHONY: setup train test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the project's torch range alone would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

train: setup
	$(PY) train.py $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
