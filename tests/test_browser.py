"""Notebooks 01 and 04 in a real browser: JupyterLab started headless, driven through a system Chromium by Playwright.

Each test opens a notebook in JupyterLab, runs all cells from the Run menu, waits until every code cell has an
execution count, and checks that no output is an error, that the widgets render as controls (not as their text
repr), and that the interactive part works: in 01 moving the bandit lab's β slider retrains and redraws its figures,
in 04 moving β and clicking "train N steps" trains a short run and redraws its plot.

What it needs, and where it comes from (``make test`` installs both, ``make browser`` the second alone):

* ``playwright`` (Python, from the dev extra). Its own browser download (``playwright install``) is never used;
* a Chromium executable: ``$MINIGRPO_CHROMIUM`` if set, else ``/usr/bin/chromium``, ``chromium`` or
  ``chromium-browser`` on PATH (Debian's package: ``sudo apt-get install chromium``).

Without either the tests skip, saying which is missing. The server works on copies of the notebooks in a temporary
folder (never the tracked ones: JupyterLab writes outputs into what it opens), with ``MINIGRPO_SMALL=1`` (the
notebooks' quick settings), its own Jupyter config, data, runtime and settings folders (autosave off, every cell
attached to the DOM), and ``expose_app_in_browser`` so the test can read the notebook model: JupyterLab renders an
error output and a stderr stream (a warning) with the same DOM node, so the model's ``output_type`` is what tells
them apart. On a failure a screenshot is saved into the test's tmp folder and its path is in the message. The
server, its kernels and the browser are stopped on every exit path.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:                                            # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed (it comes with the dev extra: pip install -e '.[dev]')",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INSTALL_HINT = ("`make browser` installs Debian's chromium when run as root with apt-get; else "
                "`sudo apt-get install chromium`, or set MINIGRPO_CHROMIUM=/path/to/chromium")
# Chromium on a machine with no outside network, possibly as root: no sandbox (root), no GPU, and none of the
# background connections (component updates, sync, QUIC) that the closed network would refuse many at a time
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# generous: the CI machine is a loaded 2-core box (a kernel start alone has taken a minute there)
SERVER_START_S = 180          # JupyterLab answering /api/status
PAGE_LOAD_S = 180             # the notebook shown
KERNEL_START_S = 240          # its kernel idle
RUN_ALL_S = {"01_bandit.ipynb": 420, "04_lm_grpo_run.ipynb": 600}
REDRAW_S = 300                # a widget's retrain and redraw
POLL_S = 0.5
# JupyterLab user settings for the test server: nothing saved into the copies behind our back, every cell in the
# DOM (the default 'contentVisibility' windowing keeps off-screen cells unrendered), no news or update pop-ups
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}

# DOM selectors (JupyterLab 4, ipywidgets 8)
CODE_PROMPT = ".jp-CodeCell .jp-InputArea-prompt"              # "[ ]:" not run, "[*]:" running/queued, "[3]:" ran
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'  # stderr *and* errors
WIDGET_VIEW = ".jp-OutputArea-output .widget-vbox"             # a rendered ipywidgets box (absent: text repr)
WIDGET_PLACE = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output:not([data-mime-type])"  # where a
# cell's widget goes: its view (a .jupyter-widgets child) once rendered, only a text ("Loading widget...",
# "Error displaying widget...") if not
WIDGET_ERROR = ".jupyter-widgets-error-widget"                 # the view ipywidgets shows for a model that failed
SLIDER_HANDLE = ".noUi-handle"                                 # ipywidgets 8 sliders are noUiSlider
IMAGES = ".widget-output img"                                  # figures drawn into an Output widget
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)(:|\s*$)", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def find_chromium() -> str:
    """The Chromium to drive, or skip the test saying why there is none."""
    override = os.environ.get("MINIGRPO_CHROMIUM")
    if override:
        path = shutil.which(override)
        if path is None:
            pytest.skip(f"MINIGRPO_CHROMIUM={override} is not an executable file")
        return path
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(f"no Chromium found (looked for /usr/bin/chromium, chromium and chromium-browser on PATH): "
                f"{INSTALL_HINT}")


# ---------------------------------------------------------------------------------------------------- processes

def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (Linux /proc; empty elsewhere). Kernels start in a session of their own, so
    killing the server's process group does not reach them: they are found here first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
            parents[int(entry.parent.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        pgid = os.getpgid(pid)
        if pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


@dataclass
class Lab:
    """A running JupyterLab: its base URL, token, notebook folder and log file."""
    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen

    def api(self, method: str, path: str, timeout: float = 10):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut every session's kernel down (frees the CPU between tests; a kernel left running is killed later)."""
        with contextlib.suppress(Exception):
            for session in self.api("GET", "/api/sessions"):
                with contextlib.suppress(Exception):
                    self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_port(runtime: Path, pid: int, fallback: int) -> int:
    """The port the server really listens on (it moves on if ``fallback`` was taken meanwhile)."""
    info = runtime / f"jpserver-{pid}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads(info.read_text())["port"])
    return fallback


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    """JupyterLab, headless, on copies of the notebooks; stopped with its kernels at the end of the module."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    root.mkdir()
    for name in RUN_ALL_S:
        shutil.copy(NOTEBOOKS / name, root / name)
    for link in ("examples", "bench"):                       # as `make lab-workspace`: relative paths still work
        (base / link).symlink_to(ROOT / link, target_is_directory=True)
    settings = base / "settings"
    for rel, values in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    dirs = {var: base / var.lower() for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                                 "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "MINIGRPO_SMALL": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("JUPYTER_TOKEN", None)
    token, port, log = secrets.token_hex(16), _free_port(), base / "server.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.terminals_enabled=False"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, root, log, process)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode} on start; its log {log}:\n"
                            f"{server.log_tail()}")
            port = _server_port(dirs["JUPYTER_RUNTIME_DIR"], process.pid, port)
            server.url = f"http://127.0.0.1:{port}"
            try:
                server.api("GET", "/api/status", timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s; its log {log}:\n"
                                f"{server.log_tail()}")
                time.sleep(POLL_S)
        yield server
    finally:
        kids = _children(process.pid)
        server.shutdown_kernels()
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait(10)
        for pid in kids:                                      # kernels (own sessions) still alive, if any
            _kill_group(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium under Playwright; skips if there is none or it does not start."""
    executable = find_chromium()
    pw = sync_playwright().start()
    try:
        try:
            chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                                          timeout=120_000)
        except PlaywrightError as err:
            pytest.skip(f"{executable} did not start under Playwright ({str(err).splitlines()[0]}); {INSTALL_HINT}")
        try:
            yield chromium
        finally:
            with contextlib.suppress(Exception):
                chromium.close()
    finally:
        pw.stop()


