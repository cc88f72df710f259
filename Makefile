# Two entry points: `make train` (set up, then the default run) and `make test`
# (set up, then the test suite). Pass ARGS="loss=focal ..." to train, PYTEST_ARGS to test.
VENV ?= .venv
PYTHON ?= python3
# Installed only when $(VENV) cannot import torch and torchvision yet: an existing
# environment (make test VENV=$$CONDA_PREFIX) keeps the pair it has, CUDA or not.
# A matching pair, pinned: PyPI's torchvision wheels are built against the CUDA torch
# of the same release and fail to import beside a CPU-only torch ("operator
# torchvision::nms does not exist"), and an unpinned pair pulls the newest release.
# The CUDA build runs on a CPU as it is and uses a GPU where there is one.
ifeq ($(shell uname -m),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif
# sweep: the Optuna sweeper; bench: the real-data suite's tables. CI runs their tests instead of skipping them.
EXTRAS ?= dev,sweep,bench

PY := $(VENV)/bin/python
STAMP := $(VENV)/.lit_imbalance-installed

.PHONY: setup train test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the project's ranges alone would let pip pick any torch release.
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

train: setup
	$(PY) train.py $(ARGS)

# pytest-xdist: the suite is mostly subprocess runs of train.py, so one worker per core halves its time.
PYTEST_WORKERS ?= auto

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
