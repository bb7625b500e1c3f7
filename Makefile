# Two commands do all set-up on a fresh machine (only Python 3.10+ needed):
#   make demo   -- the main job (shapes world), creating .venv if missing
#   make test   -- the test suite, creating .venv if missing
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch 2.13.0 is the CPU build this project pins for its own machines; elsewhere
# install your own torch first (any >= 2.4) and set TORCH= to skip this pin.
TORCH   ?= torch==2.13.0

.PHONY: demo test venv clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e ".[test,log]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/crossdistill demo --out runs/demo

test: venv
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs
