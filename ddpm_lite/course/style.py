"""How every course figure looks at the size it is shown: resolution, figure width and font sizes, in one place.

The rule (the course's standard): no text smaller than 12 CSS px as shown, and no image upscaled. A PNG drawn at
``DPI`` dots per inch and displayed at its natural width (one PNG pixel per CSS px, device pixel ratio 1) shows a
font of ``s`` points at ``s * DPI / 72`` px; shrunk by ``max-width: 100%`` to an output area ``w`` px wide, at
``s * DPI / 72 * w / width`` px. So the numbers are chosen together:

================  ==========  ==========================================================================================
``DPI``           96          1 pt = 4/3 CSS px at natural width: matplotlib's inches are CSS inches
``WIDTH_IN``      8.0         the widest figure: 768 px at natural width
``MIN_FONT_PT``   12          the smallest text of any figure: 16 px at natural width
``NARROWEST_PX``  592         a widget's width in JupyterLab 4 at 1024x768 with its file browser open (measured by
                              tests/test_lab_figures.py); 844 with the file browser closed, 1488 at 1920x1080
================  ==========  ==========================================================================================

A figure of at most ``WIDTH_IN`` inches is shown at natural size wherever the output area is at least 768 px wide
(JupyterLab at 1024x768 without its file browser, or any wider window), and at worst shrunk by 592 / 768 = 0.77,
where 12 pt is still 16 * 592 / 768 = 12.3 px. Larger screens show it at natural size: never upscaled.

Where the style applies:

- :func:`apply` sets matplotlib's rcParams (``RC``: font sizes, ``figure.dpi``); importing
  :mod:`ddpm_lite.course.plotting` (which the widgets and the notebooks import) calls it once, so the notebooks'
  own ``plt.subplots`` figures, shown by the inline backend at ``figure.dpi`` (retina off), follow it too;
- every figure function of :mod:`~ddpm_lite.course.plotting` draws at most ``WIDTH_IN`` wide and leaves font sizes
  to ``RC`` (or uses the sizes below, never a smaller one);
- widgets render through :func:`render_png`, which raises any text below ``MIN_FONT_PT`` to it (a safety net for
  a hard-coded small size), and records in the PNG (a ``ddpm-lite`` text chunk, :func:`png_info`) its dpi and its
  smallest font, which the browser test reads; :class:`~ddpm_lite.course.widgets.FigureWidget` shows the PNG at
  its natural width with ``max-width: 100%``;
- :func:`check` lists what breaks the rule in a figure (text too small at the width it is shown, text cut off at
  the figure's edge, texts on top of each other); tests/test_figure_style.py runs it on every figure function.

Slides (tools/make_figures.py, the deck) use the same figure functions and the same point sizes, drawn at a higher
resolution: the slide style changes only the dpi, so a deck figure is the notebook's figure, larger.

=====================  ======  ============================================================================
``SLIDE_DPI``          115     12 pt = 12 * 115 / 72 = 19.17 px in the PNG
``SLIDE_SCALE``        0.96    reveal.js shows its 1280x720 slide at 0.96 in a 1280x720 window (margin 0.04)
``SLIDE_MIN_TEXT_PX``  18      the smallest text on a slide at 1280x720: 12 pt shows at 19.17 * 0.96 = 18.4 px
``SLIDE_WIDTH_IN``     10.0    1150 px: a deck figure fits the 1280 px slide at natural size (never scaled)
=====================  ======  ============================================================================

:func:`slide` is the rcParams context the deck's figures are drawn in; :func:`slide_text_px` the size a font
shows at on the slide.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass

import matplotlib
import numpy as np

__all__ = ["DPI", "WIDTH_IN", "MIN_TEXT_PX", "MIN_FONT_PT", "FONT_PT", "TITLE_PT", "SUPTITLE_PT", "NARROWEST_PX",
           "SLIDE_DPI", "SLIDE_SCALE", "SLIDE_MIN_TEXT_PX", "SLIDE_WIDTH_IN",
           "RC", "apply", "slide", "slide_text_px", "DrawnText", "render_png", "png_info", "drawn_texts",
           "smallest_text_px", "check"]

DPI = 96
WIDTH_IN = 8.0
MIN_TEXT_PX = 12
MIN_FONT_PT = 12
FONT_PT = 12  # tick labels, axis labels, legends, annotations
TITLE_PT = 13  # axes titles
SUPTITLE_PT = 14  # figure titles
NARROWEST_PX = 592
SLIDE_DPI = 115  # deck figures (tools/make_figures.py): the notebook's sizes in points; 12 pt = 19.17 px
SLIDE_SCALE = 0.96  # reveal.js's scale of a 1280x720 slide in a 1280x720 window (margin 0.04)
SLIDE_MIN_TEXT_PX = 18
SLIDE_WIDTH_IN = 10.0

RC = {
    "figure.dpi": DPI, "savefig.dpi": "figure",
    "font.size": FONT_PT, "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT,
    "legend.fontsize": FONT_PT, "legend.title_fontsize": FONT_PT, "figure.labelsize": FONT_PT,
    "axes.titlesize": TITLE_PT, "figure.titlesize": SUPTITLE_PT,
    "legend.handlelength": 2.5,  # long enough to tell a dashed line from a solid one
    "savefig.pad_inches": 0.04,  # the inline backend crops to the drawing plus this: 8 in stay within 776 px
}

PNG_KEY = "ddpm-lite"  # the PNG text chunk render_png writes


def apply() -> None:
    """Set matplotlib's rcParams to the course style (``RC``). Idempotent."""
    matplotlib.rcParams.update(RC)


