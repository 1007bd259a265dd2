# Two commands for a fresh machine: `make demo` and `make test`.
# Both create or refresh .venv first; a second run installs nothing (stamp files).
# `make demo` installs what the jobs need; `make test` adds the test extras on top
# (pytest, the linters, Playwright, schemathesis, MLflow: about 30 s more).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepfusion-installed
TEST_STAMP := $(VENV)/.deepfusion-test-installed
DEMO_CONFIG ?= configs/demo.yaml

.PHONY: venv demo lint test test-fast bench serve clean-work

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing deepfusion into $(VENV) (torch comes from this machine's disk)"
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first and pinned, so nothing below pulls another build
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e .
	# A venv made before OpenCV's contrib build was a dependency holds both builds of cv2: keep contrib's
	@if $(PY) -m pip show -q opencv-python-headless 2>/dev/null; then \
	  $(PY) -m pip uninstall -y -q opencv-python-headless && \
	  $(PY) -m pip install -q --force-reinstall --no-deps opencv-contrib-python-headless; fi
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	@touch $(TEST_STAMP)

# The whole methodology on the SYNTHETIC offline corpora (stages already up to date are skipped)
demo: $(STAMP)
	$(PY) -m jobs.pipeline --config $(DEMO_CONFIG)

# Style (ruff) and the package layering contracts (import-linter, see pyproject.toml)
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The whole suite: lint, then every test against a real local Ray, HTTP and browser
test: lint
	$(PY) -m pytest -q

# The inner loop while editing: the tests that need no Ray cluster, no job of their own and
# no Serve app (pytest -m "not cluster"); a couple of minutes. `make test` before a commit.
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not cluster"

# The HTTP application (needs the checkpoints of jobs.train and jobs.tune_fusion; see README)
serve: $(STAMP)
	env $$($(PY) -m deepfusion.ray_runtime serve-env) $(VENV)/bin/serve run serve/config.yaml

bench: $(STAMP)
	$(PY) bench/preprocess.py
	$(PY) bench/train_throughput.py
	$(PY) bench/fusion_sweep.py
	$(PY) bench/serve_latency.py
	$(PY) bench/hostile_input.py
	$(PY) bench/batch_predict.py

clean-work:
	rm -rf work
