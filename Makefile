# kd-lightning: `make test` runs the suite; `make reproduce` runs the study; `make help` lists every target.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# the CPU machines this project is developed on keep these two on disk; elsewhere set TORCH_SPEC=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# SHARED: the folder holding the offline CIFAR-10 archive and the wheels a bare GPU machine lacks.
# It is the one default for both; tests find them through the exported DATA_ARCHIVE and WHEELS.
SHARED ?= ../shared
DATA_ARCHIVE ?= $(SHARED)/data/cifar10-jpeg.tar.gz
WHEELS ?= $(SHARED)/wheels
export DATA_ARCHIVE WHEELS
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint data smoke

help: ## list every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed ## create .venv and install the project with its dev tools

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(VENV)/bin/pip install -q $(TORCH_SPEC))
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

test: setup ## run the whole test suite (CPU, a few minutes)
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

test-fast: setup ## the unit tests: none trains a network or starts a process (under a minute)
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff: lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# unpack the offline JPEG copy of CIFAR-10 into data/cifar10-jpeg (data=offline reads it)
data: data/cifar10-jpeg/train ## unpack the offline CIFAR-10 copy into data/cifar10-jpeg

data/cifar10-jpeg/train:
	@test -f $(DATA_ARCHIVE) || { echo "no archive at $(DATA_ARCHIVE); set DATA_ARCHIVE=PATH/cifar10-jpeg.tar.gz"; exit 2; }
	mkdir -p data && tar xzf $(DATA_ARCHIVE) -C data

# seconds-long teacher + two KD students on synthetic data
smoke: setup ## a seconds-long teacher and two KD students on synthetic data
	$(PYTHON) -m kd_lightning.train experiment=smoke mode=teacher
	$(PYTHON) -m kd_lightning.train experiment=smoke -m mode=kd student.depth=3,4

# ----------------------------------------------------------------------------- the study
# make reproduce                      teacher -> baselines -> kd -> report (the study, CIFAR-10)
# make reproduce SEEDS=0,1,2          mean ± std over three seeds
# make reproduce LAUNCHER=gpus        every visible GPU, one run per GPU (EXTRA=gpu_pool.jobs_per_gpu=2 packs two)
# make reproduce LAUNCHER=slurm EXTRA="hydra.launcher.partition=gpu hydra.launcher.account=me"
# make reproduce-mini                 the same at width 16 on the offline copy, on a laptop CPU
# Finished runs (metrics.json) are skipped and unfinished ones resume, so rerunning continues.

# study | mini | smoke (conf/experiment/)
EXPERIMENT ?= study
# comma-separated training seeds; the kd runs of seed s distil from the teacher of seed s
SEEDS ?= 0
# student depths
DEPTHS ?= 3,4,5,6
# student epochs and teacher epochs; empty: the experiment's trainer.max_epochs
EPOCHS ?=
TEACHER_EPOCHS ?= $(EPOCHS)
# offline | cifar10 | synthetic (conf/data/); empty: the experiment's choice. Or data.source/data.root:
DATA ?=
DATA_SOURCE ?=
DATA_ROOT ?=
# paths.root: runs/, teachers/ and report/ live under it
ROOT ?= outputs
# gpus | slurm | submitit_local | joblib (conf/hydra/launcher/); empty: one run after another
LAUNCHER ?=
# any further Hydra overrides, e.g. EXTRA="trainer.precision=32-true data.subset=5000"
EXTRA ?=
# make sweep-kd grid, make search-kd trials per depth
ALPHAS ?= 0.1,0.5,0.9
TEMPERATURES ?= 1,2,4,8
TRIALS ?= 20

comma := ,
TRAIN := $(PYTHON) -m kd_lightning.train -m
OVERRIDES = experiment=$(EXPERIMENT) paths.root=$(ROOT) \
	$(if $(DATA),data=$(DATA)) $(if $(DATA_SOURCE),data.source=$(DATA_SOURCE)) \
	$(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER))
STUDENT_EPOCHS = $(if $(EPOCHS),trainer.max_epochs=$(EPOCHS))
# the study's runs, stage by stage, as one Hydra multirun each with LAUNCHER (kd_lightning/study/plan.py)
STUDY = $(PYTHON) -m kd_lightning.study run --seeds $(SEEDS) --depths $(DEPTHS) \
	$(if $(ASSISTANT),--assistant $(ASSISTANT)) $(if $(CHAIN_DEPTHS),--chain-depths $(CHAIN_DEPTHS)) \
	$(if $(TEACHER_EPOCHS),--teacher trainer.max_epochs=$(TEACHER_EPOCHS)) \
	$(if $(EPOCHS),--student trainer.max_epochs=$(EPOCHS)) $(OVERRIDES) $(EXTRA)

.PHONY: teacher baselines kd reproduce reproduce-mini sweep-kd search-kd methods report report-bundle tensorboard clean
# each target runs its stages in order: never run them side by side (the launcher parallelises runs)
.NOTPARALLEL:

teacher: setup ## train the teacher(s) of SEEDS
	$(STUDY) --stages teacher