@contextlib.contextmanager
def slide():
    """rcParams for a deck figure: the course style (``RC``) at ``SLIDE_DPI``; restored on exit."""
    with matplotlib.rc_context({**RC, "figure.dpi": SLIDE_DPI}):
        yield


def slide_text_px(size_pt: float, dpi: float = SLIDE_DPI, ratio: float = SLIDE_SCALE) -> float:
    """How many CSS px a font of ``size_pt`` in a PNG drawn at ``dpi`` shows at when the image is displayed at
    ``ratio`` times its natural width (``SLIDE_SCALE``: natural size on a reveal.js slide at 1280x720)."""
    return size_pt * dpi / 72 * ratio


@dataclass(frozen=True)
class DrawnText:
    """One line of text as drawn: its font size in points, the string, and its box in pixels of the PNG
    (x0, y0, x1, y1; y downwards)."""

    size_pt: float
    text: str
    box: tuple[float, float, float, float]


def _record(renderer, drawn: list[DrawnText]):
    """A replacement for ``renderer.draw_text`` that records each line (and draws it)."""
    draw = renderer.draw_text

    def draw_text(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if s.strip():
            w, h, d = renderer.get_text_width_height_descent(s, prop, ismath)
            # (x, y): the left end of the baseline, y downwards; the box spans h - d above it and d below
            a = math.radians(angle)
            corners = [(0, d), (w, d), (w, d - h), (0, d - h)]
            xs = [x + u * math.cos(a) + v * math.sin(a) for u, v in corners]
            ys = [y - u * math.sin(a) + v * math.cos(a) for u, v in corners]
            drawn.append(DrawnText(float(prop.get_size_in_points()), s,
                                   (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))))
        return draw(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    return draw_text


def _draw(fig, dpi: float | None = None, after=None) -> tuple[np.ndarray, list[DrawnText]]:
    """Draw ``fig`` with Agg at ``dpi`` (default: the figure's): the RGBA pixels and every line of text drawn.
    ``after(renderer)`` runs once the figure is drawn, still at ``dpi``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    old_canvas, old_dpi = fig.canvas, fig.dpi
    canvas = old_canvas if isinstance(old_canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    drawn: list[DrawnText] = []
    try:
        if dpi is not None and dpi != old_dpi:
            fig.dpi = dpi
        renderer = canvas.get_renderer()
        renderer.clear()
        renderer.draw_text = _record(renderer, drawn)
        try:
            fig.draw(renderer)
        finally:
            del renderer.draw_text
        rgba = np.array(renderer.buffer_rgba())
        if after is not None:
            after(renderer)
    finally:
        if fig.dpi != old_dpi:
            fig.dpi = old_dpi
        if canvas is not old_canvas:
            fig.set_canvas(old_canvas)
    return rgba, drawn


def drawn_texts(fig, dpi: float | None = None) -> list[DrawnText]:
    """Every line of text ``fig`` draws (tick labels, titles, legends, annotations...), as drawn at ``dpi``."""
    return _draw(fig, dpi)[1]


def raise_small_fonts(fig, min_pt: float = MIN_FONT_PT) -> int:
    """Set every text of ``fig`` smaller than ``min_pt`` to ``min_pt``; returns how many were changed."""
    from matplotlib.text import Text

    changed = 0
    for text in fig.findobj(Text):
        if text.get_fontsize() < min_pt - 1e-9:
            text.set_fontsize(min_pt)
            changed += 1
    return changed


def render_png(fig, dpi: float | None = None, enforce: bool = True) -> tuple[bytes, dict]:
    """The figure as PNG bytes at ``dpi`` (default: the figure's), and what it shows: ``{"dpi", "width_px",
    "height_px", "min_font_pt", "min_text"}`` (the smallest font drawn and its text), also written into the PNG
    (:func:`png_info` reads it back). ``enforce`` first raises any font below ``MIN_FONT_PT`` to it."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if enforce:
        raise_small_fonts(fig)
    dpi = float(dpi if dpi is not None else fig.dpi)
    rgba, drawn = _draw(fig, dpi)
    smallest = min(drawn, key=lambda d: d.size_pt, default=None)
    info = {"dpi": dpi, "width_px": int(rgba.shape[1]), "height_px": int(rgba.shape[0]),
            "min_font_pt": smallest.size_pt if smallest else None, "min_text": smallest.text if smallest else None}
    meta = PngInfo()
    meta.add_text(PNG_KEY, json.dumps(info, ensure_ascii=True))
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="png", pnginfo=meta, dpi=(round(dpi), round(dpi)))
    return buf.getvalue(), info


