# One-command set-up: every target below creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs

.PHONY: demo test lint bench quality operators clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch first, pinned, so that nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## train on the built-in photos and write runs/demo/report.html
	$(BIN)/img2img demo --out $(RUNS)/demo

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)  ## speed benchmarks at full size (minutes)
	$(BIN)/python benchmarks/target_speed.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/infer_speed.py

quality: $(STAMP)  ## the quality table (about 25 minutes on 2 cores)
	$(BIN)/python benchmarks/quality.py

operators: $(STAMP)  ## quality on third-party operators: ImageMagick, Pillow, scikit-image, OpenCV (about 2 hours)
	$(BIN)/python benchmarks/operators.py

clean:
	rm -rf $(VENV) $(RUNS) build dist src/*.egg-info
