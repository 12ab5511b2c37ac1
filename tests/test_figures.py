"""The deck's figures: every image slides/deck.md shows is in assets/, was written by tools/make_figures.py (its sha256
is in assets/figures.json, next to the function that drew it), fits the slide style, and drawing it again gives the
same figure.

"The same figure" is what stays the same across machines (tools/make_figures.py, "Determinism", says why bytes need
not): the same size, the same texts (every title, label and number drawn, ``texts_sha256``), and pixels equal up to
floating-point noise (at most 0.5% of them off by more than 16 grey levels, a mean difference under one level). With
other versions of matplotlib, numpy, torch, scipy or Pillow than the manifest's, only the size and the texts are
compared (anti-aliasing and PNG encoding may change).

Which figures are drawn again: every figure whose drawing takes under ``QUICK_SECONDS`` of CPU
(``FigureSpec.seconds``, measured with one torch thread on a shared x86-64 machine), 13 of the 15, together about
30 s of CPU (a minute or two of wall time on a busy 2-core machine), the two that evaluate the network at all 1000
steps (``loss_terms``, ``importance_sampling``) included: they share one ``calc_bpd_loop``. Left out: ``guidance``
(26 s of CPU, 1,800 guided samples with the classifier's gradient at every step; its settings are compared with
notebook 08's in tests/test_slides.py) and ``fid_steps`` (about 6 min of CPU: 48 sampling runs of 360 digits).
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
DECK = ROOT / "slides" / "deck.md"
sys.path.insert(0, str(ROOT / "tools"))
import build_deck  # noqa: E402
import make_figures  # noqa: E402

from ddpm_lite.course import style  # noqa: E402

QUICK_SECONDS = 15.0
REGENERATED = sorted(name for name, spec in make_figures.FIGURES.items() if spec.seconds < QUICK_SECONDS)
LEFT_OUT = sorted(set(make_figures.FIGURES) - set(REGENERATED))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = ASSETS / make_figures.MANIFEST
    assert path.exists(), "assets/figures.json is missing: run `make figures`"
    return json.loads(path.read_text())


def test_deck_images_exist_and_come_from_make_figures(manifest):
    refs = build_deck.image_refs(DECK.read_text(encoding="utf-8"))
    assert refs, "the deck shows no images?"
    for ref in refs:
        path = (DECK.parent / ref).resolve()
        assert path.parent == ASSETS, f"{ref}: deck images must live in assets/"
        assert path.is_file(), f"{ref} does not exist: run `make figures`"
        entry = manifest["figures"].get(path.name)
        assert entry is not None, f"{path.name} is not in assets/figures.json: not made by tools/make_figures.py"
        assert _sha(path) == entry["sha256"], f"{path.name} differs from what `make figures` wrote: rerun it"


def test_manifest_matches_files_and_functions(manifest):
    files = manifest["figures"]
    assert set(files) == {spec.file for spec in make_figures.FIGURES.values()}, \
        "manifest and registered figures disagree: run `make figures`"
    for name, entry in files.items():
        assert (ASSETS / name).is_file(), f"{name} is in the manifest but not in assets/"
        assert _sha(ASSETS / name) == entry["sha256"], f"{name} changed since `make figures`"
        func = getattr(make_figures, entry["function"], None)
        assert callable(func), f"{name}: make_figures.{entry['function']} does not exist"
        assert make_figures.FIGURES[name.removesuffix(".png")].func is func


def test_every_deck_figure_is_shown_and_no_stray_images(manifest):
    shown = {Path(ref).name for ref in build_deck.image_refs(DECK.read_text(encoding="utf-8"))}
    assert shown == set(manifest["figures"]), f"figures the deck does not show: {set(manifest['figures']) - shown}"
    stray = {p.name for p in ASSETS.glob("*.png")} - set(manifest["figures"])
    assert not stray, f"images in assets/ not made by tools/make_figures.py: {sorted(stray)}"


def test_figures_fit_the_slide_style(manifest):
    """What the manifest and each PNG record: drawn at the slide dpi, at most 10 in wide, smallest font at least 18 px
    on a 1280x720 slide when shown at natural size (tests/test_slides.py measures the size actually shown)."""
    for name, entry in manifest["figures"].items():
        info = style.png_info((ASSETS / name).read_bytes())
        assert info is not None, f"{name} has no ddpm-lite record: not written by style.render_png"
        assert info["dpi"] == entry["dpi"] == style.SLIDE_DPI, f"{name}: drawn at {info['dpi']} dpi"
        assert info["min_font_pt"] == entry["min_font_pt"] and info["width_px"] == entry["width_px"]
        assert entry["width_px"] <= style.SLIDE_WIDTH_IN * style.SLIDE_DPI + 1, f"{name} is {entry['width_px']} px wide"
        px = style.slide_text_px(entry["min_font_pt"], entry["dpi"])
        assert px >= style.SLIDE_MIN_TEXT_PX, f"{name}: {entry['min_text']!r} shows at {px:.1f} px"


def test_quick_figures_are_most_of_them():
    """The regenerated list is what the module docstring says: all but the two slow ones."""
    assert LEFT_OUT == ["fid_steps", "guidance"], LEFT_OUT


@pytest.mark.parametrize("name", REGENERATED)
def test_figure_is_reproducible(name, manifest, tmp_path):
    """Drawing a figure again gives the figure in assets/: same size and texts, pixels equal up to rounding noise."""
    path, entry = make_figures.render(name, tmp_path)
    entry.pop("_seconds")
    recorded = manifest["figures"][f"{name}.png"]
    assert (entry["width_px"], entry["height_px"]) == (recorded["width_px"], recorded["height_px"]), \
        f"{name}: {entry['width_px']}x{entry['height_px']} px, assets/ has " \
        f"{recorded['width_px']}x{recorded['height_px']}: run `make figures`"
    if entry["texts_sha256"] != recorded["texts_sha256"]:
        fig = make_figures.draw(name)
        texts = [d.text for d in style.drawn_texts(fig, make_figures.DPI)]
        pytest.fail(f"{name}: its texts changed (package code or data changed?): run `make figures`. Now: {texts}")
    if manifest.get("versions") != make_figures.versions():
        return  # other library versions: anti-aliasing and encoding may differ, texts and size are what we compare
    new, old = _pixels(path.read_bytes()), _pixels((ASSETS / f"{name}.png").read_bytes())
    diff = np.abs(new - old).max(axis=2)
    off = float((diff > 16).mean())
    assert off <= 0.005 and diff.mean() < 1.0, \
        f"{name}: {off:.2%} of the pixels differ by more than 16 levels (mean {diff.mean():.2f}): run `make figures`"
