# Two commands a newcomer needs: `make demo` (the main job) and `make test` (every test).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEBIAN_PEERS = puredata-core pd-osc pd-mrpeach-net pd-mrpeach liblo-tools tshark jackd2 libportaudio2 faketime \
  nodejs supercollider-server
# osc.js, an independent OSC implementation for tests/test_interop_types.py, from the npm registry
# (tests/node/package-lock.json pins it) into tests/node/node_modules.
NODE_PEERS = tests/node/node_modules/osc/package.json

.PHONY: demo test test-busy venv peers playsound lint docs clean

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

# apt-get install whichever of the Debian packages $(1) are missing (when apt-get is here).
apt_install = if command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "apt-get not found: install $(1) or their equivalents yourself"; fi

# Real peers (Pure Data + mrpeach OSC, liblo's oscsend/oscdump, tshark, JACK + PortAudio, scsynth)
# when apt-get is here, and osc.js from the npm registry.
peers:
	@$(call apt_install,$(DEBIAN_PEERS))
	@if [ ! -f $(NODE_PEERS) ]; then \
	  if ! command -v npm >/dev/null 2>&1; then $(call apt_install,npm); fi; \
	  if command -v npm >/dev/null 2>&1; then \
	    echo "installing osc.js into tests/node (npm ci)"; \
	    npm ci --prefix tests/node --omit=optional --no-audit --no-fund --loglevel=error; \
	  elif case "$$CI" in 1|true|yes) true;; *) false;; esac; then \
	    echo "npm not found: the osc.js interop tests cannot run (CI=$$CI)" >&2; exit 1; \
	  else echo "npm not found: the osc.js interop tests will skip (or fail under CI=true)"; fi; \
	fi

# --audio playsound on Linux: playsound 1.2.2 plays through GStreamer from Python, and a venv does
# not see Debian's python3-gi, so PyGObject is built into the venv (~25 s once) from the [playsound]
# extra; GStreamer's playbin (plugins-base) and wavparse (plugins-good) play the WAV (issue 30).
DEBIAN_PLAYSOUND = gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	libgirepository1.0-dev libcairo2-dev pkg-config
playsound: $(VENV)/.playsound
$(VENV)/.playsound: $(BIN)/oscsync
	@$(call apt_install,$(DEBIAN_PLAYSOUND))
	$(BIN)/pip install -q -e '.[playsound]'
	touch $@

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples
	$(BIN)/mypy

# The workshop guide (docs/): --strict fails on a broken link, anchor or missing image.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d build/site

# The suite runs inside scripts/isolated: a network namespace with only `lo` where it can (Linux,
# as root), so that no test can reach another machine (issue 27).
test: venv peers playsound lint docs
	scripts/isolated $(BIN)/pytest

# Issue #12 item 7: the whole suite BUSY_RUNS times in a row while another process keeps one core
# busy (`yes`), as on a shared 2-core machine; every run is reported, and the target fails if any
# run failed. The load is stopped at the end, pass or fail (and on Ctrl-C).
BUSY_RUNS ?= 3
test-busy: venv
	@yes > /dev/null & load=$$!; \
	trap 'kill $$load 2>/dev/null' EXIT INT TERM; \
	failed=0; summary=""; \
	for run in $$(seq $(BUSY_RUNS)); do \
	  start=$$(date +%s); \
	  if scripts/isolated $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); then result=passed; \
	  else result=FAILED; failed=$$((failed + 1)); fi; \
	  summary="$$summary\ntest-busy: run $$run/$(BUSY_RUNS) $$result in $$(( $$(date +%s) - start )) s"; \
	done; \
	printf "$$summary\n"; \
	echo "test-busy: $$(( $(BUSY_RUNS) - failed )) of $(BUSY_RUNS) runs passed with one core busy"; \
	[ $$failed -eq 0 ]

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
