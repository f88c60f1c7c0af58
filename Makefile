# One-command set-up: every target below creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
# Where PyTorch comes from. Empty: pip's configured index, where torch==2.13.0 on Linux is the
# multi-GB CUDA build; TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU build.
TORCH_INDEX ?=
# Extra pytest arguments for `make test`, e.g. PYTEST_ARGS="-x tests/test_viz.py".
PYTEST_ARGS ?=

.PHONY: demo test lint bench quality operators notebook clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyTorch first, pinned, from TORCH_INDEX when given (see above).
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## train on the built-in photos and write runs/demo/report.html
	$(BIN)/img2img demo --out $(RUNS)/demo

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

bench: $(STAMP)  ## speed benchmarks at full size (minutes)
	$(BIN)/python benchmarks/target_speed.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/infer_speed.py
	$(BIN)/python benchmarks/soak.py

quality: $(STAMP)  ## the quality table (about 25 minutes on 2 cores)
	$(BIN)/python benchmarks/quality.py

operators: $(STAMP)  ## quality on third-party operators: ImageMagick, Pillow, scikit-image, OpenCV (about 2 hours)
	$(BIN)/python benchmarks/operators.py

notebook: $(STAMP)  ## run examples/Img2Img.ipynb and save it with its outputs (under a minute)
	$(BIN)/python examples/execute_notebook.py examples/Img2Img.ipynb

clean:
	rm -rf $(VENV) $(RUNS) build dist src/*.egg-info
