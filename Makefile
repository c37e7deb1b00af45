# Two commands on a fresh Debian/Ubuntu machine (root, or a user with sudo):
#   make demo   install what colouring needs, then colour data/samples/ with the default model into output/samples/
#   make test   install that and what the tests need too (the web service, Dask, a browser, NGINX, JAX), then run the tests
# (and `make benchmarks`: what the tests need plus requirements-benchmarks.txt, then benchmarks/run_all.py)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# colouring photos: ImageMagick (with the MagickWand library wand loads) and jpegtran
DEMO_APT_PACKAGES := imagemagick libmagickwand-dev libjpeg-turbo-progs
# the tests besides: the page in a real browser, the NGINX front end, the figures' font
TEST_APT_PACKAGES := chromium nginx-light fonts-dejavu-core

.PHONY: setup setup-test system-packages test-system-packages demo test test-fast benchmarks clean

# missing packages only; waits for another apt or dpkg run (apt's DPkg::Lock::Timeout) instead of failing
system-packages:
	PYTHON=$(PYTHON) sh scripts/install-system-packages.sh $(DEMO_APT_PACKAGES)

test-system-packages: system-packages
	PYTHON=$(PYTHON) sh scripts/install-system-packages.sh $(TEST_APT_PACKAGES)

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-serve.txt requirements-cluster.txt requirements-test.txt
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

$(BIN)/.installed-benchmarks: $(BIN)/.installed-test requirements-benchmarks.txt
	$(BIN)/python -m pip install -q -r requirements-benchmarks.txt
	touch $@

setup: system-packages $(BIN)/.installed

setup-test: test-system-packages $(BIN)/.installed-test

demo: setup
	$(BIN)/koala colorize data/samples --output output/samples
	@echo "coloured photos are in output/samples/"

test: setup-test
	$(BIN)/python -m pytest -q --timeout=900
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --timeout=900 tests/test_model.py tests/test_backends.py
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --timeout=900 tests/test_lite0_unet.py -k "shapes or grey or save_and_load or overfit"

benchmarks: setup-test $(BIN)/.installed-benchmarks
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf output .pytest_cache
