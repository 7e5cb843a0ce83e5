# lst-jax: every target sets up what it needs itself (virtualenv, system packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Accelerator builds of JAX: `make setup ACCEL=cuda|tpu` (remembered in the venv for later targets).
ACCEL ?= $(shell cat $(VENV)/.accel 2>/dev/null)
ifneq ($(filter-out cuda tpu,$(ACCEL)),)
$(error ACCEL=$(ACCEL): choose cuda or tpu, or leave it empty for the CPU build)
endif
comma := ,
STAMP := $(VENV)/.installed$(if $(ACCEL),-$(ACCEL))
EXP ?= demo
WORKDIR ?= runs/$(EXP)$(if $(SIZE),_$(SIZE))
DATA_DIR ?= data/demo
# On CPU, YNNPACK dot fusion costs 2-18% on our model sizes (see README, performance).
export XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

SIZE ?=
PAIR ?= compute_matched
CONFIG := experiments/$(EXP).py$(if $(SIZE),:$(SIZE))
# The demo corpus is built first for the demo and for CPU-sized presets (they train on it).
DEMO_DATA := $(if $(filter demo demo_baseline,$(EXP))$(filter demo tiny 20m,$(SIZE)),yes)

STUDY_DIR ?= data/study

.PHONY: accel-check accel-wheels aot aot-setup setup train data data-study lint test test-fast eval generate export bench bench-generate bench-data bench-storage compare reproduce plot clean help

help:
	@echo "make train [EXP=demo] [SIZE=demo|tiny|20m|420m|1b|7b] [WORKDIR=runs/EXP] [ARGS='--config.KEY=VALUE ...']"
	@echo "                                            train an experiment (builds the demo data first"
	@echo "                                            for the demo and CPU sizes)"
	@echo "make reproduce [QUICK=1] [ARGS=...]       the LST-vs-baseline study at CPU scale: runs/reproduce/REPORT.md"
	@echo "                                            (builds the ~20 h study corpus first; ~3 h, QUICK=1 ~15 min)"
	@echo "make compare [PAIR=compute_matched|flop_matched|data_matched] [SIZE=tiny]"
	@echo "                                            train both members of a paper pair, side by side"
	@echo "make plot WORKDIR=runs/a[,runs/b]           PNG loss curves against FLOPs and tokens"
	@echo "make eval [EXP=demo] [WORKDIR=runs/EXP] [STEP=N] [ARGS=...]"
	@echo "                                            benchmark a trained run: spoken cloze (4 directions), held-out bits,"
	@echo "                                            WER of original audio, vocoder ceiling, generated speech [LISTEN=8]"
	@echo "make export [EXP=demo] [OUT=exports/EXP] [FORMAT=lst_jax|hf_llama] [STEP=N]"
	@echo "                                            a run as safetensors + config + tokenizer (hf_llama: the baseline for transformers)"
	@echo "make generate [EXP=demo] [WORKDIR=runs/EXP] [ARGS=...]"
	@echo "                                            samples to listen to: <workdir>/samples/index.html"
	@echo "make aot [SIZES=1b,7b] [TARGETS=v5p-64] [ARGS=...]"
	@echo "                                            compile every accelerator preset for its TPU and GPU targets"
	@echo "                                            on this CPU host: memory per device, fits, compile time, the"
	@echo "                                            TPU compiler's step estimate (runs/aot/matrix.md)"
	@echo "make aot-setup                              the compile-only venvs: .venv-aot-tpu (libtpu), .venv-aot-cuda (~4 GB)"
	@echo "make setup [ACCEL=cuda|tpu]                 the venv: CPU JAX, or JAX with CUDA 13 / libtpu (remembered)"
	@echo "make test                                   ruff, then the whole test suite (what CI runs)"
	@echo "make lint                                   ruff only (the rules in pyproject.toml)"
	@echo "make test-fast                              the unit tier only (pytest -m 'not slow'), for the edit loop"
	@echo "make data [DATA_DIR=data/demo]              build the demo corpus only"
	@echo "make bench                                  model throughput figures (runs/bench.json; data_prep fills"
	@echo "                                            the reference comparison's batches first: BENCH_BATCHES)"
	@echo "make bench-data [EXP=demo] [SIZE=...]       loader throughput vs the train step it feeds"
	@echo "make bench-storage                          the loader on gs:// (a local emulator) beside local disk"
	@echo "make bench-generate                         decoding speed: LST vs baseline, cached vs uncached"
	@echo "make accel-check [ACCEL=cuda|tpu] [ARGS=...]  on a GPU/TPU machine: tests, 1B bf16 MFU and memory, decoding"
	@echo "                                            (runs/accel_check.json; installs only what the machine lacks)"
	@echo "make accel-wheels PYVER=3.12                the wheels an offline accelerator machine needs (wheels/)"

