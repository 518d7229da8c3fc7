# Both targets create .venv in the repository root when it is missing.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: demo test lint bench mutants

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the release this project is tested with (CPU and CUDA builds alike)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	touch .venv/.installed

demo: .venv/.installed
	$(PY) -m vislearn.cli reproduce all

test: .venv/.installed
	$(PY) -m pytest tests

lint: .venv/.installed
	$(PY) -m ruff check src tests benchmarks

bench: .venv/.installed
	$(PY) benchmarks/run_all.py

# Mutation testing (tests/MUTANTS.md): each module against the FAST tests that cover it (unmutated: under
# 10 s of CPU each), one module at a time, at low priority. Not part of `make test`; it takes tens of minutes
# on 2 idle cores (each gremlin is a fresh pytest process: ~5-10 s of CPU importing torch and the tests).
# Timeouts far above a test run: the tool counts a gremlin as an error (not a survivor) when the unmutated
# tests need more than half of the mutant timeout (a loaded machine reached the default 30 s), and it drops
# coverage-guided test selection (every gremlin then runs the whole file) when its coverage pre-scan
# outlasts the coverage timeout (the default 120 s was exceeded at load ~20).
# Plugins no target test uses are not loaded in each gremlin's process (-30 % CPU per gremlin).
MUTATE := OMP_NUM_THREADS=1 PYTEST_ADDOPTS="-p no:hydra_pytest -p no:anyio -p no:hypothesispytest -p no:timeout" \
	nice -n 15 $(PY) -m pytest -q -p no:cacheprovider -o addopts= --gremlins \
	--gremlin-workers=2 --gremlin-batch --gremlin-mutant-timeout=300 --gremlin-coverage-timeout=600 \
	--gremlin-report=console,json
# The tool overwrites its JSON report: each run is copied to coverage/gremlins/NAME.json.
REPORT := coverage/gremlins/gremlins.json
# The engine against every in-process engine test (about 15 s unmutated; the three torchrun/SIGKILL/SIGTERM
# subprocess tests, 60 s, are left out: tests/MUTANTS.md lists the mutants only they kill).
ENGINE_TESTS := tests/test_train_engine.py tests/test_train_engine_contract.py tests/test_train_engine_edges.py \
	tests/test_train_checkpoint.py tests/test_train_resume.py tests/faults/test_nonfinite_loss.py
ENGINE_FAST := -k "not two_process and not sigterm_checkpoints and not after_sigkill"

mutants: .venv/.installed
	$(PIP) install -q -e '.[dev,mutation]'
	$(MUTATE) --gremlin-targets=src/vislearn/detection/coding.py tests/test_detection_coding.py tests/test_detection_matching.py && cp $(REPORT) coverage/gremlins/coding.json
	$(MUTATE) --gremlin-targets=src/vislearn/detection/matching.py tests/test_detection_matching.py && cp $(REPORT) coverage/gremlins/matching.json
	$(MUTATE) --gremlin-targets=src/vislearn/nn/batchnorm.py tests/test_nn_batchnorm.py && cp $(REPORT) coverage/gremlins/batchnorm.json
	$(MUTATE) --gremlin-targets=src/vislearn/losses/proxy_nca.py tests/test_losses_proxy_nca.py && cp $(REPORT) coverage/gremlins/proxy_nca.json
	$(MUTATE) --gremlin-targets=src/vislearn/losses/multilabel.py tests/test_losses_multilabel.py && cp $(REPORT) coverage/gremlins/multilabel.json
	$(MUTATE) --gremlin-targets=src/vislearn/losses/multibox.py tests/test_detection_matching.py && cp $(REPORT) coverage/gremlins/multibox.json
	$(MUTATE) --gremlin-targets=src/vislearn/metrics/detection.py,src/vislearn/metrics/detection_match.py \
		tests/test_metrics_detection.py tests/test_metrics_detection_match.py tests/test_metrics_detection_edges.py \
		&& cp $(REPORT) coverage/gremlins/metrics_detection.json
	$(MUTATE) --gremlin-targets=src/vislearn/metrics/retrieval.py tests/test_metrics_retrieval.py && cp $(REPORT) coverage/gremlins/retrieval.json
	$(MUTATE) --gremlin-targets=src/vislearn/train/ema.py,src/vislearn/train/schedules.py \
		tests/test_train_ema.py tests/test_train_schedules.py && cp $(REPORT) coverage/gremlins/ema_schedules.json
	$(MUTATE) --gremlin-targets=src/vislearn/train/engine.py $(ENGINE_TESTS) $(ENGINE_FAST) && cp $(REPORT) coverage/gremlins/engine.json
