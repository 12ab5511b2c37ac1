# Two commands for a newcomer: `make lab` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: lab test venv figures slides checkpoints clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# as root (containers, Colab-like machines) Jupyter refuses to start without --allow-root
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $$(test "$$(id -u)" = 0 && echo --allow-root)

# the linter (one style: ruff, configured in pyproject.toml), then the whole suite; notebooks in fast mode
test: $(STAMP)
	$(BIN)/ruff check .
	DDPM_LITE_FAST=1 $(BIN)/python -m pytest

# the shipped digits models (ddpm_lite/checkpoints/*.pt), trained on the CPU from their presets with fixed seeds
CHECKPOINTS := digits digits_cond digits_classifier
checkpoints: $(STAMP)
	@for p in $(CHECKPOINTS); do \
	  $(BIN)/ddpm-lite train --preset $$p --steps 2000 --seed 0 --out runs/$$p --no-progress --device cpu && \
	  $(BIN)/ddpm-lite export --checkpoint runs/$$p --out ddpm_lite/checkpoints/$$p.pt --half || exit 1; \
	done

# every figure of the deck, from the package's code, deterministic: assets/*.png + assets/figures.json
figures: $(STAMP)
	$(BIN)/python tools/make_figures.py

# the offline HTML deck and its PDF: slides/dist/index.html, slides/dist/deck.pdf (needs node/npm and chromium)
slides: $(STAMP)
	$(BIN)/python tools/build_deck.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache slides/dist node_modules