# System packages from Debian: the KJV text (demo corpus); shellcheck (tests lint the launchers).
/usr/bin/bible:
	@echo ">> installing Debian package bible-kjv (demo corpus text)"
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq bible-kjv bible-kjv-text >/dev/null

/usr/bin/shellcheck:
	@echo ">> installing Debian package shellcheck (the launcher scripts' lint, run by the tests)"
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq shellcheck >/dev/null

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python >= 3.11 is required (found $$($(PYTHON) --version)); set PYTHON=..." >&2; exit 1; }
	@echo ">> creating $(VENV) and installing pinned dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,hf$(if $(ACCEL),$(comma)$(ACCEL))]'
	@echo '$(ACCEL)' > $(VENV)/.accel
	@touch $@

setup: $(STAMP) /usr/bin/bible /usr/bin/shellcheck

data: setup
	$(PY) -m data_prep.corpus.demo --output=$(DATA_DIR)

train: setup
	$(if $(DEMO_DATA),$(PY) -m data_prep.corpus.demo --output=$(DATA_DIR))
	$(PY) -m lst_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) \
	  $(if $(DEMO_DATA),--config.data.dir=$(DATA_DIR)) $(ARGS)

# Likelihood benchmarks of a trained run (builds the demo's built-in benchmarks first if missing),
# and automatic listening on LISTEN held-out transcripts: the recognizer's WER on the original audio,
# on ground-truth units through the vocoder (the ceiling) and on generated speech (ARGS=--vocoder=DIR:
# a unit HiFi-GAN for HuBERT units; --asr=DIR: your Whisper in CTranslate2 form instead of pocketsphinx).
LISTEN ?= 8
eval: setup
	$(PY) -m data_prep.benchmarks.builtin --data_dir=$(DATA_DIR) --if_demo
	$(PY) -m lst_jax.eval.main --config=$(CONFIG) --workdir=$(WORKDIR) --listen=$(LISTEN) \
	  $(if $(STEP),--step=$(STEP)) $(if $(DEMO_DATA),--config.data.dir=$(DATA_DIR)) $(ARGS)

# Samples of a trained run: four tasks on held-out prompts, vocoded, transcribed (<workdir>/samples/index.html).
generate: setup
	$(PY) -m lst_jax.generate --config=$(CONFIG) --workdir=$(WORKDIR) \
	  $(if $(DEMO_DATA),--config.data.dir=$(DATA_DIR)) $(ARGS)

# The accelerators' compilers, each in its own venv over .venv (CPU runs never load them):
# libtpu (~0.3 GB) and the CUDA 13 plugin with ptxas, nvvm and cuDNN (~3.7 GB).
AOT_VENVS := .venv-aot-tpu/.installed .venv-aot-cuda/.installed
.venv-aot-%/.installed: $(STAMP)
	bash tools/aot_venv.sh $*

aot-setup: setup $(AOT_VENVS)

# Every accelerator preset x member x target compiled on this host (lst_jax/tools/aot.py):
# runs/aot/<size>_<member>_<target>.json and runs/aot/matrix.md (kept entries are reused; ARGS=--force).
aot: aot-setup
	$(PY) -m lst_jax.tools.aot --matrix $(if $(SIZES),--sizes=$(SIZES)) $(if $(TARGETS),--targets=$(TARGETS)) $(ARGS)

