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
	@echo "make demo    - whole chain on the embedded default (stage 1, training, evaluation); MODEL_FAMILY=siglip2 for FG-CLIP 2"
	@echo "make test    - the test suite"
	@echo "make frames  - stage 1: decode videos into HDF5 shards (embedded default without arguments)"
	@echo "make features - snippet features of every video (the field's files: .npy, lists, ground truth)"
	@echo "make eval    - frame-level AUC of the latest debug checkpoint vs its starting model (report, plots)"
	@echo "make train-debug / train-full - stage 2 presets; override e.g. NUM_FRAMES=128 BATCH_SIZE=1 GRAD_ACCUM=16"
	@echo "make doctor  - pre-flight checks (data, GPU, disk, model) for PRESET=debug|full"
	@echo "make bench   - GPU benchmark: device-memory ceiling vs HDF5 loader vs decode-in-the-loop, eval speed"

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

# --- stage 2: training -------------------------------------------------------------------------
# Without SHARDS/MODEL the presets train on the embedded default (paths as in pipeline/embedded.py),
# built on first use. Every preset value can be overridden by a variable of the same meaning:
#   make train-full NUM_FRAMES=128 BATCH_SIZE=1 GRAD_ACCUM=16      (less GPU memory)
#   make train-full SHARDS=data/shards/ucf/train_t256 MODEL=models/clip-vit-base-patch16 RESUME=auto
#   make train-full NPROC=4                                        (4 GPUs through torchrun)
# Anything else: TRAIN_ARGS="--augment --max-grad-norm 0.5".
DATA_ROOT ?= $(or $(FGCLIP_DATA_ROOT),data)
EMBEDDED_MODEL := $(DATA_ROOT)/models/tiny/config.json
embedded_shards = $(DATA_ROOT)/shards/train_t$(1)/manifest.json

$(DATA_ROOT)/shards/train_t%/manifest.json: | venv
	$(FGCLIP) frames
# The tiny model's tokenizer is trained on the embedded captions, so the data comes first.
$(EMBEDDED_MODEL): | $(call embedded_shards,64)
	$(FGCLIP) init-model --preset tiny

_opt = $(if $(strip $(2)),$(1) $(strip $(2)))
TRAIN_OPTIONS = $(call _opt,--shards,$(SHARDS)) $(call _opt,--model,$(MODEL)) $(call _opt,--output-dir,$(OUTPUT_DIR)) \
	$(call _opt,--num-frames,$(NUM_FRAMES)) $(call _opt,--batch-size,$(BATCH_SIZE)) $(call _opt,--grad-accum,$(GRAD_ACCUM)) \
	$(call _opt,--epochs,$(EPOCHS)) $(call _opt,--lr,$(LR)) $(call _opt,--text-lr,$(TEXT_LR)) \
	$(call _opt,--workers,$(WORKERS)) $(call _opt,--max-records,$(MAX_RECORDS)) $(call _opt,--seed,$(SEED)) \
	$(call _opt,--save-every,$(SAVE_EVERY)) $(call _opt,--max-grad-norm,$(MAX_GRAD_NORM)) \
	$(call _opt,--resume,$(RESUME)) $(TRAIN_ARGS)
NPROC ?= 1
TRAIN_CMD = $(if $(filter-out 1,$(NPROC)),$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m fgclip.cli,$(FGCLIP)) train
# The embedded-default files a preset needs when SHARDS / MODEL are not given.
train_prereqs = venv $(if $(SHARDS),,$(call embedded_shards,$(1))) $(if $(MODEL),,$(EMBEDDED_MODEL))

.PHONY: train-debug train-full train-demo doctor
train-debug: $(call train_prereqs,64)
	$(TRAIN_CMD) --preset debug $(TRAIN_OPTIONS)

train-full: $(call train_prereqs,256)
	$(TRAIN_CMD) --preset full $(TRAIN_OPTIONS)

train-demo: $(call train_prereqs,64)
	$(TRAIN_CMD) --preset demo $(TRAIN_OPTIONS)

PRESET ?= debug
doctor: venv
	$(FGCLIP) doctor --preset $(PRESET) $(call _opt,--shards,$(SHARDS)) $(call _opt,--model,$(MODEL)) \
		$(call _opt,--output-dir,$(OUTPUT_DIR)) $(call _opt,--num-frames,$(NUM_FRAMES)) $(call _opt,--annotations,$(ANNOTATIONS))

