# learnbench: `make help` lists the targets. Everything runs in ./.venv (made by `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := $(BIN)/python
# Datasets (paths.data_dir) for `make train` and `make sweep`, e.g. DATA_DIR=../shared/datasets; left empty,
# the app's own default applies (LEARNBENCH_DATA_DIR, conf/local/default.yaml, else ./data).
DATA_DIR ?=
DATA_ARG = $(if $(DATA_DIR),paths.data_dir=$(DATA_DIR))
export WANDB_SILENT := true
# pytest worker processes (pytest-xdist): one per core by default; TEST_WORKERS=0 runs the tests in this process.
# Each worker takes whole test files (--dist loadfile), so a module's fixtures are built once.
TEST_WORKERS ?= auto
PYTEST = $(RUN) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: help install train test test-slow test-all bench bench-spiking table sweep clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python  ## make .venv and install learnbench (editable) with its test, oracle (snnTorch, norse, reservoirpy) and cluster extras
	$(BIN)/pip install --upgrade pip setuptools wheel >/dev/null
	$(BIN)/pip install -e ".[dev,oracles,cluster]"

train:  ## train backprop on the 2-arm spiral (CPU, under a minute); overrides via ARGS="...", datasets via DATA_DIR=...
	$(RUN) -m learnbench.train $(DATA_ARG) $(ARGS)

test:  ## the fast tests (a few minutes; touches every module): unit tests, oracles, a covering few of each config matrix
	$(PYTEST) $(ARGS)

test-slow:  ## only the slow tests: CLI/multirun/DDP/SLURM/Optuna/resume runs, many-draw statistics, the rest of the config matrices
	$(PYTEST) -m slow $(ARGS)

test-all:  ## every test (test + test-slow in one run; what CI runs)
	$(PYTEST) -m "slow or not slow" --durations=30 $(ARGS)

# Each benchmark row runs in a process forked from a forkserver that preloads learnbench.tools.bench
# (tools/bench.py, time_in_processes); started with `-m learnbench.tools.bench`, every such process also
# re-runs its main module by name, already imported, and runpy warns: "RuntimeWarning: 'learnbench.tools.bench'
# found in sys.modules after import of package 'learnbench.tools', ...", once per row. Harmless (the module
# is the same); -W reaches the forkserver and its children (interpreter flags are passed on).
BENCH_QUIET := -W "ignore:'learnbench.tools.bench' found in sys.modules:RuntimeWarning"
bench:  ## step time of every rule over backprop; DDP bytes/step with ARGS="comm" (ARGS="comm --help" for its options)
	$(RUN) $(BENCH_QUIET) -m learnbench.tools.bench $(ARGS)

verify:  ## check a rule: its estimate against backprop's gradient, determinism, DDP ranks in sync, a bit-exact resume: ARGS="method=fg_a"
	$(RUN) -m learnbench.verify $(ARGS)

bench-spiking:  ## snnTorch tutorial-5 SNN step: learnbench vs hand-written loop, snnTorch, norse (1 and 2 threads); ARGS="--clock cpu", "--profile"
	$(RUN) -m learnbench.tools.bench_spiking $(ARGS)

clean:  ## remove logs and caches (not the venv)
	rm -rf logs multirun outputs .pytest_cache

RUNS ?= logs/multiruns
table:  ## mean ± std over seeds of finished runs: make table RUNS="logs/multiruns/<date>" ARGS="--format latex --plots figures"
	$(RUN) -m learnbench.tools.report $(RUNS) $(ARGS)

SWEEP ?= spiral_rules
LAUNCHER ?=
sweep:  ## run conf/sweep/<SWEEP>.yaml into logs/sweeps/<SWEEP>; a re-run skips finished jobs. LAUNCHER=joblib|slurm_cpu|slurm_gpu|slurm_ddp, ARGS="..."
	@test -f conf/sweep/$(SWEEP).yaml || { echo "no sweep conf/sweep/$(SWEEP).yaml; choose one of: $$(ls conf/sweep | sed 's/\.yaml$$//' | tr '\n' ' ')" >&2; exit 2; }
	@mkdir -p "$${LEARNBENCH_LOG_DIR:-logs}/sweeps"
	$(RUN) -m learnbench.train -m sweep=$(SWEEP) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(DATA_ARG) $(ARGS)