baselines: setup ## train the students of DEPTHS on hard labels
	$(STUDY) --stages baseline

kd: setup ## the teacher(s), then the students of DEPTHS distilled from their seed's teacher
	$(STUDY) --stages teacher,kd

reproduce: setup ## the study: teacher, baselines, KD students, report
	$(STUDY) --stages teacher,baseline,kd
	$(PYTHON) -m kd_lightning.report $(ROOT)/runs

# width 16, full offline data, CPU: epochs chosen to finish in under 25 minutes on 2 idle cores
reproduce-mini: EXPERIMENT = mini
reproduce-mini: ROOT = outputs/mini
reproduce-mini: TEACHER_EPOCHS = 2
reproduce-mini: EPOCHS = 1
reproduce-mini: data reproduce ## the study at width 16 on a CPU, from the offline copy

# kd.alpha x kd.temperature grid for every depth and seed (conf/hparams_search/kd_grid.yaml)
sweep-kd: teacher ## kd.alpha x kd.temperature grid for every depth
	$(TRAIN) hparams_search=kd_grid student.depth=$(DEPTHS) \
		kd.alpha=$(ALPHAS) kd.temperature=$(TEMPERATURES) seed=$(SEEDS) $(OVERRIDES) $(STUDENT_EPOCHS) $(EXTRA)

# Optuna search of alpha and T per depth on validation accuracy, first seed only (pip install -e '.[search]')
search-kd: teacher ## Optuna search of alpha and T per depth (pip install -e '.[search]')
	for d in $(subst $(comma), ,$(DEPTHS)); do \
		$(TRAIN) hparams_search=kd_optuna student.depth=$$d hydra.sweeper.n_trials=$(TRIALS) \
			seed=$(firstword $(subst $(comma), ,$(SEEDS))) $(OVERRIDES) $(STUDENT_EPOCHS) $(EXTRA) || exit $$?; \
	done

# baseline, KD, reverse KD, DKD and KD through an assistant (ResNet-ASSISTANT, itself distilled from the
# teacher) for every depth and seed; the report then adds its methods table. Empty: ASSISTANT 6, CHAIN_DEPTHS 3,4,5
ASSISTANT ?=
CHAIN_DEPTHS ?=

methods: setup ## the methods comparison: baseline, KD, reverse KD, DKD, an assistant chain
	$(STUDY) --methods
	$(PYTHON) -m kd_lightning.report $(ROOT)/runs

# results.md, results.csv and figures in $(ROOT)/report/ from every run under $(ROOT)/runs/
report: setup ## results.md, results.csv and figures from every run under ROOT
	$(PYTHON) -m kd_lightning.report $(ROOT)/runs

# the published three-seed H100 study, no training: its report goes to results/h100-2026-11-28/report/
BUNDLE ?= results/h100-2026-11-28
report-bundle: setup ## the report of a published results bundle (BUNDLE=results/h100-2026-11-28)
	$(PYTHON) -m kd_lightning.report $(BUNDLE)/runs

LOGDIR ?= outputs
tensorboard: setup ## TensorBoard over the runs under LOGDIR (outputs/; LOGDIR=results/h100-2026-11-28/runs)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

# removes every run, checkpoint and report under outputs/ and nothing else
clean: ## remove outputs/ (every run, checkpoint and report)
	rm -rf outputs

# ---------------------------------------------------------------- speed: benchmark and GPU bundle
# (docs/performance.md) the four speed comparisons on this machine: a table, and outputs/bench/bench.json
# .gpu/ (git-ignored): wheels a bare GPU machine lacks plus the data archive, for scripts/gpu_study.sh
GPU_OUT ?= outputs/gpu-study

.PHONY: bench gpu-bundle gpu-study

bench: setup ## the speed comparisons on this machine (docs/performance.md)
	$(PYTHON) -m kd_lightning.bench --out outputs/bench/bench.json

gpu-bundle: ## copy the wheels and the data archive into .gpu/ for a bare GPU machine
	@test -f $(DATA_ARCHIVE) || { echo "no archive at $(DATA_ARCHIVE); set DATA_ARCHIVE=PATH/cifar10-jpeg.tar.gz"; exit 2; }
	mkdir -p .gpu/wheels
	cp -f $(WHEELS)/*.whl .gpu/wheels/
	cp -f $(DATA_ARCHIVE) .gpu/cifar10-jpeg.tar.gz

# on the GPU machine: the three-seed study, the benchmark and the report into $(GPU_OUT), within 8 minutes
gpu-study: ## on a GPU machine: the study, the benchmark and the report into GPU_OUT
	scripts/gpu_study.sh $(GPU_OUT)

# the GPU script's steps on this CPU (synthetic data, width 8, one epoch, two seeds): check it before a GPU call
.PHONY: gpu-dry-run
gpu-dry-run: setup ## the GPU script's steps on this CPU in about a minute (synthetic data, tiny sizes)
	DRY_RUN=1 SEEDS="0 1" DEPTHS=3 PYTHON=$(PYTHON) scripts/gpu_study.sh outputs/gpu-dry-run
