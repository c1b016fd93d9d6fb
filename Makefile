# Fleetshift developer entry points. `make test` does all of its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := operator/fleetshift_operator runtime/fleetshift_runtime devcluster/fleetshift_devcluster

.PHONY: help venv tools binaries realnode-tools realnode-binaries lint typecheck test test-fast cluster cluster-down demo clean crds operator

help:
	@echo "make test          set everything up (venv, packages, binaries, Prometheus), lint, run all tests"
	@echo "make cluster       start the local control plane in the background (prints export KUBECONFIG=...)"
	@echo "make cluster NODE=real   the same plus a real node, inside a network namespace (root)"
	@echo "make cluster-down  stop it"
	@echo "make demo          the guardrail walkthrough: canary, linear and gates stories, live, with timelines"
	@echo "make demo NODE=real   the same on real pods: the runtime image, kube-proxy, a real kubelet (root)"
	@echo "make images        build the operator and runtime images with podman (no registry, no Docker)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	@touch $@

# System tools from Debian's packages, installed only when missing: Prometheus, and a C
# compiler for the runtime's compiled tree predictor (without one it serves with XGBoost).
tools:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  echo "[tools] installing from Debian:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

binaries: venv
	$(BIN)/fleetshift-cluster binaries

# The real node's (docs/real-node.md): iptables for kube-proxy, libseccomp-dev to build runc,
# conntrack for kube-proxy's UDP clean-up; then kubelet, kube-proxy, containerd, runc, the CNI
# plugins, CoreDNS, crictl and metrics-server from Go modules (~10 min once on 2 cores).
realnode-tools:
	@missing=""; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	command -v conntrack >/dev/null || missing="$$missing conntrack"; \
	[ -e /usr/include/seccomp.h ] || missing="$$missing libseccomp-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "[tools] installing from Debian:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

realnode-binaries: venv realnode-tools
	$(BIN)/fleetshift-cluster binaries --node real

# lint-imports holds the layers in .importlinter (pure planner, operator and runtime apart).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy $(PACKAGES) tests bench

# FLEETSHIFT_REALNODE=1: the real-node tier (tests/realnode) runs too.
test: venv tools binaries realnode-binaries runtime-test-tools lint typecheck images
	FLEETSHIFT_REALNODE=1 $(BIN)/python -m pytest

# Only the tests that need no control plane and no image build: a quick loop while editing.
test-fast: venv
	$(BIN)/python -m pytest -m "not cluster and not images"

# NODE=real adds a real node (containerd, kubelet, kube-proxy, CoreDNS, metrics-server) inside
# a network namespace; it needs root and builds its binaries on first use (docs/real-node.md).
NODE ?= kwok
cluster: venv tools binaries
	@if [ "$(NODE)" = real ]; then $(MAKE) --no-print-directory realnode-binaries; fi
	@$(BIN)/fleetshift-cluster up --node $(NODE)

cluster-down: venv
	@$(BIN)/fleetshift-cluster down

# The guardrail walkthrough. Flags go through DEMO_FLAGS, e.g.
#   make demo DEMO_FLAGS="--canary-wait 60 --policies canary"
DEMO_FLAGS ?=
# NODE=real: the same story on real pods (a real node in a network namespace; root).
demo: venv tools binaries
	@if [ "$(NODE)" = real ]; then $(MAKE) --no-print-directory realnode-binaries images; fi
	$(BIN)/fleetshift-demo --node $(NODE) $(DEMO_FLAGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The CRD is generated from the pydantic models; tests fail if this file is stale.
# The Helm chart carries a byte-equal copy in its crds/ folder (a test checks that too).
crds: venv
	$(BIN)/python -m fleetshift_operator.crd > crds/fleetshift.dev_endpoints.yaml
	cp crds/*.yaml charts/fleetshift/crds/

# Run the operator from the venv against the current KUBECONFIG (e.g. after `make cluster`).
operator: venv
	$(BIN)/python -m fleetshift_operator

# The operator and runtime images (fleetshift/operator:dev, fleetshift/runtime:dev), built with
# podman on a base made from Debian's packages; nothing is done when their inputs are unchanged.
# Tarballs for `ctr -n k8s.io images import` go to ~/.cache/fleetshift/images (docs/images.md).
.PHONY: images
images: venv
	$(BIN)/fleetshift-images

# --- runtime ---
# The runtime's S3 tests run against VersityGW, an S3-compatible gateway built from Go
# modules. The tests build it on first use; this target does it ahead of time.
VERSITYGW_VERSION := v1.8.0
FLEETSHIFT_CACHE ?= $(HOME)/.cache/fleetshift
VERSITYGW := $(FLEETSHIFT_CACHE)/versitygw-$(VERSITYGW_VERSION)/versitygw

.PHONY: runtime-test-tools test-runtime bench-runtime

runtime-test-tools: $(VERSITYGW)

$(VERSITYGW):
	mkdir -p $(dir $@)
	GOBIN=$(dir $@) CGO_ENABLED=0 go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

test-runtime: venv runtime-test-tools
	$(BIN)/python -m pytest tests/runtime

# Fleetshift's runtime vs. MLServer (in its own venv), pinned with taskset, driven by wrk.
bench-runtime: venv
	@command -v wrk >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get install -y -qq wrk; }
	$(BIN)/python bench/runtime/bench_runtime.py
	$(BIN)/python -c "import onnxruntime, onnxmltools, treelite, tl2cgen" 2>/dev/null || $(BIN)/python -m pip install --quiet --progress-bar off -e '.[bench]'
	$(BIN)/python bench/tree_engines.py