@pytest.fixture()
def page(browser, lab, tmp_path):
    """A fresh browser page; on a failure inside ``failure_screenshot`` its screenshot lands in ``tmp_path``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):
            context.close()
        lab.shutdown_kernels()


@contextlib.contextmanager
def failure_screenshot(page, lab: Lab, path: Path):
    """Re-raise any failure with a screenshot of the page (saved to ``path``) and the server log's path."""
    try:
        yield
    except Exception as err:
        try:
            page.screenshot(path=str(path), full_page=True, timeout=30_000)
            where = f"screenshot: {path}"
        except Exception as shot_error:                       # the page itself may be gone
            where = f"no screenshot ({str(shot_error).splitlines()[0]})"
        raise AssertionError(f"{err}\n{where}\nJupyterLab log: {lab.log}") from err


# ------------------------------------------------------------------------------------------------ the notebook

def wait_until(page, what, timeout_s: float, check):
    """Poll ``check()`` until it returns a true value (returned); fail saying ``what`` (a string, or a callable
    giving one at the time of the failure) was waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            what = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(POLL_S * 1000)


def kernel_state(page) -> str:
    """The current notebook's kernel status from the app ('idle', 'busy', 'starting', ...; '' before any)."""
    return page.evaluate("""() => {
        const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const ctx = w && w.sessionContext;
        return (ctx && ctx.session && ctx.session.kernel && ctx.kernelDisplayStatus) || '';
    }""")


