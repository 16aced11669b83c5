# Two entry points: `make demo` (train tiny on CPU, held-out perplexity, sample) and `make test`.
# Each creates .venv and installs what it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c requirements/constraints.txt
export JAXLM_DATA_DIR ?= $(abspath ../shared/data)
# Two simulated devices use both cores better than one (JAX_NOTES §4).
DEMO_DEVICES ?= 2
WORKDIR ?= runs/tiny-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test lint install install-all clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.core: $(PY) setup.cfg pyproject.toml requirements/constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.all: $(PY) setup.cfg pyproject.toml requirements/constraints.txt
	$(PIP) -e '.[dev,seqio,bench,eval,curate,ray,curate-test,posttrain-test,rl]'
	touch $@ $(VENV)/.core

install: $(VENV)/.core
install-all: $(VENV)/.all

demo: $(VENV)/.core
	XLA_FLAGS=--xla_force_host_platform_device_count=$(DEMO_DEVICES) \
	  $(PY) -m jaxlm.train --config experiments/tiny.py --workdir $(WORKDIR)
	$(PY) -m jaxlm.eval --workdir $(WORKDIR) --tasks perplexity
	$(PY) -m jaxlm.sample --workdir $(WORKDIR) --prompt 'ROMEO:' --prompt 'First Citizen:' \
	  --max_new_tokens 100
	@echo "workdir: $(abspath $(WORKDIR))  (tensorboard --logdir $(abspath $(WORKDIR)))"

# CI=true: the full suite, strict. The suite sets 8 simulated CPU devices itself (conftest.py).
test: $(VENV)/.all
	$(VENV)/bin/ruff check jaxlm experiments benchmarks tests data_pipelines notebooks
	$(PY) -m pytest -n 2 --dist loadfile -q tests

lint: $(VENV)/.all
	$(VENV)/bin/ruff check jaxlm experiments benchmarks tests data_pipelines notebooks

clean:
	rm -rf $(VENV) runs
