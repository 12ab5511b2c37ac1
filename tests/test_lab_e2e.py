"""End to end in JupyterLab: notebooks 01 and 08 run in headless Chromium, and their main widget responds.

A module fixture starts JupyterLab (127.0.0.1, a free port, a token) on a temporary copy of the notebooks, so the
committed ``notebooks/*.ipynb`` are never touched; its kernels inherit ``DDPM_LITE_FAST=1`` and
``OMP_NUM_THREADS=1`` and are the venv's Python (the one running pytest). Each test opens a notebook, runs all its
cells, then moves the slider and changes the dropdown of the notebook's explorer widget (ddpm_lite/widgets.py) and
checks, from the page, that the widget rendered, that its PNG changed after each move, and that no cell raised.

Needs Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), Playwright for Python (only to drive that Chromium:
never `playwright install`) and JupyterLab; where one is missing the tests skip, saying which. Marked ``browser``
(deselect with ``-m "not browser"``). Screenshots go to $SCREENSHOT_DIR (default build/screenshots/, git-ignored).
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "build" / "screenshots"))
TOKEN = "ddpm-lite-e2e"
# notebook -> the descriptions of the slider and the dropdown of its main widget
MAIN_WIDGETS = {
    "01_forward_noising": ("t", "schedule"),  # ForwardNoisingExplorer
    "08_classifier_guidance": ("s", "class"),  # GuidanceExplorer
}
RUN_TIMEOUT_S = 240  # one notebook, all cells, fast mode
RENDER_TIMEOUT_S = 60  # one redraw of the widget after a move

import chromium  # noqa: E402  (tests/chromium.py)


def _missing() -> str | None:
    if chromium.missing() is not None:
        return chromium.missing()
    if importlib.util.find_spec("jupyterlab") is None:
        return "JupyterLab is not installed (pip install -e '.[dev]')"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]

# Lab settings: no news toast over the page, a kernel started without the "Select Kernel" dialog (which raced
# "run all"), every cell kept in the DOM (no windowing), and no autosave.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}


# ------------------------------------------------------------------------------------------ server and browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(home: Path) -> dict[str, str]:
    """The server's environment, which its kernels inherit: fast mode, one thread, Jupyter's state in ``home``."""
    env = dict(os.environ, DDPM_LITE_FAST="1", DDPM_LITE_STRICT="1", OMP_NUM_THREADS="1",
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               # the venv's share/jupyter first: its python3 kernel and the widgets' labextension
               JUPYTER_PATH=os.pathsep.join(filter(None, [f"{sys.prefix}/share/jupyter",
                                                          os.environ.get("JUPYTER_PATH")])))
    env.pop("MPLBACKEND", None)  # `make test` exports Agg; the kernel should pick the inline backend, as for a learner
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the notebooks: yields (base URL, its root); stopped by its PID at the end."""
    yield from lab_server(tmp_path_factory.mktemp("lab"), list(MAIN_WIDGETS))


def lab_server(root: Path, names):
    """Start JupyterLab on copies of notebooks/NAME.ipynb for ``names`` in ``root``: yields (base URL, root) once it
    answers, and stops it (by its PID) when resumed. Also used by tests/test_lab_figures.py."""
    (root / "notebooks").mkdir()
    for name in names:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    home = root / ".jupyter"
    for plugin, settings in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port = _free_port()
    log = root / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True"],
            cwd=root, env=_lab_env(home), stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}", pytrace=False)
                time.sleep(0.25)
        yield base, root
    finally:
        proc.terminate()  # the server shuts its kernels down first
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ driving the page
# window.jupyterapp exists thanks to expose_app_in_browser. Running all cells through the command registry, once
# the notebook's kernel session is ready, is deterministic; clicking the Run menu raced the kernel start.
RUN_ALL = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.runAll = 'running';
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.runAll = ok ? 'ok' : 'a cell failed'; }, e => { window.runAll = 'error: ' + e; });
}"""
NOTEBOOK_OPEN = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.sessionContext && w.context && w.context.path === path);
}"""
# the bytes behind an <img src="blob:...">, base64 (ipywidgets 8 shows an Image's value as a blob URL)
IMAGE_DATA = """async (img) => {
  const blob = await (await fetch(img.src)).blob();
  return await new Promise(done => {
    const r = new FileReader(); r.onload = () => done(r.result); r.readAsDataURL(blob);
  });
}"""
# Outputs of type "error" (a cell raised), read from the notebook's model: in the DOM, Lab 4 renders a traceback
# like stderr (both data-mime-type="application/vnd.jupyter.stderr"), so the page's markup cannot tell them apart.
CELL_ERRORS = """() => window.jupyterapp.shell.currentWidget.content.widgets.flatMap((cell, i) =>
  cell.model.type !== 'code' ? [] : cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
    .map(o => `cell ${i + 1}: ${o.ename}: ${o.evalue}`))"""