def open_notebook(page, lab: Lab, name: str) -> None:
    """Open ``name`` in a fresh workspace and wait until its kernel is idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}", wait_until="domcontentloaded",
              timeout=PAGE_LOAD_S * 1000)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=PAGE_LOAD_S * 1000)
    wait_until(page, lambda: f"the kernel of {name} to be idle (its status: {kernel_state(page) or 'none'!r})",
               KERNEL_START_S, lambda: kernel_state(page) == "idle")


def prompts(page) -> list[str]:
    return [p.strip() for p in page.locator(CODE_PROMPT).all_inner_texts()]


def run_all(page, name: str) -> None:
    """Run → Run All Cells, then wait until no cell is queued or running and the kernel is idle (3 polls in a row:
    between two cells the kernel is briefly idle)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    wait_until(page, f"{name} to start running", 60, lambda: any(p != "[ ]:" for p in prompts(page)))
    quiet = 0

    def finished() -> bool:
        nonlocal quiet
        busy = "[*]:" in prompts(page) or kernel_state(page) != "idle"
        quiet = 0 if busy else quiet + 1
        return quiet >= 3

    wait_until(page, f"{name} to finish running all cells", RUN_ALL_S[name], finished)


def error_outputs(page) -> list[str]:
    """Every error output: from the notebook model (a cell's ``output_type == 'error'``) and from the DOM (a stderr
    node that holds a traceback, e.g. inside a widget's Output area, which the cell model does not hold)."""
    model = page.evaluate("""() => {
        const found = [];
        window.jupyterapp.shell.currentWidget.content.widgets.forEach((cell, i) => {
            if (cell.model.type !== 'code') return;
            const outputs = cell.model.outputs;
            for (let j = 0; j < outputs.length; j++) {
                const o = outputs.get(j).toJSON();
                if (o.output_type === 'error')
                    found.push(`cell ${i}: ${o.ename}: ${o.evalue}\\n${(o.traceback || []).join('\\n')}`);
            }
        });
        return found;
    }""")
    model = [ANSI.sub("", e) for e in model]
    dom = [t for t in page.locator(STDERR_OUTPUT).all_inner_texts() if TRACEBACK.search(t)]
    last_line = lambda text: ([line for line in text.splitlines() if line.strip()] or [""])[-1]
    return model + [f"in the page: {t}" for t in dom if not any(last_line(t) in m for m in model)]


def check_ran_clean(page, name: str) -> None:
    """Every code cell ran, every widget renders as controls, and no output is an error. Widgets come first: a
    traceback inside a widget's Output area is only in the DOM once the widget is rendered."""
    problems = widget_problems(page, name)
    problems += [f"error output: {e[-3000:]}" for e in error_outputs(page)]
    not_run = [i for i, p in enumerate(prompts(page)) if not re.fullmatch(r"\[\d+\]:", p)]
    if not_run:
        problems.append(f"code cells {not_run} (0-based among the code cells) have no execution count")
    assert not problems, f"{name}: {len(problems)} problem(s):\n" + "\n\n".join(problems)


def widget_box(page, has_selector: str, has_text: str | re.Pattern):
    """The one rendered widget box holding an element ``has_selector`` with ``has_text``."""
    box = page.locator(WIDGET_VIEW).filter(has=page.locator(has_selector, has_text=has_text))
    box.first.wait_for(state="attached", timeout=60_000)
    box = box.last                                               # the innermost if boxes are nested
    box.scroll_into_view_if_needed()
    return box


def widget_states(page) -> dict:
    """How many widget outputs the notebook model holds, how many of them are rendered as views in the DOM, and
    the texts shown instead of a view ("Loading widget...", "Error displaying widget...", ipywidgets' error view)."""
    return page.evaluate("""([place, errorView]) => {
        let expected = 0;
        window.jupyterapp.shell.currentWidget.content.widgets.forEach(cell => {
            if (cell.model.type !== 'code') return;
            const outputs = cell.model.outputs;
            for (let j = 0; j < outputs.length; j++) {
                const view = outputs.get(j).data['application/vnd.jupyter.widget-view+json'];
                if (view && view.model_id) expected++;
            }
        });
        const nodes = [...document.querySelectorAll(place)];
        return {
            expected,
            rendered: nodes.filter(n => n.querySelector(':scope > .jupyter-widgets')).length,
            failed: nodes.filter(n => n.children.length === 0 && n.textContent.trim()).map(n => n.textContent.trim())
                .concat([...document.querySelectorAll(errorView)].map(n => 'error view: ' + n.textContent.trim())),
        };
    }""", [WIDGET_PLACE, WIDGET_ERROR])


