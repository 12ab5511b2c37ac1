"""Presenting a notebook as slides in JupyterLab (README, "Presenting"), end to end in headless Chromium.

The server is test_lab_e2e's (a copy of the notebook, fast mode, a token); the window is 1280x720, a projector's.
The test runs all cells of notebook 01, selects the title, starts the slideshow with the notebook toolbar's deck
button (jupyterlab-slideshow's "Toggle Deck"), then walks the whole deck with the right arrow key, as a presenter
does. At each step it reads which cells the extension puts on screen and checks:

- the slides are the ones tests/test_notebooks.py's rules describe (``slides``: a slide cell, then the cells that
  continue it), in order, the skipped cells (setup, imports, the widget's check) never shown;
- on the widget's slide, the widget is alone, rendered and inside the window; dragging its slider changes the
  readout and redraws its figure (a new PNG), and the deck stays on that slide;
- Escape ends the slideshow; no cell raised, no error in the page.

Screenshots: $SCREENSHOT_DIR (default build/screenshots/) slideshow_01_title.png, slideshow_01_widget.png,
slideshow_01_widget_moved.png. Marked ``browser``; skips where Chromium, Playwright, JupyterLab or
jupyterlab-slideshow is missing, saying which.
"""
from __future__ import annotations

import importlib.util
import time

import jupytext
import pytest
import test_lab_e2e as lab_e2e  # tests/ is on sys.path (tests/conftest.py)
import test_notebooks

NAME = "01_forward_noising"
WIDGET = "ForwardNoisingExplorer("  # the source of the cell that shows the notebook's explorer
SLIDER = "t"  # the description of the slider the test drags
VIEWPORT = {"width": 1280, "height": 720}
STEP_TIMEOUT_MS = 30_000  # one key press to the next slide, on a loaded machine


def _missing() -> str | None:
    if lab_e2e._missing() is not None:
        return lab_e2e._missing()
    if importlib.util.find_spec("jupyterlab_slideshow") is None:
        return "jupyterlab-slideshow is not installed (pip install -e '.[dev]')"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]

ACTIVE = "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex"
# the indices of the cells the deck puts on the current slide (jupyterlab-slideshow's jp-deck-mod-onscreen class)
ON_SCREEN = """() => window.jupyterapp.shell.currentWidget.content.widgets.flatMap(
  (cell, i) => cell.hasClass('jp-deck-mod-onscreen') ? [i] : [])"""
PRESENTING = "() => document.body.dataset.jpDeckMode === 'presenting'"
FORWARD = '.jp-Deck-Remote button[title="Go to next slide/fragment in Deck"]'


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from lab_e2e.lab_server(tmp_path_factory.mktemp("lab"), [NAME])


def _shot(page, name: str) -> None:
    lab_e2e.SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(lab_e2e.SHOTS / f"slideshow_{name}.png"))


def _next_slide(page, button: bool = False) -> int:
    """Press the right arrow key (the deck's "next slide or fragment"), or click the deck's › button at the bottom
    right (after a widget, whose slider keeps the arrow keys), and wait for the active cell to move."""
    before = page.evaluate(ACTIVE)
    if button:
        page.locator(FORWARD).click()
    else:
        page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => ({ACTIVE})() !== {before}", timeout=STEP_TIMEOUT_MS, polling=100)
    # the deck restyles the cells after the active one moves: wait until the active cell is on screen
    page.wait_for_function(f"() => ({ON_SCREEN})().includes(({ACTIVE})())", timeout=STEP_TIMEOUT_MS, polling=100)
    return page.evaluate(ACTIVE)


def _check_widget_slide(page, widget_cell: int) -> None:
    """The explorer alone on its slide, inside the window; its slider redraws its figure."""
    from playwright.sync_api import expect

    cell = page.locator(".jp-Notebook .jp-Cell").nth(widget_cell)
    widget = cell.locator(".jp-OutputArea-output:has(.widget-slider):has(img.widget-image)")
    expect(widget).to_have_count(1, timeout=30_000)
    img = widget.locator("img.widget-image")
    expect(img).to_be_visible()
    assert img.evaluate("img => img.decode().then(() => img.naturalWidth)") > 200, "the figure is not a picture"
    box = img.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (
        f"the widget's figure ({box}) does not fit the {VIEWPORT} window on its slide")
    _shot(page, "01_widget")

    slider = widget.locator(".widget-slider", has=page.locator(f'.widget-label:text-is("{SLIDER}")'))
    readout = slider.locator(".widget-readout")
    value, digest = readout.inner_text(), lab_e2e._image_digest(img)
    lab_e2e._drag(page, slider)
    expect(readout).not_to_have_text(value)
    lab_e2e._wait_for_new_image(img, digest, f"moving {SLIDER} from {value} to {readout.inner_text()} on its slide")
    assert page.evaluate(ON_SCREEN) == [widget_cell], "dragging the slider moved the deck off the widget's slide"
    _shot(page, "01_widget_moved")


def test_present_notebook_with_live_widget(lab, browser):
    base, root = lab
    nb = jupytext.read(root / "notebooks" / f"{NAME}.ipynb")
    expected = test_notebooks.slides(nb)
    widget_cell = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and WIDGET in c.source)
    hidden = [i for i, c in enumerate(nb.cells) if test_notebooks.slide_type(c) in test_notebooks.HIDDEN]

    t0 = time.perf_counter()
    page = lab_e2e._new_page(browser)
    page.set_viewport_size(VIEWPORT)
    try:
        ran = lab_e2e._open_and_run_all(page, base, NAME)
        t_run = time.perf_counter() - t0
        assert not lab_e2e._cell_errors(page), f"a cell raised: {lab_e2e._cell_errors(page)}"
        assert ran == "ok", f"run all cells: {ran}"

        # select the title, then the deck button of the notebook's toolbar, as a presenter does
        page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
        page.locator('.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name="deck"]').click()
        page.wait_for_function(PRESENTING, timeout=STEP_TIMEOUT_MS)
        page.wait_for_function(f"() => ({ON_SCREEN})().includes(0)", timeout=STEP_TIMEOUT_MS)
        _shot(page, "01_title")

        shown = [page.evaluate(ON_SCREEN)]
        widget_checked = after_widget = False
        for _ in range(len(nb.cells)):  # at most one step per cell
            if shown[-1] == [widget_cell] and not widget_checked:
                _check_widget_slide(page, widget_cell)
                widget_checked = after_widget = True
            if page.evaluate(ACTIVE) == expected[-1][-1]:  # the last cell shown
                break
            _next_slide(page, button=after_widget)
            after_widget = False
            if page.evaluate(ON_SCREEN) != shown[-1]:
                shown.append(page.evaluate(ON_SCREEN))
        t_deck = time.perf_counter() - t0

        assert shown == expected, f"the deck showed the slides {shown}, the slide rules expect {expected}"
        assert not set(hidden) & {i for s in shown for i in s}, f"skipped cells {hidden} were shown"
        assert widget_checked, f"the widget's cell {widget_cell} never had a slide of its own: {shown}"

        page.keyboard.press("Escape")  # the deck's "stop"
        page.wait_for_function(f"() => !({PRESENTING})()", timeout=STEP_TIMEOUT_MS)
        assert not page.errors, f"errors in the page: {page.errors}"
        print(f"{NAME}: all cells in {t_run:.1f} s, {len(shown)} slides walked and the widget checked at "
              f"{t_deck:.1f} s")
    except Exception:
        _shot(page, "01_failure")
        raise
    finally:
        page.close()
        lab_e2e._shutdown_kernels(base)
