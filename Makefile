# Two commands on a fresh Debian/Ubuntu machine (root, or a user with sudo):
#   make demo   set everything up, then colour data/samples/ with the default model into output/samples/
#   make test   set everything up, then run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := imagemagick libmagickwand-dev libjpeg-turbo-progs chromium nginx-light fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages demo test test-fast benchmarks clean

system-packages:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for package in $(APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	  $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:" $$missing; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else \
	  echo "no apt-get: install ImageMagick with its MagickWand library, jpegtran (and chromium for the browser test) yourself"; \
	fi

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: system-packages $(BIN)/.installed

demo: setup
	$(BIN)/koala colorize data/samples --output output/samples
	@echo "coloured photos are in output/samples/"

test: setup
	$(BIN)/python -m pytest -q --timeout=900
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --timeout=900 tests/test_model.py tests/test_backends.py

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf output .pytest_cache
