# fgclip-vad: every target sets up the virtual environment itself on a fresh machine.
# Quick start: `make demo`, then `make test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FGCLIP := $(BIN)/fgclip-vad
# torch from the local wheel store on development/CI machines (a CUDA build that runs on CPU).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv demo test frames clean-data

help:
	@echo "make demo    - whole chain on the embedded default (stage 1, training, evaluation)"
	@echo "make test    - the test suite"
	@echo "make frames  - stage 1: decode videos into HDF5 shards (embedded default without arguments)"
	@echo "make eval    - frame-level AUC of the latest debug checkpoint vs its starting model (report, plots)"

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(BIN)/python -m pytest -q tests

frames: venv
	$(FGCLIP) frames

# Stage 1's speed bar: the embedded default vs a bare `ffmpeg -i VIDEO -f null -` of the same videos.
.PHONY: bench-frames
bench-frames: venv
	$(FGCLIP) frames --benchmark --repeats 3

demo: frames

# Evaluation: the latest debug checkpoint vs the model it started from, on the embedded test split.
# Other checkpoints or data: make eval EVAL_ARGS="--checkpoint DIR --test-shards DIR --annotations FILE --out DIR"
.PHONY: eval
eval: venv
	$(FGCLIP) eval $(EVAL_ARGS)

clean-data:
	rm -rf data/synth data/shards data/models
