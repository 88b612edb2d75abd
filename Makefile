# The targets a newcomer needs: `make run` and `make test`. Each works from a fresh clone.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Python 3.10-3.13 (chatterbox-tts pins torch 2.6.0 below 3.14); 3.11 is what CI uses.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# pip itself is not in the constraints file (pip freeze leaves it out); pinned for a reproducible resolver.
PIP_VERSION := 25.3
CONSTRAINTS := requirements/constraints.txt
# Extra arguments: `make run ARGS="--random_weights small"`, `make test PYTEST_ARGS="-m 'not slow'"`.
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install run test test-images test-cluster test-gpu images lint tools manifests bench soak kind-e2e clean

help:  ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## Create .venv with our packages (editable) and the test tools.

# Re-runs only when a dependency list changes. chatterbox-tts goes in with --no-deps: its metadata pins
# gradio, whose starlette<1.0 conflicts with kserve (see requirements/constraints.txt).
$(VENV)/.installed: predictor/pyproject.toml predictor/common/pyproject.toml predictor/voicefile/pyproject.toml \
		operator/pyproject.toml $(CONSTRAINTS)
	@test -n "$(PYTHON)" || { echo "python3.11 (or python3 >= 3.10) is needed" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ./predictor/common -e ./predictor/voicefile -e './predictor[test]' \
		-e ./operator
	$(BIN)/pip install --quiet --no-deps -c $(CONSTRAINTS) chatterbox-tts
	touch $@

run: install  ## Start the predictor (KServe model server) on :8080; offline: make run ARGS="--random_weights small".
	$(BIN)/python -m chatterbox_predictor --enable_grpc false --voices_dir voices $(ARGS)

lint: install  ## ruff over the Python, hadolint over the Dockerfiles, shellcheck over the scripts.
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile.predictor Dockerfile.operator
	$(BIN)/shellcheck -x --source-path=SCRIPTDIR hack/*.sh

tools:  ## Build the Kubernetes binaries, etcd, helm, local-path-provisioner and KServe's controller into bin/.
	bash hack/build-tools.sh

test: install tools lint  ## Everything CI runs: lint, then every test tier (slow ones included).
	$(BIN)/pytest $(PYTEST_ARGS)

test-images: install tools  ## Only the image tier: builds both images and runs them with Docker.
	$(BIN)/pytest -m images $(PYTEST_ARGS)

test-cluster: install tools  ## Only the cluster tier: the chart on a real single-node cluster (root).
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

test-gpu: install  ## Only the GPU tier (needs a visible CUDA device; skipped, saying so, elsewhere).
	$(BIN)/pytest -m gpu -rs $(PYTEST_ARGS)

images:  ## Build both images (Docker's classic builder; a stand-in base where no registry answers).
	bash hack/build-images.sh

manifests:  ## Render manifests/ from the Helm chart (hack/render-manifests.sh, hack/manifests-values.yaml).
	bash hack/render-manifests.sh

bench: install  ## Our streaming engine vs the library's generate() on a random full-size checkpoint (CPU).
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py $(ARGS)

soak: install  ## Memory under churn: 1,000 requests over 20 voices at concurrency 4, RSS at start and end.
	HF_HUB_OFFLINE=1 $(BIN)/python bench/soak.py $(ARGS)

# Not part of `make test`: it needs Docker and internet (kind's node image, KServe's charts), which CI lacks.
kind-e2e:  ## End to end on a local kind cluster with KServe (Docker, kind, internet); KEEP_CLUSTER=1 keeps it.
	bash hack/kind-e2e.sh

clean:  ## Remove the venv, bin/ and caches (the per-version tool cache in ~/.cache stays).
	rm -rf $(VENV) bin .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
