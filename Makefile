# genmedia: `make run` serves the whole stack, `make test` checks it.
# Every target sets up what it needs: virtual environment, generated code,
# weights. Nothing is expected to be installed by hand.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WEIGHTS_DIR ?= var/weights
PROTOS := $(wildcard protos/genmedia/v1/*.proto)
GENERATED := genmedia/v1/.generated
VENV_STAMP := $(VENV)/.installed
DEPLOY_TOOLS ?= .venv-deploy
DEPLOY_TOOLS_STAMP := $(DEPLOY_TOOLS)/.installed
AUDIT_TOOLS ?= .venv-audit
AIPERF_TOOLS ?= .venv-aiperf
AIPERF_TOOLS_STAMP := $(AIPERF_TOOLS)/.installed
AUDIT_TOOLS_STAMP := $(AUDIT_TOOLS)/.installed
WEIGHTS_STAMP := $(WEIGHTS_DIR)/.complete
PYTEST ?= $(PY) -m pytest
PYTHON_SOURCES := genmedia_shared services models tools tests bench deploy

export PYTHONPATH := $(CURDIR):$(CURDIR)/models

.PHONY: help setup venv protos weights demo-models demo-video run test test-unit test-integration test-deploy deploy-tools aiperf-tools aiperf bench bench-gpu gpu-stage load fuzz soak audit lint format clean prometheus-tools redis-server

help:
	@echo "make run               set up and serve Triton + services + gateway until Ctrl-C"
	@echo "make test              set up and run lint, unit and integration tests"
	@echo "make test-unit         unit tests only (no Triton)"
	@echo "make test-integration  integration tests (real tritonserver, real gRPC servers)"
	@echo "make test-deploy       images, compose and Kubernetes manifests: render, validate, scan"
	@echo "make deploy-tools      the checkers tests/deploy runs, in $(DEPLOY_TOOLS) (make test does it)"
	@echo "make protos            generate Python code from protos/ into genmedia/"
	@echo "make weights           write small random test checkpoints into $(WEIGHTS_DIR)"
	@echo "make demo-models       retrain the demo pack into models/demo (~12 min on 2 cores)"
	@echo "make demo-video        translate the demo video of digits into docs/demo/cyclegan-video.gif"
	@echo "make bench             benchmarks: figures side by side, JSON + PNG in bench/results/"
	@echo "make bench-gpu         full-size models on a GPU against raw PyTorch (bench/gpu/run.sh)"
	@echo "make load              locust against a local stack (GENMEDIA_LOAD_*): CSV, HTML, PNG in out/load/"
	@echo "make aiperf            NVIDIA AIPerf profiles of the HTTP door (completions, images) on a local stack"
	@echo "make fuzz              300 random Hypothesis examples per RPC against the real stack (make test runs 15)"
	@echo "make soak              6 minutes of steady traffic; memory and fds of every process judged (GENMEDIA_SOAK_*)"
	@echo "make prometheus-tools  install Debian's prometheus/promtool if missing (make test does it)"
	@echo "make redis-server      install Debian's redis-server if missing (make test does it)"
	@echo "make audit             pip-audit --strict of every installed dependency (needs pypi.org's JSON API or osv.dev)"
	@echo "make lint / format     ruff"

setup: venv protos weights

venv: $(VENV_STAMP)

# The model code (models/) is installed as a package too: Triton's python stubs import it
# from the venv like torch, and no model.py looks for it.
$(VENV_STAMP): requirements/services.txt requirements/models.txt requirements/dev.txt requirements/no-deps.txt pyproject.toml models/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e models --config-settings editable_mode=compat
	touch $@

protos: $(GENERATED)

# Generated code is built, never committed (see .gitignore).
$(GENERATED): $(PROTOS) $(VENV_STAMP)
	rm -rf genmedia
	$(PY) -m grpc_tools.protoc -Iprotos \
	  -I$$($(PY) -c 'import google.api, pathlib; print(pathlib.Path(google.api.__path__[0]).parents[1])') \
	  --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)
	$(PY) -m services.gateway.http.openapi --out genmedia/v1/openapi.json
	touch $@

weights: $(WEIGHTS_STAMP)

$(WEIGHTS_STAMP): tools/test_weights.py $(VENV_STAMP)
	$(PY) -m tools.test_weights --out $(WEIGHTS_DIR)
	touch $@

demo-models: venv protos
	$(PY) -m tools.training.demo_pack --out models/demo --docs docs/demo --readme README.md
	$(PY) -m tools.demo_video

# The README's video demo alone: the demo stack translates digits (docs/demo/cyclegan-video.gif).
demo-video: setup
	$(PY) -m tools.demo_video

# Several gateways share their quotas through a local redis-server.
run: setup $(if $(filter-out 0 1,$(GENMEDIA_GATEWAY_REPLICAS)),redis-server)
	$(PY) -m services.launcher

test: setup lint prometheus-tools redis-server deploy-tools aiperf-tools
	$(PYTEST) tests

deploy-tools: $(DEPLOY_TOOLS_STAMP)

# kubernetes-validate, checkov, hadolint and docker compose, apart from the
# project's environment (checkov's pins would fight ours).
$(DEPLOY_TOOLS_STAMP): requirements/deploy-tools.txt
	$(PYTHON) -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_TOOLS)/bin/python -m pip install --quiet -r requirements/deploy-tools.txt
	touch $@

test-deploy: setup prometheus-tools deploy-tools
	$(PYTEST) tests/deploy

aiperf-tools: $(AIPERF_TOOLS_STAMP)

$(AIPERF_TOOLS_STAMP): requirements/aiperf.txt
	$(PYTHON) -m venv $(AIPERF_TOOLS)
	$(AIPERF_TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(AIPERF_TOOLS)/bin/python -m pip install --quiet -r requirements/aiperf.txt
	touch $@

# NVIDIA AIPerf against the HTTP door's /v1/completions (SSE) and /v1/images/generations:
# a local stack on the demo pack, or GENMEDIA_AIPERF_TARGET (docs/HTTP.md#aiperf).
aiperf: setup aiperf-tools
	$(PY) -m tools.aiperf

# Debian's prometheus package: promtool checks the rules, and an integration
# test scrapes the running stack with a real server.
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

# Debian's redis-server: the gateways' shared quota store (GENMEDIA_GATEWAY_REPLICAS > 1)
# and the tests of it, which start real servers.
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server; }

# make test runs 15 derandomized examples per RPC; this runs 300 random ones.
fuzz: setup
	GENMEDIA_FUZZ_EXAMPLES=$${GENMEDIA_FUZZ_EXAMPLES:-300} GENMEDIA_FUZZ_RANDOM=1 $(PYTEST) tests/integration/test_fuzz.py tests/integration/test_fuzz_http.py tests/integration/test_fuzz_frames.py

# A bounded soak of the local stack: out/soak/soak.json and soak.png (make test runs 28 s of it).
soak: setup
	$(PY) -m tools.soak

test-unit: setup redis-server
	$(PYTEST) tests/unit

test-integration: setup prometheus-tools redis-server aiperf-tools
	$(PYTEST) tests/integration

# The demo and full-size benches (about 10 minutes), then the gateway's (about 2) and
# Content Credentials signing's (seconds), the watermarks' (about 3 minutes),
# genmedia's image watermark against invisible-watermark's (about 6) and one
# verification's memory and time against the whole-image detector (about 1), then
# the CPU each process spends per streamed token (under 1), then the Redis quota
# store against the memory one (about 2), then the HTTP door against the gRPC one (about 2), then frame streams (under 1).
bench: setup redis-server
	$(PY) -m bench
	$(PY) -m bench.gateway
	$(PY) -m bench.signing
	$(PY) -m bench.watermark_text
	$(PY) -m bench.watermark_image
	$(PY) -m bench.watermark_compare
	$(PY) -m bench.verify_cost
	$(PY) -m bench.token_tax
	$(PY) -m bench.quota_store
	$(PY) -m bench.http_door
	$(PY) -m bench.frames

# A bounded locust run against a local stack on the demo pack, or GENMEDIA_LOAD_TARGET;
# GENMEDIA_LOAD_* from the environment or the command line (make load GENMEDIA_LOAD_USERS=50).
load: setup
	$(PY) -m tools.load

# On a machine with an NVIDIA GPU and a CUDA build of torch in the venv.
bench-gpu: setup
	bench/gpu/run.sh

# What a lent GPU machine lacks, in parts that each fit one device call (bench/gpu/README.md).
gpu-stage: setup
	$(PY) -m bench.gpu.stage

# Every package in the project's environment against PyPI's advisories;
# --strict fails on a package it could not check. Accepted advisories, with
# reasons, in requirements/audit-ignore.txt.
audit: venv $(AUDIT_TOOLS_STAMP)
	$(AUDIT_TOOLS)/bin/pip-audit --strict --progress-spinner off \
	  --path $$(ls -d $(VENV)/lib/python3*/site-packages) \
	  $$(sed -n 's/^\([A-Z][A-Z]*-[^ ]*\).*/--ignore-vuln \1/p' requirements/audit-ignore.txt)

$(AUDIT_TOOLS_STAMP): requirements/audit.txt
	$(PYTHON) -m venv $(AUDIT_TOOLS)
	$(AUDIT_TOOLS)/bin/python -m pip install --quiet -r requirements/audit.txt
	touch $@

lint: venv
	$(VENV)/bin/ruff check $(PYTHON_SOURCES)
	$(VENV)/bin/ruff format --check $(PYTHON_SOURCES)

format: venv
	$(VENV)/bin/ruff check --fix $(PYTHON_SOURCES)
	$(VENV)/bin/ruff format $(PYTHON_SOURCES)

clean:
	rm -rf genmedia var .pytest_cache .ruff_cache $(DEPLOY_TOOLS) $(AUDIT_TOOLS) $(AIPERF_TOOLS)
