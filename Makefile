# Two entry points for a newcomer: `make demo` and `make test`. Each sets up everything it needs,
# idempotently: the virtual environment, the package with its dependencies, and the real data.
PYTHON   ?= python3.11
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.cnnzoo-installed
FMNIST   ?= /usr/share/datasets/fashion-mnist
DATA_OK  := $(FMNIST)/train-images-idx3-ubyte.gz

.PHONY: demo test lint docs docs-build setup data browser qemu clean

demo: setup data
	$(PY) -m cnnzoo train --model lenet5 --dataset fashion-mnist

test: lint docs-build data browser qemu
	$(PY) -m pytest tests

# The documentation site (mkdocs.yml): `make docs` serves it at http://127.0.0.1:8000/; the tests
# build it strictly, so a broken link, API reference or generated table fails (into build/site).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

docs-build: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# ruff, configured in pyproject.toml: the package, the tests and the scripts.
lint: setup
	$(PY) -m ruff check cnnzoo tests benchmarks scripts hubconf.py

setup: $(STAMP)

# Reinstall only when the project's dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	@touch $(STAMP)

# Fashion-MNIST comes from Debian's package dataset-fashion-mnist; nothing is downloaded at run time.
data:
	@if [ -f "$(DATA_OK)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "Fashion-MNIST is missing from $(FMNIST). Install it with:"; \
	  echo "    sudo apt-get install -y dataset-fashion-mnist"; \
	  echo "or pass the four IDX files with --data-dir DIR."; exit 1; \
	fi

# The explorer's tests drive Debian's Chromium headless through chromedriver (no browser download).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Chromium and chromedriver (Debian packages chromium, chromium-driver)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "The browser tests need Chromium; install it with: sudo apt-get install -y chromium chromium-driver"; \
	  echo "(without it they are skipped)"; \
	fi

# The int8 test on an AVX2 CPU without VNNI runs the int8 file under QEMU's user-mode emulator.
qemu:
	@if command -v qemu-x86_64 >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing QEMU user-mode emulation (Debian package qemu-user)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null; \
	else \
	  echo "The int8 test on an emulated AVX2 CPU needs qemu-x86_64; install it with: sudo apt-get install -y qemu-user"; \
	  echo "(without it that test is skipped)"; \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build/site
