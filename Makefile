# All set-up is here: `make demo` and `make test` create the environment when
# it is missing. TF selects the TensorFlow line: 2.21 (default, with tf_keras)
# or 2.15 (Keras 2 built in), each in its own virtual environment.
TF ?= 2.21
PYTHON ?= $(shell command -v python3.11 || command -v python3)
ifeq ($(TF),2.21)
VENV ?= .venv
else
VENV ?= .venv-tf$(TF)
endif
BIN := $(VENV)/bin
REQUIREMENTS := requirements/tf$(TF).txt
STAMP := $(VENV)/.installed-tf$(TF)
# Keras 3 on JAX and PyTorch, no TensorFlow: the cl.keras3 tests on those backends.
JAX_VENV ?= .venv-jax
JAX_STAMP := $(JAX_VENV)/.installed-jax
# TensorFlow's C++ start-up chatter hides the output that matters.
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# pytest-xdist: WORKERS processes sharing the tests (an idle worker takes
# tests queued for the other, so neither waits at the end); each sets its
# own eager or graph mode from its directory's conftest. Most of a test's
# time is Python building graphs on one core; WORKERS=0 runs in this process.
WORKERS ?= 2
PYTEST = -m pytest -n $(WORKERS) --dist worksteal

.PHONY: help venv venv-jax test test-jax test-torch selftest lint demo bench gpu-check examples dist-check check clean

help:
	@echo "make demo      train on sklearn digits, write out/demo/{features.png,metrics.csv}"
	@echo "make test      create $(VENV) if missing and run the tests (TF=$(TF))"
	@echo "make test TF=2.15   the same on TensorFlow 2.15"
	@echo "make test-jax  create $(JAX_VENV) if missing and run tests/eager on Keras 3 + JAX"
	@echo "make test-torch  the same on Keras 3 + PyTorch (CPU), in $(JAX_VENV)"
	@echo "make selftest  python -m cl"
	@echo "make lint      ruff"
	@echo "make bench     cost of center loss vs softmax and other formulations"
	@echo "make gpu-check one table: bad labels, mixed_float16, 2 replicas on 1 device, step times (GPU or CPU)"
	@echo "make examples  run every legacy_examples/ script"
	@echo "make dist-check  build sdist + wheel, twine check, install the wheel[tf] in a fresh venv, python -m cl"

$(STAMP): $(REQUIREMENTS) requirements/dev.txt setup.py pyproject.toml
	@test -f $(REQUIREMENTS) || { echo "TF=$(TF): no $(REQUIREMENTS); use TF=2.21 or TF=2.15"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r $(REQUIREMENTS) -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

$(JAX_STAMP): requirements/jax.txt requirements/dev.txt setup.py pyproject.toml
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/pip install -q --upgrade pip
	$(JAX_VENV)/bin/pip install -q -r requirements/jax.txt -r requirements/dev.txt
	$(JAX_VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv-jax: $(JAX_STAMP)

# Two pytest processes: tests/graph_mode turns eager execution off
# process-wide, tests/eager needs it on. Both must pass, and so must collect
# tests: exit code 5 (nothing collected) is a failure everywhere. tests/eager
# always has tests to run: the TF2 ones wherever TensorFlow is (both TF
# lines), the Keras 3 ones where Keras 3 is (TF 2.21, JAX); nothing collected
# means a broken set-up.
# Where Keras 3 is pinned (TF 2.21, JAX), its tests must not skip for want of it.
test: venv
	@$(BIN)/python $(PYTEST) tests/graph_mode; graph=$$?; \
	CL_REQUIRE_KERAS3=$(if $(filter 2.15,$(TF)),,1) $(BIN)/python $(PYTEST) tests/eager; eager=$$?; \
	test $$graph -eq 0 && test $$eager -eq 0

test-jax: venv-jax
	CL_REQUIRE_KERAS3=1 KERAS_BACKEND=jax $(JAX_VENV)/bin/python $(PYTEST) tests/eager

test-torch: venv-jax
	CL_REQUIRE_KERAS3=1 KERAS_BACKEND=torch $(JAX_VENV)/bin/python $(PYTEST) tests/eager

selftest: venv
	$(BIN)/python -m cl

lint: venv
	$(BIN)/ruff check cl tests legacy_examples bench setup.py

demo: venv
	$(BIN)/python -m cl.demo --out out/demo

bench: venv venv-jax
	$(BIN)/python bench/bench_graph.py --out out/bench
	$(BIN)/python bench/bench_tf2.py --out out/bench
	$(BIN)/python bench/bench_distribute.py --out out/bench
	$(BIN)/python bench/bench_keras3.py --out out/bench --backend tensorflow
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python bench/bench_keras3.py --out out/bench --backend jax
	KERAS_BACKEND=torch $(JAX_VENV)/bin/python bench/bench_keras3.py --out out/bench --backend torch
	$(BIN)/python bench/bench_large.py --out out/bench
	$(BIN)/python bench/goals.py --out out/bench

gpu-check: venv
	$(BIN)/python bench/gpu_check.py

examples: venv
	@for script in legacy_examples/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The distributions as a user gets them (tests/dist): built from a clean
# dist/, LICENSE and docs inside, twine check, and the wheel with its [tf]
# extra in a fresh venv (pinned by requirements/tf2.21.txt as constraints)
# running `python -m cl` outside the checkout.
dist-check: venv
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	CL_DIST=dist $(BIN)/python -m pytest tests/dist

check: lint test

clean:
	rm -rf .venv .venv-tf* $(JAX_VENV) out build dist *.egg-info .pytest_cache .ruff_cache
