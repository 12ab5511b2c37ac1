"""The slide deck: slides/deck.md built by tools/build_deck.py and rendered offline in headless Chromium.

The browser tests need Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), Playwright for Python (used only to drive
that Chromium: never `playwright install`) and reveal.js + KaTeX in node_modules/ (the build runs `npm ci` when npm
is there). Where one is missing they skip, saying which. Screenshots of a few slides go to $SCREENSHOT_DIR
(default build/screenshots/, git-ignored).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DECK = ROOT / "slides" / "deck.md"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "build" / "screenshots"))
REPO_URL = "https://github.com/ddpm-lite/ddpm_lite/blob/main/notebooks/"
COLAB_URL = "https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/"
NOTEBOOKS = ["01_forward_noising", "02_reverse_process", "03_loss", "04_learned_variance", "05_cosine_schedule",
             "06_importance_sampling", "07_unet", "08_classifier_guidance", "09_fid",
             "10_fast_sampling_and_likelihood", "11_beyond_images"]
# slides to photograph, by the text of their heading
SCREENSHOT_SLIDES = ["Diffusion models, step by step", "In symbols: DDPM eqs. 1", "Predict the noise",
                     "The cosine schedule", "Classifier guidance (Algorithm 1)", "Fréchet Inception distance"]

sys.path.insert(0, str(ROOT / "tools"))
import build_deck  # noqa: E402
import chromium  # noqa: E402  (tests/chromium.py)


def _missing() -> str | None:
    if chromium.missing() is not None:
        return chromium.missing()
    if build_deck.installed_versions() != build_deck.locked_versions() and shutil.which("npm") is None:
        return "reveal.js/KaTeX are not in node_modules/ and npm is missing (install Node.js, then `npm ci`)"
    return None


browser_test = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


# ------------------------------------------------------------------------------------------ static checks
def _slides(md: str) -> list[str]:
    return [s for section in re.split(r"^\r?\n---\r?\n$", md, flags=re.M)
            for s in re.split(r"^\r?\n--\r?\n$", section, flags=re.M)]


def test_notebook_links_pair_with_colab_badges():
    """A slide that links a notebook also links its Colab badge, and only notebooks of the series are named."""
    md = DECK.read_text(encoding="utf-8")
    linked = set()
    for slide in _slides(md):
        notebooks = set(re.findall(re.escape(REPO_URL) + r"([\w]+)\.ipynb", slide))
        colab = set(re.findall(re.escape(COLAB_URL) + r"([\w]+)\.ipynb", slide))
        heading = next((line for line in slide.splitlines() if line.startswith("#")), slide[:40])
        if "| notebook |" not in slide:  # the series map links Colab only
            assert notebooks == colab, f"slide {heading!r}: notebook links {notebooks} but Colab badges {colab}"
        for name in notebooks:
            assert f">notebooks/{name}.ipynb</a>" in slide, f"slide {heading!r}: link text should be the path"
        linked |= notebooks | colab
    assert linked <= set(NOTEBOOKS), f"unknown notebooks: {sorted(linked - set(NOTEBOOKS))}"
    assert linked == set(NOTEBOOKS), f"notebooks without a slide: {sorted(set(NOTEBOOKS) - linked)}"


def test_math_is_protected_from_markdown():
    """Every $...$ / $$...$$ ends up inside backticks (marked would eat \\, \\| and _x_), none inside raw HTML."""
    md = DECK.read_text(encoding="utf-8")
    protected = build_deck.protect_math(md)
    outside = re.sub(r"`[^`]*`", "", protected)
    assert "$" not in outside, f"unprotected dollar sign near: {outside[outside.index('$') - 60:][:120]!r}"
    for line in md.splitlines():  # a raw HTML line (starting with a tag) keeps its backticks: no math there
        if re.match(r"\s*<(p|div|section|span|table)\b", line):
            assert "$" not in line, f"math inside a raw HTML line: {line[:100]!r}"


# ------------------------------------------------------------------------------------------ browser checks
@pytest.fixture(scope="module")
def deck_html(tmp_path_factory) -> Path:
    """A fresh build of the deck (HTML only) in a temporary folder."""
    build_deck.ensure_node_modules()
    out = tmp_path_factory.mktemp("deck") / "index.html"
    return build_deck.build_html(DECK, out)


def _open(browser, url: str):
    """A page with every request other than file: and data: aborted and recorded, and errors collected."""
    page = browser.new_page(viewport={"width": build_deck.SLIDE_WIDTH, "height": build_deck.SLIDE_HEIGHT})
    page.blocked, page.errors = [], []

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: page.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_selector("body[data-deck-ready]", timeout=60_000)
    page.evaluate("document.fonts.ready")
    return page


CHECK_SLIDE = """() => {
  const s = Reveal.getCurrentSlide();
  const imgs = [...s.querySelectorAll('img')];
  return {
    title: (s.querySelector('h1, h2, h3') || {}).textContent || '',
    text: s.innerText,
    katex: s.querySelectorAll('.katex').length,
    katexErrors: [...s.querySelectorAll('.katex-error')].map(e => e.getAttribute('title') || e.textContent),
    brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    images: imgs.length,
    overflow: s.scrollHeight - Reveal.getConfig().height,
    tooWide: [...s.querySelectorAll('.katex-display > .katex, .katex .base, img, table, pre, p, li')].filter(e => {
      const r = e.getBoundingClientRect(), box = s.getBoundingClientRect();
      return r.width > 0 && (r.right > box.right + 2 || r.left < box.left - 2 || e.scrollWidth > e.clientWidth + 2);
    }).map(e => e.textContent.slice(0, 40) || e.alt),
  };
}"""


@browser_test
def test_deck_renders_offline(deck_html, browser):
    """Visit every slide: math typeset by KaTeX without errors, no raw $$, every image loaded, nothing overflowing,
    no console errors and no request leaving file:/data:."""
    t0 = time.perf_counter()
    page = _open(browser, deck_html.as_uri())
    page.evaluate("Reveal.configure({transition: 'none', backgroundTransition: 'none'})")
    indices = page.evaluate("() => Reveal.getSlides().map(s => Reveal.getIndices(s))")
    SHOTS.mkdir(parents=True, exist_ok=True)
    results, shots = [], []
    for i in indices:
        page.evaluate(f"Reveal.slide({i['h']}, {i.get('v') or 0})")
        page.wait_for_timeout(50)
        r = page.evaluate(CHECK_SLIDE)
        r["where"] = f"{i['h']}/{i.get('v') or 0} {r['title']!r}"
        results.append(r)
        wanted = next((w for w in SCREENSHOT_SLIDES if r["title"].startswith(w)), None)
        if wanted:
            path = SHOTS / f"slide_{i['h']:02d}_{i.get('v') or 0}.png"
            page.screenshot(path=str(path))
            shots.append(path)
    page.close()

    assert len(results) >= 30, f"only {len(results)} slides: did the --- / -- separators break?"
    assert len({i["h"] for i in indices}) >= 10, "too few sections"
    problems = []
    for r in results:
        if r["katexErrors"]:
            problems.append(f"{r['where']}: KaTeX errors {r['katexErrors']}")
        if "$$" in r["text"] or re.search(r"\$[^$\s][^$]*\$", r["text"]):
            problems.append(f"{r['where']}: raw TeX in the visible text")
        if r["brokenImages"]:
            problems.append(f"{r['where']}: images failed to load {r['brokenImages']}")
        if r["overflow"] > 4:
            problems.append(f"{r['where']}: content {r['overflow']} px taller than the slide")
        if r["tooWide"]:
            problems.append(f"{r['where']}: wider than the slide: {r['tooWide']}")
    assert not problems, "\n".join(problems)
    assert sum(r["katex"] for r in results) >= 60, "suspiciously little math was typeset"
    assert sum(r["images"] for r in results) >= 12, "suspiciously few images"
    assert not page.errors, page.errors
    assert not page.blocked, f"requests outside file:/data: {page.blocked}"
    assert len(shots) == len(SCREENSHOT_SLIDES), f"screenshots taken: {[p.name for p in shots]}"
    print(f"{len(results)} slides checked in {time.perf_counter() - t0:.1f} s; screenshots in {SHOTS}")


@browser_test
def test_speaker_notes_are_hidden_from_slides(deck_html, browser):
    """Note: blocks become <aside class="notes">, not visible slide text."""
    page = _open(browser, deck_html.as_uri())
    notes = page.evaluate("document.querySelectorAll('.slides aside.notes').length")
    visible = page.evaluate("[...document.querySelectorAll('.slides section')].some(s => /^Note:/m.test(s.innerText))")
    page.close()
    assert notes >= 10 and not visible, (notes, visible)


@browser_test
def test_pdf_export_has_one_page_per_slide(deck_html, browser, tmp_path):
    """The ?print-pdf export (what `make slides` writes to slides/dist/deck.pdf)."""
    pdf = build_deck.export_pdf(deck_html, tmp_path / "deck.pdf", browser=browser)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    slides = len(_slides(DECK.read_text(encoding="utf-8")))
    assert pages == slides, f"{pages} PDF pages for {slides} slides"