def png_info(png: bytes) -> dict | None:
    """What :func:`render_png` recorded in a PNG (``None`` for a PNG it did not write)."""
    from PIL import Image

    text = Image.open(io.BytesIO(png)).text.get(PNG_KEY)
    return json.loads(text) if text else None


def shown_width(width_px: float, available_px: float = NARROWEST_PX) -> float:
    """How wide a figure ``width_px`` wide at natural size is shown in an output area ``available_px`` wide:
    natural size when it fits (never upscaled), else shrunk to the area (``max-width: 100%``)."""
    return min(float(width_px), float(available_px))


def smallest_text_px(fig, available_px: float = NARROWEST_PX, dpi: float | None = None) -> tuple[float, str]:
    """The smallest text of ``fig`` in CSS px as shown in an output area ``available_px`` wide, and that text."""
    dpi = float(dpi if dpi is not None else fig.dpi)
    rgba, drawn = _draw(fig, dpi)
    scale = shown_width(rgba.shape[1], available_px) / rgba.shape[1]
    smallest = min(drawn, key=lambda d: d.size_pt)
    return smallest.size_pt * dpi / 72 * scale, smallest.text


def _overlap(a, b, gap: float = 0.0) -> float:
    """The smaller side of the intersection of two boxes grown by ``gap`` / 2 each (0 when they do not meet)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + gap
    h = min(a[3], b[3]) - max(a[1], b[1]) + gap
    return max(0.0, min(w, h))


def _inside(a, b, tolerance: float = 1.0) -> bool:
    """Box ``a`` lies within box ``b``."""
    return a[0] >= b[0] - tolerance and a[1] >= b[1] - tolerance and a[2] <= b[2] + tolerance and \
        a[3] <= b[3] + tolerance


def _legend_boxes(fig, renderer) -> list[tuple[float, float, float, float]]:
    """The boxes of the figure's legends (its own and its axes'), in pixels, y downwards."""
    height = fig.bbox.height
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    boxes = []
    for legend in legends:
        if legend.get_visible():
            b = legend.get_window_extent(renderer)
            boxes.append((b.x0, height - b.y1, b.x1, height - b.y0))
    return boxes


def check(fig, available_px: float = NARROWEST_PX, dpi: float | None = None, min_px: float = MIN_TEXT_PX,
          max_width_in: float = WIDTH_IN, gap_px: float = 2.0) -> list[str]:
    """What breaks the course's rule in ``fig``, shown in an output area ``available_px`` wide (default: the
    narrowest, JupyterLab at 1024x768 with its file browser open): text smaller than ``min_px`` CSS px, text cut
    off at the figure's edge, lines of text drawn over (or closer than ``gap_px`` to) each other, text running
    into a legend it is not part of, a figure wider than ``max_width_in``. An empty list when the figure is fine."""
    dpi = float(dpi if dpi is not None else fig.dpi)
    legends = []
    rgba, drawn = _draw(fig, dpi, after=lambda renderer: legends.extend(_legend_boxes(fig, renderer)))
    height, width = rgba.shape[:2]
    scale = shown_width(width, available_px) / width
    problems = []
    if fig.get_figwidth() > max_width_in + 1e-6:
        problems.append(f"the figure is {fig.get_figwidth():.2f} in wide, more than {max_width_in} in")
    for d in drawn:
        px = d.size_pt * dpi / 72 * scale
        if px < min_px - 1e-6:
            problems.append(f"{d.text!r}: {d.size_pt:g} pt shows at {px:.1f} px, under {min_px} px")
        x0, y0, x1, y1 = d.box
        if x0 < -2 or y0 < -2 or x1 > width + 2 or y1 > height + 2:
            problems.append(f"{d.text!r} is cut off at the figure's edge")
    for i, a in enumerate(drawn):
        for b in drawn[i + 1:]:
            if _overlap(a.box, b.box, gap_px) > 0:
                problems.append(f"{a.text!r} and {b.text!r} are drawn over each other")
        for box in legends:
            if _overlap(a.box, box) > 1 and not _inside(a.box, box):
                problems.append(f"{a.text!r} runs into a legend")
    return problems
