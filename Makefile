# Both targets create .venv in the repository root when it is missing.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: demo test lint bench

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
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done
