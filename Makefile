# Mammo-CLIP Kit — the README's commands. Needs only Python 3.11 (or 3.10+), pip and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PROFILE ?= classroom

.PHONY: setup test reproduce lab student nbval lint bench gpu-check clean-runs help

help:
	@echo "make reproduce  set up, build the teaching cohort, run every notebook in the classroom profile"
	@echo "make test       set up, run all tests (unit tests + every notebook in the smoke and the rehearsal profiles)"
	@echo "make lab        JupyterLab on the notebooks"
	@echo "make student    student copies (answers removed) in student/"
	@echo "make gpu-check  on a GPU machine: paper-b5/b2 pretraining and embedding throughput, memory, batch that fits"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[notebooks,dev]"
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/ruff check .
	$(OFFLINE) $(BIN)/python -m pytest

reproduce: setup
	$(OFFLINE) $(BIN)/python -m mammoclip_kit.course.runner --profile $(PROFILE)

lab: setup
	$(BIN)/jupyter lab notebooks/

student: setup
	$(BIN)/python -m mammoclip_kit.course.student --out student

# The conventional nbval route (the same notebooks, profile from the environment); `make test` uses the runner.
nbval: setup
	MAMMOCLIP_PROFILE=smoke $(OFFLINE) $(BIN)/python -m pytest --nbval-lax notebooks/ -p no:cacheprovider

# One prepared GPU run (about 10 min; paper-b5 345 s on an H200): img/s end to end and synthetic, step time, peak memory, batch that fits in 40 / 80 GB,
# embedding img/s. GPU_CHECK_ARGS="--tiny" checks the code path on a CPU; "--text-encoder DIR" uses the real BERT.
gpu-check: setup
	$(OFFLINE) $(BIN)/python -m mammoclip_kit.bench gpu-check $(GPU_CHECK_ARGS)

lint: setup
	$(BIN)/ruff check .

clean-runs:
	rm -rf runs/
