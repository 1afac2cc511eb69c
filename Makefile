# Mammo-CLIP Kit — the README's commands. Needs only Python 3.11 (or 3.10+), pip and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PROFILE ?= classroom

.PHONY: setup test reproduce lab student nbval lint bench clean-runs help

help:
	@echo "make reproduce  set up, build the teaching cohort, run every notebook in the classroom profile"
	@echo "make test       set up, run all tests (unit tests + every notebook in the smoke and the rehearsal profiles)"
	@echo "make lab        JupyterLab on the notebooks"
	@echo "make student    student copies (answers removed) in student/"

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

lint: setup
	$(BIN)/ruff check .

clean-runs:
	rm -rf runs/
