# Two commands on a fresh machine: `make demo` (the tiny preset end to end) and `make test` (the suite).
# Both create .venv and install groundup into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch by default; a GPU user runs e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
TORCH_SPEC ?= torch==2.13.0
RUN_DIR ?= runs/tiny

.PHONY: install demo test bench clean

$(BIN)/groundup: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned, so the package's torch range is already met and pip fetches no CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/groundup

install: $(BIN)/groundup

demo: install
	$(BIN)/groundup speedrun --preset tiny --run-dir $(RUN_DIR)

test: install
	$(BIN)/python -m pytest -q

bench: install
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs/tiny .pytest_cache
