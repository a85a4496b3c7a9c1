# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Threads per pytest worker; two workers on a 2-core machine.
PYTEST_WORKERS ?= 2

DOCS_HTML := docs/_build/html

.PHONY: demo test install install-test install-docs lint bench dist docs docs-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test suite builds the documentation site too (tests/test_docs.py), so it needs the docs extra.
# The `frameworks` extra (PyTorch, Keras 3, ONNX Runtime: tests/test_frameworks.py checks the ports
# against them) comes too where it installs offline and small: where a folder in pip's find-links
# holds a PyTorch CPU wheel for this Python (PyTorch's default Linux wheel pulls ~6 GB of CUDA
# libraries). Elsewhere those tests skip, saying how to install the extra.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	@tag=$$($(BIN)/python -c 'import sys; print("cp%d%d" % sys.version_info[:2])'); \
	links="$${PIP_FIND_LINKS:-} $$($(BIN)/python -m pip config get global.find-links 2>/dev/null)"; \
	wheel=$$(for d in $$links; do ls "$${d#file://}"/torch-*+cpu-$$tag-*.whl 2>/dev/null; done \
		| sort -V | tail -n 1); \
	if [ -n "$$wheel" ]; then \
		echo "installing the frameworks extra with $$wheel"; \
		$(BIN)/python -m pip install --quiet "$$wheel" -e '.[frameworks]' \
			|| echo "the frameworks extra did not install: tests/test_frameworks.py will skip"; \
	else \
		echo "no PyTorch CPU wheel in pip's find-links: tests/test_frameworks.py will skip"; \
	fi
	touch $@ $(VENV)/.installed $(VENV)/.installed-docs

# The release tools: PyPA's `build` (it runs pyproject.toml's backend, flit_core, in an isolated
# environment) and `twine` (it checks the metadata PyPI would render).
$(VENV)/.installed-dist: | $(BIN)/python
	$(BIN)/python -m pip install --quiet build twine
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-docs: $(VENV)/.installed-docs

demo: $(VENV)/.installed
	$(BIN)/gated-jax report --out report/

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gated_jax tests benchmarks docs conftest.py
	$(BIN)/ruff format --check gated_jax tests benchmarks docs conftest.py
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/gated-jax bench

# A release: the wheel and the sdist in dist/, their metadata checked (tests/test_dist.py installs
# the wheel into a fresh environment and runs it).
dist: $(VENV)/.installed-dist
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# The documentation site, warnings as errors, the notebooks executed at small size.
docs: $(VENV)/.installed-docs
	GATED_JAX_DOCS_EXECUTE=1 $(BIN)/python -m sphinx -W --keep-going -b html docs $(DOCS_HTML)
	@echo "site: $(DOCS_HTML)/index.html"

# The built site in headless Chromium (Debian: apt-get install chromium): screenshots under
# docs/_build/screenshots, math typeset, code highlighted, search finding gated_scan.
docs-check: docs
	$(BIN)/python docs/check_site.py --html $(DOCS_HTML) --out docs/_build/screenshots

clean:
	rm -rf $(VENV) report dist .pytest_cache .hypothesis .jax_cache docs/_build docs/api docs/notebooks
