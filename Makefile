# Two commands do all set-up on a fresh machine (only Python 3.10+ needed):
#   make demo   -- the main job (shapes world), creating .venv if missing
#   make test   -- the test suite, creating .venv if missing
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch 2.13.0 is the CPU build this project pins for its own machines; elsewhere
# install your own torch first (any >= 2.4) and set TORCH= to skip this pin.
TORCH   ?= torch==2.13.0
# test workers (pytest-xdist; a test file stays on one worker, so its module fixtures are built once)
JOBS    ?= 2

.PHONY: demo test venv browser clean

$(BIN)/.installed: pyproject.toml worlds/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e ".[test,log]" -e worlds   # the library, and the shapes worlds (a plug-in)
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/crossdistill demo --out runs/demo

# the report test opens report.html in headless Chromium (Debian package `chromium`)
browser:
	-@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends chromium \
	   || ($(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends chromium))

test: venv browser
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -n $(JOBS) --dist loadfile --durations=25

clean:
	rm -rf $(VENV) runs
