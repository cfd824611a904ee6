# piconn: train on the host, run on a Raspberry Pi Pico under MicroPython.
#   make demo    train, export, build the firmware, run the demo on the virtual Pico
#   make test    the test suite (what CI runs)
# Everything installs what it needs: Python packages into .venv, Debian's
# arm-none-eabi toolchain, npm packages into tools/node_modules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv test lint

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "piconn needs Python 3.10 or newer"' \
	  || { echo "error: $(PYTHON) is missing or older than 3.10; install python3 and python3-venv"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) \
	  || { echo "error: could not create $(VENV); on Debian: apt-get install python3-venv"; exit 1; }
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check host tests tools
