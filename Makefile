# Two commands a newcomer needs: `make demo` (the main job) and `make test` (every test).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEBIAN_PEERS = puredata-core pd-osc pd-mrpeach-net pd-mrpeach liblo-tools tshark jackd2 libportaudio2

.PHONY: demo test venv peers lint docs clean

# [audio] too: the first `metronome listen` of the workshop wants sounddevice (issue #13).
# Makefile is a prerequisite so that a venv made by an older Makefile gets what this one adds.
$(BIN)/oscsync: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,audio]'
	touch $@

venv: $(BIN)/oscsync

demo: venv
	$(BIN)/python scripts/demo.py
	@echo
	@echo "oscsync is installed in $(VENV), not on your PATH. In this shell, either"
	@echo "  . $(VENV)/bin/activate     # then: oscsync --help"
	@echo "or run it by its path:"
	@echo "  $(VENV)/bin/oscsync --help"

# Real peers (Pure Data + mrpeach OSC, liblo's oscsend/oscdump, tshark, JACK + PortAudio) when
# apt-get is here.
peers:
	@if command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  missing=""; for p in $(DEBIAN_PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian peers:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "apt-get not found: peer tests will skip (or fail under CI=true)"; fi

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

# The workshop guide (docs/): --strict fails on a broken link, anchor or missing image.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d build/site

test: venv peers lint docs
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
