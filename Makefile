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

.PHONY: demo test lab lab-workspace bench bench-trl setup clean site
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

test: $(STAMP)
	$(PY) -m pytest -q

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