def _new_page(browser):
    """A page that records uncaught JavaScript errors in ``page.errors``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def _open_and_run_all(page, base: str, name: str) -> str:
    """Open notebooks/NAME.ipynb (in a workspace of its own, so no other tab is restored) and run all its cells;
    returns "ok" or what went wrong."""
    path = f"notebooks/{name}.ipynb"
    page.goto(f"{base}/lab/workspaces/e2e-{name}/tree/{path}?reset&token={TOKEN}")
    page.wait_for_function(NOTEBOOK_OPEN, arg=path, timeout=90_000)
    page.evaluate(RUN_ALL)
    page.wait_for_function("() => window.runAll !== 'running'", timeout=RUN_TIMEOUT_S * 1000, polling=500)
    return page.evaluate("window.runAll")


def _shutdown_kernels(base: str) -> None:
    """Stop the server's kernels (through its REST API, whatever state the page is in), to free their memory."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={TOKEN}", timeout=10) as r:
        sessions = json.load(r)
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={TOKEN}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def _cell_errors(page) -> list[str]:
    return page.evaluate(CELL_ERRORS)


def _image_digest(img) -> str:
    """md5 of the PNG the widget's <img> shows, once it has loaded."""
    img.evaluate("img => img.decode()")
    data = img.evaluate(IMAGE_DATA)
    assert data.startswith("data:image/png;base64,"), data[:60]
    return hashlib.md5(base64.b64decode(data.split(",", 1)[1])).hexdigest()


def _wait_for_new_image(img, before: str, what: str) -> str:
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while (after := _image_digest(img)) == before:
        assert time.monotonic() < deadline, f"the figure did not change within {RENDER_TIMEOUT_S} s after {what}"
        time.sleep(0.2)
    return after


def _drag(page, slider) -> None:
    """Drag the slider's handle to the far quarter of its track: right if it sits in the left half, else left."""
    track = slider.locator(".noUi-target").bounding_box()
    handle = slider.locator(".noUi-handle").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    left_half = x < track["x"] + track["width"] / 2
    target = track["x"] + track["width"] * (0.8 if left_half else 0.2)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(target, y, steps=10)
    page.mouse.up()


def _shot(page, widget, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(SHOTS / f"lab_{name}.png"))


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("name", list(MAIN_WIDGETS))
def test_notebook_runs_and_widget_responds(lab, browser, name):
    """Run all cells in Lab; the explorer renders; moving its slider, then its dropdown, redraws its figure."""
    from playwright.sync_api import expect

    base, _ = lab
    slider_label, dropdown_label = MAIN_WIDGETS[name]
    t0 = time.perf_counter()
    page = _new_page(browser)
    try:
        ran = _open_and_run_all(page, base, name)
        t_run = time.perf_counter() - t0
        assert not _cell_errors(page), f"{name}: a cell raised: {_cell_errors(page)}"
        assert ran == "ok", f"{name}: run all cells: {ran}"
        assert "fast mode: True" in page.locator(".jp-Notebook").inner_text(), "the kernel is not in fast mode"

        # the main widget: one output holding a slider, a dropdown and an image (FigureWidget's VBox)
        widget = page.locator(".jp-OutputArea-output:has(.widget-slider):has(.widget-dropdown):has(img.widget-image)")
        expect(widget).to_have_count(1, timeout=30_000)
        slider = widget.locator(".widget-slider", has=page.locator(f'.widget-label:text-is("{slider_label}")'))
        dropdown = widget.locator(".widget-dropdown", has=page.locator(f'.widget-label:text-is("{dropdown_label}")'))
        img = widget.locator("img.widget-image")
        expect(slider).to_have_count(1)
        expect(dropdown).to_have_count(1)
        expect(img).to_be_visible()
        assert img.evaluate("img => img.decode().then(() => img.naturalWidth)") > 200, "the figure is not a picture"
        _shot(page, widget, f"{name}_1_run")
        digest = _image_digest(img)

        readout = slider.locator(".widget-readout")
        value = readout.inner_text()
        _drag(page, slider)
        expect(readout).not_to_have_text(value)
        digest = _wait_for_new_image(img, digest, f"moving {slider_label} from {value} to {readout.inner_text()}")
        _shot(page, widget, f"{name}_2_slider")

        select = dropdown.locator("select")
        current = select.locator("option:checked").inner_text()
        choice = next(o for o in select.locator("option").all_inner_texts() if o != current)
        select.select_option(label=choice)
        _wait_for_new_image(img, digest, f"choosing {dropdown_label} = {choice}")
        _shot(page, widget, f"{name}_3_dropdown")

        assert not page.errors, f"{name}: errors in the page: {page.errors}"
        print(f"{name}: all cells in {t_run:.1f} s, widget checked at {time.perf_counter() - t0:.1f} s")
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"lab_{name}_failure.png"), full_page=True)
        raise
    finally:
        page.close()
        _shutdown_kernels(base)
