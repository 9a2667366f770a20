"""MkDocs hooks that put the course site together (mkdocs.yml: ``hooks``; not a page, see ``exclude_docs``).

The site's pages come from where they already live in the repository, so nothing is copied by hand:

- ``README.md`` becomes the home page (``index.md``), ``bench/RESULTS.md`` (and its figures) ``bench/RESULTS.md``;
- every ``notebooks/*.ipynb`` becomes ``notebooks/<name>.ipynb``, taken from its *executed* copy in
  ``build/executed/`` (or the folder named by the environment variable ``MINIGRPO_EXECUTED``), which
  ``make site`` writes in full mode and ``tests/test_notebooks.py`` in small mode. The build stops with an
  error when an executed copy is missing, holds an error output, or no longer matches the notebook's cells;
- the "Notebooks" entry of the navigation is filled with the notebooks in file order, and each notebook's page
  starts with a link that downloads the executed notebook;
- shape notation in docstrings, ``texts [P][G]``, reads to Markdown as a reference link; mkdocstrings' autorefs
  then warns that it finds no target ``G``, which ``--strict`` makes an error. Those warnings (a target of
  one capital letter) are dropped: such text is left as it was written;
- links written for the repository (``docs/architecture.md`` in the README, ``../bench/RESULTS.md`` in
  docs/) are rewritten to the page's place on the site. A link to a file the site does not hold
  (``examples/word_problems/``) goes to the repository when mkdocs.yml sets ``repo_url``, and is
  otherwise left as plain text.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path

import nbformat
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

EXECUTED_ENV = "MINIGRPO_EXECUTED"
EXECUTED_DEFAULT = "build/executed"
NAV_NOTEBOOKS = "Notebooks"
# repository file -> its page (or static file) on the site, besides docs/* -> * and the notebooks
MOVED = {"README.md": "index.md", "bench/RESULTS.md": "bench/RESULTS.md"}
EXTRA_STATIC = ["bench/*.png"]          # the figures bench/RESULTS.md shows

SHAPE_REF = re.compile(r"Could not find cross-reference target '[A-Z]'$")
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"\n]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def executed_dir(config) -> Path:
    return (_root(config) / os.environ.get(EXECUTED_ENV, EXECUTED_DEFAULT)).resolve()


def source_notebooks(config) -> list[Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def notebook_problems(source: Path, executed: Path) -> list[str]:
    """What stops ``executed`` from standing for ``source`` on the site: missing, stale, or an error output."""
    if not executed.is_file():
        return [f"{source.name}: no executed copy at {executed} (run `make site`, or the notebook tests)"]
    nb = nbformat.read(executed, as_version=4)
    src = nbformat.read(source, as_version=4)
    if [(c.cell_type, c.source) for c in nb.cells] != [(c.cell_type, c.source) for c in src.cells]:
        return [f"{source.name}: the executed copy {executed} is stale: its cells differ from the notebook's"]
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", ()):
            if out.get("output_type") == "error":
                problems.append(f"{source.name}: cell {i} holds an error output: "
                                f"{out.get('ename', '?')}: {out.get('evalue', '')}".rstrip())
    if not any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells):
        problems.append(f"{source.name}: the executed copy {executed} holds no outputs: was it executed?")
    return problems


class _NoShapeRefs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not SHAPE_REF.search(record.getMessage())


def on_config(config):
    """Fill the navigation's "Notebooks" entry with every notebook, in file order; drop the shape-notation
    warnings (module docstring) at MkDocs' own log handlers, where --strict counts warnings."""
    for handler in logging.getLogger("mkdocs").handlers:
        if not any(isinstance(f, _NoShapeRefs) for f in handler.filters):
            handler.addFilter(_NoShapeRefs())
    pages = [f"notebooks/{p.name}" for p in source_notebooks(config)]
    for i, item in enumerate(config.nav or []):
        if isinstance(item, dict) and NAV_NOTEBOOKS in item:
            config.nav[i] = {NAV_NOTEBOOKS: pages}
    return config


@event_priority(100)        # before mkdocs-jupyter's on_files, which turns the notebooks into pages
def on_files(files: Files, config) -> Files:
    root, executed = _root(config), executed_dir(config)
    problems = []
    for source in source_notebooks(config):
        found = notebook_problems(source, executed / source.name)
        problems += found
        if not found:
            files.append(File.generated(config, f"notebooks/{source.name}", abs_src_path=str(executed / source.name)))
    if problems:
        raise PluginError("the site is built from executed notebooks, and these cannot be used:\n  "
                          + "\n  ".join(problems))
    for repo_path, site_path in MOVED.items():
        files.append(File.generated(config, site_path, abs_src_path=str(root / repo_path)))
    for pattern in EXTRA_STATIC:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            files.append(File.generated(config, rel, abs_src_path=str(path)))
    return files


def on_nav(nav, config, files):
    """mkdocs-jupyter wraps each notebook's File in a NotebookFile that finds its source from ``src_dir``, which
    a generated File (ours, in build/executed/) does not have: hand it the wrapped File's path."""
    for f in files:
        inner = getattr(f, "file", None)
        if isinstance(inner, File) and f.abs_src_path is None and inner.abs_src_path is not None:
            f.abs_src_path = inner.abs_src_path
    return nav


def on_page_content(html: str, page, config, files) -> str:
    """A notebook's page starts with a link to download the executed notebook (mkdocs-jupyter's include_source
    puts it beside the page, but the theme shows no link to it)."""
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    name = posixpath.basename(page.file.src_uri)
    return (f'<p class="notebook-download"><a href="{name}" download>Download this notebook</a> '
            f"(executed, with its outputs).</p>\n" + html)


def _repo_path(page_uri: str) -> str:
    """Where the page with site path ``page_uri`` lives in the repository."""
    for repo_path, site_path in MOVED.items():
        if site_path == page_uri:
            return repo_path
    return f"docs/{page_uri}"


def _site_path(repo_path: str, config) -> str | None:
    """Where the repository file ``repo_path`` is on the site, or None when the site does not hold it."""
    if repo_path in MOVED:
        return MOVED[repo_path]
    if repo_path.startswith("docs/") and (Path(config.docs_dir) / repo_path[5:]).is_file():
        return repo_path[5:]
    if repo_path.startswith("notebooks/") and repo_path.endswith(".ipynb"):
        return repo_path
    root = _root(config)
    if any(Path(p).resolve() == (root / repo_path).resolve() for pattern in EXTRA_STATIC
           for p in root.glob(pattern)):
        return repo_path
    return None


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Rewrite the page's links from repository paths to site paths (see the module docstring)."""
    if page.file.src_uri.endswith(".ipynb"):
        return markdown
    root = _root(config)
    page_repo = _repo_path(page.file.src_uri)
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(m: re.Match) -> str:
        target = m["target"]
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m[0]
        path, sep, fragment = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo), path))
        if repo_path.startswith("..") or not (root / repo_path).exists():
            return m[0]                                       # not a repository file: MkDocs judges the link
        site = _site_path(repo_path, config)
        if site is not None:
            new = posixpath.relpath(site, page_dir or ".") + sep + fragment
        elif config.repo_url:
            kind = "tree" if (root / repo_path).is_dir() else "blob"
            new = f"{config.repo_url.rstrip('/')}/{kind}/HEAD/{repo_path}" + sep + fragment
        else:
            return m["text"]                                  # nowhere to send it: keep the words
        return f"{m['bang']}[{m['text']}]({new}{m['title'] or ''})"

    out, in_fence = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            in_fence = not in_fence
        out.append(line if in_fence or FENCE.match(line) else LINK.sub(rewrite, line))
    return "".join(out)