# The whole chain on the embedded default: stage 1, the tiny model, the demo preset, evaluation
# of the trained model against its untrained start. MODEL_FAMILY=siglip2 runs it with FG-CLIP 2's
# family (SigLIP 2 towers, sigmoid loss, Gemma-style tokenizer; `init-model --preset tiny-siglip2`).
MODEL_FAMILY ?= clip
DEMO_MODEL_PRESET := $(if $(filter siglip2,$(MODEL_FAMILY)),tiny-siglip2,$(if $(filter clip,$(MODEL_FAMILY)),tiny,$(error MODEL_FAMILY must be clip or siglip2, not $(MODEL_FAMILY))))
DEMO_MODEL := $(DATA_ROOT)/models/$(DEMO_MODEL_PRESET)
DEMO_DIR ?= checkpoints/fgclip_demo$(if $(filter siglip2,$(MODEL_FAMILY)),_siglip2)
DEMO_TRAIN_PRESET := demo$(if $(filter siglip2,$(MODEL_FAMILY)),-siglip2)
# make demo chooses its checkpoint on held-out training videos (best/), never on the test split.
DEMO_VALIDATION ?= --val-fraction 0.05 --val-every 20
# The SigLIP 2 demo evaluates the end of its fixed schedule (final/) instead: with 3 held-out
# videos, retrieval fell 0.5 -> 0 after step 60 and video_label_auc swung 1.0 -> 0.0002 while
# the test AUC of the same run rose to 0.79, so best/ (step 20-60) was noise, not selection.
DEMO_EVAL_CHECKPOINT := $(DEMO_DIR)$(if $(filter siglip2,$(MODEL_FAMILY)),/final)
# With the CLIP family the demo also extracts snippet features of the trained model and of its start
# (make features) and trains a head on each (fgclip/heads, `train-head`), three seeds, sized for 2 CPU
# cores by DEMO_HEAD_ARGS (the paper's defaults are train-head's own); eval puts their rows beside
# prompt scoring.
DEMO_FEATURES := features/fgclip_demo
DEMO_HEADS := heads/fgclip_demo
DEMO_HEAD_ARGS ?= --method vadclip --epochs 30 --lr 1e-3 --batch-size 8 --clip-snippets 64 --prompt-prefix 4 \
	--prompt-postfix 4 --seeds 0,1,2 --no-resume
demo: frames
	test -f $(DEMO_MODEL)/config.json || $(FGCLIP) init-model --preset $(DEMO_MODEL_PRESET) --out $(DEMO_MODEL)
	$(FGCLIP) train --preset $(DEMO_TRAIN_PRESET) --model $(DEMO_MODEL) --output-dir $(DEMO_DIR) --resume auto $(DEMO_VALIDATION)
ifeq ($(MODEL_FAMILY),clip)
	$(FGCLIP) features
	for features in $(DEMO_FEATURES)/*/; do \
		$(FGCLIP) train-head --features $$features --out $(DEMO_HEADS)/$$(basename $$features) $(DEMO_HEAD_ARGS) || exit 1; \
	done
	heads=$$(for run in $(DEMO_HEADS)/*/; do printf -- '--head %s ' $$run; done); \
	$(MAKE) eval EVAL_ARGS="--checkpoint $(DEMO_EVAL_CHECKPOINT) $$heads $(EVAL_ARGS)"
else
	$(MAKE) eval EVAL_ARGS="--checkpoint $(DEMO_EVAL_CHECKPOINT) $(EVAL_ARGS)"
endif

# Evaluation: the latest debug checkpoint vs the model it started from, on the embedded test split.
# Other checkpoints or data: make eval EVAL_ARGS="--checkpoint DIR --test-shards DIR --annotations FILE --out DIR"
.PHONY: eval
eval: venv
	$(FGCLIP) eval $(EVAL_ARGS)

# Snippet features (fgclip/features): one feature per 16 source frames of every training and test video,
# in the files the field's heads read. Without arguments: the embedded default, for the demo's trained
# model (when `make demo` ran) and the model it started from, into features/fgclip_demo/<model>/.
# Real data: make features FEATURES_ARGS="--train-list Anomaly_Train.txt --test-list Anomaly_Test.txt \
#   --video-root UCF_Crime/Videos --checkpoint ours=RUN --checkpoint clip=MODEL --crops 10 --annotations FILE"
# Several GPUs: torchrun --standalone --nproc_per_node=N -m fgclip.cli features ...
FEATURES_ARGS ?=
.PHONY: features
features: venv
	$(FGCLIP) features $(FEATURES_ARGS)

# Weakly supervised heads (fgclip/heads) on a features directory: HEAD_ARGS="--features DIR --out RUN [--seeds 0,1,2]".
# VadCLIP's released UCF-Crime features (frozen CLIP ViT-B/16, 10 crops), with its lists and gt_ucf.npy:
#   make train-head HEAD_ARGS="--train-list list/ucf_CLIP_rgb.csv --test-list list/ucf_CLIP_rgbtest.csv \
#     --gt list/gt_ucf.npy --path-map /home/xbgydx/Desktop/UCFClipFeatures=/data/UCFClipFeatures \
#     --text-model models/clip-vit-base-patch16 --out heads/vadclip-ucf --seeds 0,1,2"
HEAD_ARGS ?=
.PHONY: train-head
train-head: venv
	$(FGCLIP) train-head $(HEAD_ARGS)

# Benchmarks (docs/PERFORMANCE.md): on a GPU, full-size synthetic inputs and a ViT-B/16-shaped model;
# results in bench/bench*.json. `make bench-smoke` runs the same four measurements tiny, on a CPU.
BENCH_ARGS ?=
.PHONY: bench bench-smoke
bench: venv
	$(FGCLIP) bench --out bench --make-data $(BENCH_ARGS)

bench-smoke: venv
	$(FGCLIP) bench --out bench/smoke --smoke

clean-data:
	rm -rf data/synth data/shards data/models