# The lint first (ruff, the rules in pyproject.toml), then the suite.
lint: setup
	$(PY) -m ruff check lst_jax data_prep tests tools

test: lint $(AOT_VENVS)
	$(PY) -m pytest -q -n 2 --dist=worksteal --durations=10 tests

test-fast: lint $(AOT_VENVS)
	$(PY) -m pytest -q -n 2 --dist=worksteal --durations=5 -m "not slow" tests

# Model throughput: FLOP/s vs matmul peak, LST vs baseline per second of speech, reference config.
# The reference comparison's batches are filled by data_prep first (lst_jax never runs data_prep).
BENCH_BATCHES ?= runs/reference_fill.npz
bench: setup
	@mkdir -p $(dir $(BENCH_BATCHES))
	$(PY) -m data_prep.corpus.reference_fill --out=$(BENCH_BATCHES)
	$(PY) -m lst_jax.tools.bench --batches=$(BENCH_BATCHES) $(ARGS)

# A trained run as a self-contained directory (safetensors + config + tokenizer + unit spec + card);
# FORMAT=hf_llama writes the baseline as a Hugging Face Llama.
FORMAT ?= lst_jax
export: setup
	$(PY) -m lst_jax.export --config=$(CONFIG) --workdir=$(WORKDIR) --out=$(or $(OUT),exports/$(EXP)) \
	  --format=$(FORMAT) $(if $(STEP),--step=$(STEP)) $(if $(DEMO_DATA),--config.data.dir=$(DATA_DIR)) $(ARGS)

# Decoding speed: LST vs baseline speech seconds per second (batch 1, 16), cached vs uncached.
bench-generate: setup
	$(PY) -m lst_jax.tools.bench_generate $(ARGS)

# Input pipeline throughput vs the experiment's train step (the demo's unless EXP/SIZE), and
# per-document preparation speed.
bench-data: setup
	$(PY) -m data_prep.corpus.demo --output=$(DATA_DIR)
	$(PY) -m data_prep.maintenance.bench_loader --config=$(CONFIG) --config.data.dir=$(DATA_DIR) $(ARGS)

# The loader on a dataset in Cloud Storage (a local fake-gcs-server) beside local disk (runs/bench_storage.json).
bench-storage: setup
	$(PY) -m data_prep.corpus.demo --output=$(DATA_DIR)
	$(PY) -m lst_jax.tools.bench_storage --config=experiments/demo.py --config.data.dir=$(DATA_DIR) $(ARGS)

# The study corpus (~20 h of speech, 8 voices) and its built-in benchmarks, built once and reused.
data-study: setup
	$(PY) -m data_prep.corpus.demo --corpus=study --output=$(STUDY_DIR)
	$(PY) -m data_prep.benchmarks.builtin --data_dir=$(STUDY_DIR)

# The LST-vs-baseline study (lst_jax/tools/reproduce.py): runs/reproduce/REPORT.md, results.json, plots.
reproduce: data-study
	$(PY) -m lst_jax.tools.reproduce --data_dir=$(STUDY_DIR) $(if $(QUICK),--quick --out=runs/reproduce_quick) $(ARGS)

# Both members of a paper pair at CPU size on the demo corpus, printed side by side.
compare: setup
	$(PY) -m data_prep.corpus.demo --output=$(DATA_DIR)
	$(PY) -m lst_jax.tools.compare --pair=$(PAIR) --size=$(or $(SIZE),tiny) --data_dir=$(DATA_DIR) $(ARGS)

plot: setup
	$(PY) -m lst_jax.tools.plot --workdir=$(WORKDIR) $(ARGS)

clean:
	rm -rf runs

# On an accelerator machine: its own venv (.venv-accel, over the machine's packages, keeping a
# preinstalled GPU/TPU JAX); at most ~8 min on one GPU; runs/accel_check.json.
accel-check:
	ACCEL=$(or $(ACCEL),cuda) bash tools/accel_check.sh $(ARGS)

PYVER ?= 3.11
accel-wheels:
	ACCEL=$(or $(ACCEL),cuda) bash tools/accel_check.sh --wheels $(PYVER)
