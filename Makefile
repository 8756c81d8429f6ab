# Two commands on a fresh machine: `make demo` (the tiny preset end to end) and `make test` (the suite).
# Both create .venv and install groundup into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch by default; a GPU user runs e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
TORCH_SPEC ?= torch==2.13.0
RUN_DIR ?= runs/tiny

.PHONY: install demo seeds test bench bench-gpu bench-gpu-dry clean

$(BIN)/groundup: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned, so the package's torch range is already met and pip fetches no CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,track]"
	touch $(BIN)/groundup

install: $(BIN)/groundup

demo: install
	$(BIN)/groundup speedrun --preset tiny --run-dir $(RUN_DIR)

# The demo on two more worlds, then every run's targets side by side (runs/compare.md): about three demos' time.
seeds: demo
	for seed in 1 2; do $(BIN)/groundup speedrun --preset tiny --world-seed $$seed || exit 1; done
	$(BIN)/groundup compare $(RUN_DIR) runs/tiny-seed1 runs/tiny-seed2 --output runs/compare.md

# The layering contract first (pyproject's [tool.importlinter]: lower layers never import higher ones), then the suite.
test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# Every CPU benchmark (bench/bench_*.py), each printing ratios against its baseline measured in the same run.
bench: install
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

# The one GPU check (docs/speed.md): a table of 124M pretraining vs the nanoGPT-style baseline, SFT/DPO steps/s and the
# speedruns' wall time, in under 8 minutes on one GPU. bench-gpu-dry: the same steps on a CPU, tiny shapes (< 1 min).
bench-gpu:
	bash bench/gpu_check.sh

bench-gpu-dry:
	GPU_CHECK_DRY=1 bash bench/gpu_check.sh

clean:
	rm -rf runs/tiny .pytest_cache
