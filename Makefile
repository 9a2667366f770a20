# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use. TORCH picks the torch build: the default is the CPU wheel
# pip finds for 2.13.0; GPU users run e.g. `make demo TORCH=torch` (the newest CUDA build) or
# install their own torch into .venv first. TORCH_INDEX adds an index for it, e.g.
# `TORCH_INDEX=https://download.pytorch.org/whl/cpu` on a machine with no local CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test lab lab-workspace bench bench-trl setup clean site browser
LAB    ?= workspace

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/minigrpo demo

test: $(STAMP) browser
	$(PY) -m pytest -q

# The real-browser test (tests/test_browser.py) drives a system Chromium through Playwright (Playwright's own
# browser download is never used). Where none is found, `make browser` installs Debian's `chromium` (and the
# colour emoji font, for readable failure screenshots) if we are root and have apt-get; otherwise, or if the
# install fails, it prints one line and the test skips. It never fails `make test`.
browser:
	@if [ -n "$$MINIGRPO_CHROMIUM" ] && [ -x "$$MINIGRPO_CHROMIUM" ] || [ -x /usr/bin/chromium ] \
	    || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for tests/test_browser.py (apt-get) ..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 \
	         && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
	  && { apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji >/dev/null 2>&1 || true; } \
	  || echo "could not install chromium with apt-get: tests/test_browser.py will be skipped" \
	       "(install it with 'sudo apt-get install chromium', or set MINIGRPO_CHROMIUM=/path/to/chromium)"; \
	else echo "no chromium found: tests/test_browser.py will be skipped" \
	       "(install it with 'sudo apt-get install chromium', or set MINIGRPO_CHROMIUM=/path/to/chromium)"; fi

# The lab opens copies: JupyterLab autosaves outputs into the notebooks it has open, and the tracked
# ones must stay clean (tests/test_notebooks.py). `make lab` copies each notebook into $(LAB)/notebooks
# (ignored by git) unless a copy is already there, so a learner's work is kept between sessions; delete
# a copy to get the original back. $(LAB)/examples and $(LAB)/bench point at the repository's own,
# so the notebooks' relative paths work in the copies.
lab-workspace:
	mkdir -p $(LAB)/notebooks
	for f in notebooks/*.ipynb; do test -e $(LAB)/$$f || cp $$f $(LAB)/$$f; done
	ln -sfn $(CURDIR)/examples $(LAB)/examples
	ln -sfn $(CURDIR)/bench $(LAB)/bench

lab: $(STAMP) lab-workspace
	$(VENV)/bin/jupyter lab $(LAB)/notebooks/

bench: $(STAMP)
	$(PY) bench/bandit_speed.py

# minigrpo vs TRL's GRPOTrainer (speed at two sizes and precisions, then learning): installs the
# bench extra (TRL) into .venv first. About 15 minutes on a 2-core CPU.
bench-trl: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/trl_compare.py

# The course site (docs/publishing.md): every notebook executed in full mode, one fresh kernel each, into
# build/executed/ (outputs and widget states kept; docs/execute_notebooks.py), then MkDocs builds the README, docs/,
# the executed notebooks, bench/RESULTS.md and the API page from the docstrings into build/site/ (mkdocs.yml,
# docs/site_hooks.py). A cell error stops it. SMALL=1 executes with the tests' quick settings, for a preview.
site: $(STAMP)
	rm -rf build/executed build/site
	$(PY) docs/execute_notebooks.py --out build/executed $(if $(SMALL),--small)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	@echo "the site is in build/site/ (open build/site/index.html); docs/publishing.md puts it on GitHub Pages"

clean:
	rm -rf $(VENV) runs
