# ambient-lab. `make lab up` / `make lab down` / `make test` / `make bench` work on a fresh
# Debian machine as root: they create .venv, install the Python packages and the Debian packages
# the lab needs (nftables, tcpdump, iperf3, curl), then do the job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_PACKAGES := nftables tcpdump iperf3 curl iproute2 util-linux procps
TOPOLOGY ?= topologies/default.yaml
NAME ?= default
PYTEST_ARGS ?=

.PHONY: setup debs lab up down status test unit e2e bench clean

setup: debs $(STAMP)

debs:
	@missing=""; \
	for cmd in nft:nftables tcpdump:tcpdump iperf3:iperf3 curl:curl ip:iproute2 unshare:util-linux ps:procps; do \
	  command -v $${cmd%%:*} >/dev/null 2>&1 || missing="$$missing $${cmd##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# `make lab up`: "lab" sets up, "up" starts the default lab.
lab: setup

up: setup
	$(BIN)/lab up $(TOPOLOGY) --name $(NAME)

down: setup
	$(BIN)/lab down --name $(NAME)

status: setup
	$(BIN)/lab --lab $(NAME) status

test: setup
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

unit: setup
	$(BIN)/pytest -q tests/unit

e2e: setup
	$(BIN)/pytest -q tests/e2e

bench: setup
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
