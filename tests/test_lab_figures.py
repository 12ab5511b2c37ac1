"""Every figure of every notebook as JupyterLab 4 shows it in Chromium: never upscaled, no text under 12 CSS px.

Each notebook runs (all cells, fast mode) in Lab in a 1024x768 window, as at a workshop projector. Then, for every
widget image (``img.widget-image``), in three layouts (1024x768 with the file browser open, the default and the
narrowest output area; 1024x768 with it closed; 1920x1080):

- the image is not scaled: its rendered width is its natural width (its PNG's width, in CSS px), or the width of
  the output area when that is narrower, never more (``max-width: 100%``, never upscaled);
- its smallest text is at least 12 CSS px: the PNG records its dpi and its smallest font in points
  (``ddpm_lite.course.style.render_png``), so the text shows at ``font_pt * dpi / 72 * rendered / natural`` px.

The notebooks' own matplotlib figures (inline PNGs, drawn with the style's rcParams: no font under 12 pt at 96
dpi, i.e. 16 px at natural width) must not be upscaled either, nor shrunk below 3/4 of their natural width (where
12 pt would fall under 12 px).

The first widget of each notebook (and 07's training monitor, 10's sampler explorer: the 12 main widgets) is
photographed at 1024x768 into $SCREENSHOT_DIR (default build/screenshots/) as ``lab_widget_NN_name.png``, with
``lab_widgets_1920.png`` (the page at 1920x1080) and the measurements in ``lab_figures.json``; ``FIGURE_DIR=path``
also saves every figure there. Marked ``browser``; skips where Chromium, Playwright or JupyterLab is missing
(tests/test_lab_e2e.py says which).
"""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
import test_lab_e2e as lab_e2e  # tests/ is on sys.path (tests/conftest.py)

from ddpm_lite.course import style

pytestmark = lab_e2e.pytestmark
NOTEBOOKS = ["01_forward_noising", "02_reverse_process", "03_loss", "04_learned_variance", "05_cosine_schedule",
             "06_importance_sampling", "07_unet", "08_classifier_guidance", "09_fid",
             "10_fast_sampling_and_likelihood", "11_beyond_images"]
NO_WIDGET = {"03_loss"}  # its figures are inline only
MAIN = {"07_unet": 2, "10_fast_sampling_and_likelihood": 2}  # how many widgets of a notebook to photograph
# (default 1: its first; 10's first is the latent interpolation, its second the sampler explorer)
LAYOUTS = [  # (name, viewport, file browser open)
    ("1024x768, file browser open", (1024, 768), True),
    ("1024x768, file browser closed", (1024, 768), False),
    ("1920x1080", (1920, 1080), True),
]
MEASURE = """() => [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img')].map((img, i) => {
  img.setAttribute('data-figure', i);
  const parent = img.parentElement, css = getComputedStyle(parent);
  return {i: i, widget: img.classList.contains('widget-image'), natural: img.naturalWidth,
          rendered: img.getBoundingClientRect().width,
          available: parent.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight)};
})"""
RESULTS: dict[str, list[dict]] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from lab_e2e.lab_server(tmp_path_factory.mktemp("lab"), NOTEBOOKS)


def _png(page, img) -> bytes:
    """The PNG an <img> shows (a blob: URL for a widget, a data: URL for an inline figure)."""
    img.evaluate("img => img.decode()")
    data = img.evaluate(lab_e2e.IMAGE_DATA)
    return base64.b64decode(data.split(",", 1)[1])


def _set_layout(page, viewport, browser_open: bool) -> None:
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    collapsed = page.evaluate("() => window.jupyterapp.shell.leftCollapsed")
    if collapsed == browser_open:
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.wait_for_function("(open) => window.jupyterapp.shell.leftCollapsed !== open", arg=browser_open)
    time.sleep(1.0)  # Lab lays the panels out again