def widget_problems(page, name: str) -> list[str]:
    """Widget outputs not rendered as controls (one still loading is given a minute); empty if all are."""
    state = {}

    def rendered() -> bool:
        state.update(widget_states(page))
        return not state["failed"] and state["rendered"] >= state["expected"]

    with contextlib.suppress(AssertionError):
        wait_until(page, "", 60, rendered)
    if state["expected"] == 0:
        return [f"{name} shows no widget at all"]
    if state["failed"] or state["rendered"] < state["expected"]:
        return [f"{state['rendered']} of {state['expected']} widget outputs render as controls; shown instead: "
                f"{state['failed']}"]
    return []


def slider(box, label: str):
    """The slider in ``box`` whose description is ``label``."""
    s = box.locator(".widget-slider").filter(has=box.page.locator(".widget-label", has_text=re.compile(
        rf"^{re.escape(label)}$")))
    assert s.count() == 1, f"expected one slider {label!r} in the widget box, found {s.count()}"
    return s


def images(box) -> list[str]:
    return [img.get_attribute("src") or "" for img in box.locator(IMAGES).all()]


def move_to_end(page, slider_locator) -> str:
    """Press End on the slider's handle (as a keyboard user would); returns the readout after the move."""
    before = slider_locator.locator(".widget-readout").inner_text()
    handle = slider_locator.locator(SLIDER_HANDLE)
    handle.focus()
    handle.press("End")
    return wait_until(page, f"the slider readout to move from {before!r}", 30,
                      lambda: (r := slider_locator.locator(".widget-readout").inner_text()) != before and r)


# --------------------------------------------------------------------------------------------------- the tests

def test_bandit_notebook_in_the_browser(page, lab, tmp_path):
    """01: all cells run without an error, the bandit lab renders as controls with its three figures, and moving
    β retrains and redraws every figure."""
    name = "01_bandit.ipynb"
    with failure_screenshot(page, lab, tmp_path / "01_bandit-failure.png"):
        open_notebook(page, lab, name)
        run_all(page, name)
        check_ran_clean(page, name)

        box = widget_box(page, ".widget-label", re.compile(r"^β$"))
        beta = slider(box, "β")
        assert beta.locator(SLIDER_HANDLE).is_visible(), "the β slider has no visible handle"
        assert box.locator("select").count() == 2, "expected the baseline and KL dropdowns"
        assert slider(box, "steps").locator(SLIDER_HANDLE).is_visible()
        before = wait_until(page, "the lab's three figures", REDRAW_S, lambda: len(images(box)) == 3 and images(box))
        summary = box.locator(".widget-html").inner_text()

        readout = move_to_end(page, beta)
        assert float(readout) == pytest.approx(10.0), f"β after End reads {readout!r}, expected 10"
        wait_until(page, "the lab to redraw its three figures after moving β", REDRAW_S,
                   lambda: len(now := images(box)) == 3 and not set(now) & set(before))
        assert box.locator(".widget-html").inner_text() != summary, "the summary line did not change with β"
        check_ran_clean(page, name)                             # nothing raised in the widget's callback


def test_lm_notebook_button_in_the_browser(page, lab, tmp_path):
    """04: all cells run without an error (the small LM run included), the β lab renders as a slider and a
    button, and after moving β a click on "train N steps" trains a short run and redraws its plot."""
    name = "04_lm_grpo_run.ipynb"
    with failure_screenshot(page, lab, tmp_path / "04_lm_grpo_run-failure.png"):
        open_notebook(page, lab, name)
        run_all(page, name)
        check_ran_clean(page, name)

        train = re.compile(r"^train \d+ steps$")
        box = widget_box(page, ".widget-button", train)
        button = box.locator(".widget-button", has_text=train)
        assert button.is_visible() and button.is_enabled(), "the train button is not a usable button"
        summary = box.locator(".widget-html")
        wait_until(page, "the summary of the notebook's own click (last cell)", REDRAW_S,
                   lambda: "held-out accuracy" in summary.inner_text())
        before = wait_until(page, "the lab's plot", REDRAW_S, lambda: images(box))

        readout = move_to_end(page, slider(box, "β"))
        assert float(readout) == pytest.approx(1.0), f"β after End reads {readout!r}, expected 1"
        button.click()
        wait_until(page, "the click to train at β = 1 and report it", REDRAW_S,
                   lambda: re.match(r"β = 1\b.*held-out accuracy", summary.inner_text()))
        wait_until(page, "the plot to be redrawn after the click", REDRAW_S,
                   lambda: (now := images(box)) and not set(now) & set(before))
        check_ran_clean(page, name)
