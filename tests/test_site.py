"""The course site (mkdocs.yml, docs/site_hooks.py; `make site`) builds with ``mkdocs build --strict``.

It is built from the notebooks that tests/test_notebooks.py executed earlier in this session and saved in
build/executed/, so CI never runs a notebook twice. Those tests run first (pytest takes the files in
alphabetical order); when they were not selected (``-k``, a single file), or come after this file, the build
is skipped with the reason. A notebook whose test failed has no executed copy, and then the site fails too.
The synthetic cases (an error output, a missing or stale executed copy) need no executed notebooks.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("mkdocs")
pytest.importorskip("mkdocs_jupyter")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "build" / "executed"            # where tests/test_notebooks.py saves each executed notebook
COLLECTED_AT = time.time()                         # this module is imported at collection, before any test runs
BUILD_TIMEOUT = 600


def build_site(site_dir: Path, executed: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of this repository into ``site_dir``, from the executed notebooks in ``executed``."""
    env = {**os.environ, "MINIGRPO_EXECUTED": str(executed), "NO_MKDOCS_2_WARNING": "1"}  # (Material's banner)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(site_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)


def notebook_tests(session) -> list:
    return [item for item in session.items
            if item.path.name == "test_notebooks.py" and getattr(item, "originalname", "") == "test_notebook_runs"]


@pytest.fixture(scope="module")
def site_build(request, tmp_path_factory) -> tuple[Path | None, str]:
    """The site built once from this session's executed notebooks: (its folder, "") or (None, why it was not)."""
    items = request.session.items
    runs = notebook_tests(request.session)
    selected = {item.callspec.params["path"].name for item in runs}
    if selected != {p.name for p in NOTEBOOKS}:
        pytest.skip(f"{len(selected)} of the {len(NOTEBOOKS)} notebook tests (tests/test_notebooks.py::test_notebook_runs) "
                    "were selected in this session, and the site is built from the notebooks they execute; "
                    "run both files whole")
    mine = [i for i, item in enumerate(items) if item.path == Path(__file__).resolve()]
    if items.index(runs[-1]) > mine[0]:
        pytest.skip("the notebook tests run after this file in this session; the site needs their executed notebooks")
    unfit = [p.name for p in NOTEBOOKS
             if not (EXECUTED / p.name).is_file() or (EXECUTED / p.name).stat().st_mtime < COLLECTED_AT]
    if unfit:
        return None, (f"no executed copy from this session in {EXECUTED} for {unfit}: their notebook tests failed "
                      "(see above), and the site is not built without every notebook")
    site_dir = tmp_path_factory.mktemp("site")
    t0 = time.perf_counter()
    result = build_site(site_dir, EXECUTED)
    print(f"mkdocs build --strict: {time.perf_counter() - t0:.1f} s")
    if result.returncode != 0:
        return None, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site_dir, ""


@pytest.fixture()
def site(site_build) -> Path:
    site_dir, why = site_build
    if site_dir is None:
        pytest.skip("the site did not build (test_site_builds says why)")
    return site_dir


def test_site_builds(site_build):
    """``mkdocs build --strict`` passes on this session's executed notebooks, every one of them present."""
    site_dir, why = site_build
    assert site_dir is not None, why


def count_png_outputs(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_page_shows_its_outputs(site: Path, path: Path):
    """Each notebook has a page that shows every figure it drew and its widgets' stored state, and the
    executed .ipynb beside it to download."""
    page = site / "notebooks" / f"{path.stem}.html"
    assert page.is_file(), f"no page for {path.name} at {page}"
    text = page.read_text(encoding="utf-8")
    nb = nbformat.read(EXECUTED / path.name, as_version=4)
    figures = count_png_outputs(nb)
    shown = text.count('src="data:image/png;base64,')
    assert shown >= figures, f"{path.name}: {figures} figure outputs, {shown} images on its page"
    if "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {}):
        assert 'type="application/vnd.jupyter.widget-state+json"' in text, f"{path.name}: widget state not on its page"
    assert (site / "notebooks" / path.name).is_file(), f"{path.name}: the executed notebook is not downloadable"
    assert f'href="{path.name}" download' in text, f"{path.name}: its page has no download link"
    if any(c.cell_type == "markdown" and "$" in c.source for c in nb.cells):
        assert re.search(r'<script src="https://[^"]*mathjax[^"]*">', text), f"{path.name}: its math has no MathJax"


def test_some_notebook_pages_have_figures(site: Path):
    """The executed notebooks carry their figures (a run that lost them would pass the per-page check vacuously)."""
    with_figures = [p.name for p in NOTEBOOKS if count_png_outputs(nbformat.read(EXECUTED / p.name, as_version=4))]
    assert len(with_figures) >= len(NOTEBOOKS) // 2, f"only {with_figures} hold figure outputs"


def test_api_page_is_generated_from_the_docstrings(site: Path):
    from minigrpo.core.step import grpo_step

    text = html.unescape(re.sub(r"<[^>]+>", "", (site / "api.html").read_text(encoding="utf-8")))
    assert "grpo_step" in text
    first_words = grpo_step.__doc__.split("``")[0].strip()       # up to the first ``code``, which becomes <code>
    assert first_words and first_words in text, f"grpo_step's docstring ({first_words!r}) is not on the API page"
    page = (site / "api.html").read_text(encoding="utf-8")
    for name in ["minigrpo.core.step.grpo_step", "minigrpo.bandit.runner.run_bandit", "minigrpo.lm.policy",
                 "minigrpo.rewards.compose", "minigrpo.runs.lm_run.train_lm", "minigrpo.lab.plots"]:
        assert f'id="{name}"' in page, f"{name} has no entry on the API page"


def test_home_page_is_the_readme_with_site_links(site: Path):
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "GRPO written out piece by piece" in text
    assert 'href="architecture.html"' in text, "the README's link to docs/architecture.md does not point at its page"
    assert 'href="notebooks/12_your_own_task.html"' in text, "the README's link to notebook 12 does not point at its page"
    for page in ["architecture.html", "performance.html", "publishing.html", "api.html", "bench/RESULTS.html"]:
        assert (site / page).is_file(), f"{page} missing from the site"


def test_build_fails_on_an_unusable_notebook(tmp_path: Path):
    """An error output, a missing executed copy or a stale one (cells that differ) stops the build, naming each."""
    executed = tmp_path / "executed"
    executed.mkdir()
    error_nb, missing_nb, stale_nb = NOTEBOOKS[0], NOTEBOOKS[1], NOTEBOOKS[2]
    for path in NOTEBOOKS:
        if path == missing_nb:
            continue
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        code[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        if path == error_nb:
            code[-1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="synthetic failure",
                                                       traceback=["ValueError: synthetic failure"])]
        if path == stale_nb:
            code[-1].source += "\n# edited after it was executed"
        nbformat.write(nb, executed / path.name)
    result = build_site(tmp_path / "site", executed)
    log = result.stdout + result.stderr
    assert result.returncode != 0, f"the build passed with unusable notebooks:\n{log}"
    assert f"{error_nb.name}: cell" in log and "ValueError: synthetic failure" in log, log
    assert f"{missing_nb.name}: no executed copy" in log, log
    assert f"{stale_nb.name}: the executed copy" in log and "stale" in log, log
    assert not (tmp_path / "site" / "index.html").exists()