def _shot_widget(page, img, path) -> None:
    """The output area holding ``img`` (its controls and figure), scrolled into view."""
    box = img.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
    box.evaluate("e => e.scrollIntoView({block: 'center'})")
    box.screenshot(path=str(path))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_figures_are_not_scaled_and_text_is_at_least_12px(lab, browser, name):
    base, _ = lab
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    failures, rows = [], []
    try:
        ran = lab_e2e._open_and_run_all(page, base, name)
        errors = lab_e2e._cell_errors(page)
        assert ran == "ok" and not errors, f"{name}: run all cells: {ran}; {errors}"
        figures = page.evaluate(MEASURE)
        widgets = [m["i"] for m in figures if m["widget"]]
        infos = {i: style.png_info(_png(page, page.locator(f'img[data-figure="{i}"]'))) for i in widgets}
        if os.environ.get("FIGURE_DIR"):  # every figure of the notebook as PNG, to look at
            out = Path(os.environ["FIGURE_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            for m in figures:
                kind = "widget" if m["widget"] else "inline"
                png = _png(page, page.locator(f'img[data-figure="{m["i"]}"]'))
                (out / f"{name}_{m['i']:02d}_{kind}.png").write_bytes(png)
        if name not in NO_WIDGET:
            assert widgets, f"{name}: no widget image after running all cells"
        for layout, viewport, browser_open in LAYOUTS:
            _set_layout(page, viewport, browser_open)
            if layout.startswith("1024x768, file browser open"):
                lab_e2e.SHOTS.mkdir(parents=True, exist_ok=True)
                for k, i in enumerate(widgets[: MAIN.get(name, 1)]):
                    suffix = f"_{k + 1}" if MAIN.get(name, 1) > 1 else ""
                    _shot_widget(page, page.locator(f'img[data-figure="{i}"]'),
                                 lab_e2e.SHOTS / f"lab_widget_{name}{suffix}.png")
            if viewport == (1920, 1080) and name == "01_forward_noising":
                _shot_widget(page, page.locator(f'img[data-figure="{widgets[0]}"]'),
                             lab_e2e.SHOTS / "lab_widgets_1920.png")
            for m in page.evaluate(MEASURE):
                info = infos.get(m["i"])
                expected = min(m["natural"], m["available"])
                row = {"layout": layout, "figure": m["i"], **m, "ratio": m["rendered"] / m["natural"]}
                what = f"{layout}: {'widget' if m['widget'] else 'inline'} figure {m['i']}"
                if m["rendered"] > m["natural"] + 0.5:
                    failures.append(f"{what} is upscaled: {m['rendered']:.0f} px wide for {m['natural']} px")
                if m["widget"]:
                    row["min_font_px"] = info["min_font_pt"] * info["dpi"] / 72 * row["ratio"]
                    row["min_text"] = info["min_text"]
                    if abs(m["rendered"] - expected) > 1:
                        failures.append(f"{what} is {m['rendered']:.0f} px wide, not min(natural {m['natural']}, "
                                        f"area {m['available']:.0f})")
                    if row["min_font_px"] < style.MIN_TEXT_PX:
                        failures.append(f"{what}: its smallest text ({info['min_text']!r}, {info['min_font_pt']} pt "
                                        f"at {info['dpi']} dpi) shows at {row['min_font_px']:.1f} px")
                elif row["ratio"] < style.MIN_TEXT_PX / (style.MIN_FONT_PT * style.DPI / 72) - 1e-3:
                    failures.append(f"{what} ({m['natural']} px) shrinks to {m['rendered']:.0f} px: 12 pt text "
                                    f"would show under 12 px")
                rows.append(row)
        assert not page.errors, f"{name}: errors in the page: {page.errors}"
    except Exception:
        lab_e2e.SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(lab_e2e.SHOTS / f"lab_figures_{name}_failure.png"), full_page=True)
        raise
    finally:
        page.close()
        lab_e2e._shutdown_kernels(base)
        RESULTS[name] = rows
        path = lab_e2e.SHOTS / "lab_figures.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**done, name: rows}, indent=1))
    for row in rows:
        if row["widget"]:
            print(f"{name} {row['layout']}: widget {row['figure']}: natural {row['natural']} px, rendered "
                  f"{row['rendered']:.0f} px, smallest text {row['min_font_px']:.1f} px ({row['min_text']!r})")
    assert not failures, f"{name}:\n" + "\n".join(failures)
