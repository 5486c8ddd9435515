# nicfw — the two commands of the README (`make run`, `make test`) do all the set-up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
NICFW := $(VENV)/bin/nicfw
# Debian packages the project uses: iproute2 for namespace tests, DPDK for the fast path.
DEBIAN_PKGS := iproute2 libdpdk-dev pkg-config meson ninja-build libpcap-dev ethtool
BUILD := build
LINT_PATHS := $(wildcard controlplane offload dpdk_app tests bench)

.PHONY: all run test lint unit bench deps venv p4 dpdk clean p4rt-shell-venv

all: venv

## deps: install the Debian packages that are missing (needs root, as CI has).
deps: $(BUILD)/.debian-deps
$(BUILD)/.debian-deps:
	@mkdir -p $(BUILD)
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "warning: missing Debian packages (not root, not installing):$$missing"; fi; \
	fi
	@touch $@

## venv: the project's virtual environment with nicfw installed in editable mode.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | $(BUILD)/.debian-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $@

## run: the main job on the embedded default (software target, demo policy, demo traffic).
run: venv
	$(NICFW) demo

## test: lint, then the whole suite.
test: venv lint dpdk
	$(PY) -m pytest -q tests

unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy controlplane offload dpdk_app

## p4: regenerate P4Info and the BMv2 JSON with p4c, when p4c is on PATH.
p4:
	@if command -v p4c >/dev/null; then \
	  mkdir -p $(BUILD)/p4 && \
	  p4c --target bmv2 --arch v1model --std p4-16 -I p4/include \
	      -o $(BUILD)/p4 --p4runtime-files $(BUILD)/p4/firewall.p4info.txtpb p4/firewall.p4 && \
	  echo "built $(BUILD)/p4/firewall.json and $(BUILD)/p4/firewall.p4info.txtpb"; \
	else echo "p4c is not on PATH: keeping the hand-kept p4/firewall.p4info.txtpb"; fi

## dpdk: build the DPDK fast path when libdpdk is installed.
dpdk: $(BUILD)/.debian-deps
	@if [ -f dpdk_app/Makefile ] && pkg-config --exists libdpdk; then $(MAKE) -C dpdk_app; \
	else echo "dpdk: libdpdk or dpdk_app/Makefile missing, not building the DPDK application"; fi

## p4rt-shell-venv: p4runtime-shell pins an old protobuf, so it gets a venv of its own.
P4RT_SHELL_VENV := $(BUILD)/p4rt-shell-venv
p4rt-shell-venv: $(P4RT_SHELL_VENV)/.installed
$(P4RT_SHELL_VENV)/.installed:
	mkdir -p $(BUILD)
	$(PYTHON) -m venv $(P4RT_SHELL_VENV)
	$(P4RT_SHELL_VENV)/bin/pip install -q p4runtime-shell
	@touch $@

## bench: the benchmarks under bench/ (each prints a table).
bench: venv dpdk
	$(PY) -m bench

clean:
	rm -rf $(BUILD) .pytest_cache .mypy_cache .ruff_cache
	-$(MAKE) -C dpdk_app clean 2>/dev/null
