# kd-lightning: `make test` runs the suite; `make reproduce` runs the study (see README).
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# the CPU machines this project is developed on keep these two on disk; elsewhere set TORCH_SPEC=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DATA_ARCHIVE ?= ../shared/data/cifar10-jpeg.tar.gz
PYTEST_ARGS ?=

.PHONY: setup test test-fast data smoke

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(VENV)/bin/pip install -q $(TORCH_SPEC))
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# unpack the offline JPEG copy of CIFAR-10 into data/cifar10-jpeg (data=offline reads it)
data: data/cifar10-jpeg/train

data/cifar10-jpeg/train:
	@test -f $(DATA_ARCHIVE) || { echo "no archive at $(DATA_ARCHIVE); set DATA_ARCHIVE=PATH/cifar10-jpeg.tar.gz"; exit 2; }
	mkdir -p data && tar xzf $(DATA_ARCHIVE) -C data

# seconds-long teacher + two KD students on synthetic data
smoke: setup
	$(PYTHON) -m kd_lightning.train experiment=smoke mode=teacher
	$(PYTHON) -m kd_lightning.train experiment=smoke -m mode=kd student.depth=3,4
