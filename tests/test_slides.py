"""The slide deck: slides/deck.md built by tools/build_deck.py and rendered offline in headless Chromium.

Static checks: the notebook lines (``▶ 05 §5 · ScheduleExplorer``) name sections and widgets that exist, their links
come from ``ddpm_lite.runtime.REPO_URL``, the slides that have a notebook section say so, our own samples come
first, and the deck's figures use the settings the notebooks give their widgets (read out of notebooks/scripts).

The browser checks need Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), Playwright for Python (used only to drive
that Chromium: never `playwright install`) and reveal.js + KaTeX in node_modules/ (the build runs `npm ci` when npm
is there). Where one is missing they skip, saying which. At 1280x720 they visit every slide, check its text and its
figures' text (at least 18 px as shown), and write a screenshot of each to $SCREENSHOT_DIR (default
build/screenshots/, git-ignored).
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DECK = ROOT / "slides" / "deck.md"
ASSETS = ROOT / "assets"
SCRIPTS = ROOT / "notebooks" / "scripts"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "build" / "screenshots"))
NOTEBOOKS = ["01_forward_noising", "02_reverse_process", "03_loss", "04_learned_variance", "05_cosine_schedule",
             "06_importance_sampling", "07_unet", "08_classifier_guidance", "09_fid",
             "10_fast_sampling_and_likelihood", "11_beyond_images"]
# slides whose idea has a notebook section, by the start of their heading -> the notebooks their ▶ lines must name
REQUIRED_LIVE = {
    "What we will build": {"01"}, "Where diffusion fits": {"01"}, "The idea": {"01"}, "Can we walk back?": {"02"},
    "The forward process": {"01"}, "The reverse process": {"02"}, "The loss": {"03"},
    "Predict the noise": {"03"}, "Where the bound puts its weight": {"03"}, "Training and sampling": {"02"},
    "Log-likelihood": {"10"}, "Learned variance": {"04"}, "The hybrid loss": {"04"}, "The cosine schedule": {"05"},
    "Linear against cosine": {"05"}, "Importance sampling": {"06"}, "Respacing": {"10"}, "A better U-Net": {"07"},
    "The U-Net we train": {"07"}, "Class conditioning": {"07", "08"}, "Classifier guidance": {"08"},
    "Guidance scale": {"08"}, "Fréchet Inception distance": {"09"}, "Quality against sampling steps": {"10"},
    "No single number": {"09"}, "The elephant in the room": {"10"}, "Beyond images": {"11"},
}

sys.path.insert(0, str(ROOT / "tools"))
import build_deck  # noqa: E402
import chromium  # noqa: E402  (tests/chromium.py)
import make_figures  # noqa: E402

from ddpm_lite.runtime import REPO_URL  # noqa: E402


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


def _heading(slide: str) -> str:
    return next((line.lstrip("# ").strip() for line in slide.splitlines() if line.startswith("#")), slide[:40])


def _live_lines(slide: str) -> list[tuple[str, str]]:
    """The slide's ``▶ NN where`` lines (before its notes) as (number, where)."""
    body = slide.split("\nNote:")[0]
    return [m.groups() for m in re.finditer(r"^▶ (\d\d)\b ?(.*)$", body, flags=re.M)]


def _sections(name: str) -> dict[str, str]:
    """A notebook script's markdown headings: {"5": "Explore", "What you will build": ...} (numbered ones by
    number, the others by title), and each one's text up to the next heading of its level or higher."""
    text = (SCRIPTS / f"{name}.py").read_text(encoding="utf-8")
    heads = [(m.start(), m.group(1), m.group(2)) for m in re.finditer(r"^# (##+) (.+)$", text, flags=re.M)]
    out = {}
    for i, (start, level, title) in enumerate(heads):
        if len(level) != 2:
            continue
        end = next((s for s, lv, _ in heads[i + 1:] if len(lv) <= 2), len(text))
        m = re.match(r"(\d+)\. (.+)", title)
        out[m.group(1) if m else title.strip()] = text[start:end]
    return out


def _parse_where(where: str) -> tuple[list[str], str]:
    """'§4–6 · p_sample (exercise), SamplingTrajectoryExplorer' -> (['4', '5', '6'], the rest);
    '· What you will build (...)' -> ([], the rest)."""
    m = re.match(r"§(\d+)(?:–(\d+))?\s*(.*)$", where.strip())
    if m:
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        return [str(k) for k in range(lo, hi + 1)], m.group(3)
    return [], where.strip()


def test_live_lines_name_real_sections_and_widgets():
    """Every ▶ line names a notebook of the series, sections it has (§N, or an unnumbered section by its title)
    and only widgets or exercises that those sections use."""
    for slide in _slides(DECK.read_text(encoding="utf-8")):
        for number, where in _live_lines(slide):
            name = build_deck.notebook_name(number)
            assert name in NOTEBOOKS, f"{_heading(slide)!r}: ▶ {number} is not a notebook of the series"
            sections = _sections(name)
            numbers, rest = _parse_where(where)
            for k in numbers:
                assert k in sections, f"{_heading(slide)!r}: {name} has no section {k} ({sorted(sections)})"
            if not numbers:
                title = rest.lstrip("· ").split(" (")[0]
                assert title in sections, f"{_heading(slide)!r}: {name} has no section titled {title!r}"
                text = sections[title]
            else:
                text = "".join(sections[k] for k in numbers)
            text += "".join(sections.get(k, "") for k in re.findall(r"§(\d+)", rest))  # "... Explorer in §6"
            for word in re.findall(r"\b([A-Z][a-z]+(?:[A-Z][a-z]+)+|[a-z]+(?:_[a-z0-9]+)+)\b", rest):
                assert word in text, f"{_heading(slide)!r}: ▶ {number} {where!r} names {word}, which those " \
                                     f"sections of {name} do not use"


def test_slides_with_a_notebook_section_say_where():
    """The slides whose idea has a notebook section carry a ▶ line for that notebook; every slide with a figure
    has one, naming the figure's own counterpart (make_figures' ``live``)."""
    slides = _slides(DECK.read_text(encoding="utf-8"))
    seen = set()
    for slide in slides:
        heading = _heading(slide)
        lines = _live_lines(slide)
        named = {number for number, _ in lines}
        for start, wanted in REQUIRED_LIVE.items():
            if heading.startswith(start):
                seen.add(start)
                assert wanted <= named, f"{heading!r}: no ▶ line for notebook(s) {sorted(wanted - named)}"
        for ref in build_deck.image_refs(slide):
            spec = make_figures.FIGURES[Path(ref).stem]
            assert lines, f"{heading!r} shows {Path(ref).name} but says nowhere where it lives"
            assert any(f"{n} {w}".startswith(spec.live) or f"{n} {w}".startswith(spec.live.split(",")[0])
                       for n, w in lines), f"{heading!r}: {Path(ref).name} comes from {spec.live!r}, not in {lines}"
    assert seen == set(REQUIRED_LIVE), f"slides not found: {sorted(set(REQUIRED_LIVE) - seen)}"


def test_links_come_from_repo_url():
    """The deck writes no repository address of its own: ▶ lines and colab:/github: targets become links built from
    ddpm_lite.runtime.REPO_URL, each notebook link with its Colab badge, and every notebook is linked."""
    md = DECK.read_text(encoding="utf-8")
    assert "github.com/ddpm-lite" not in md and "colab.research.google.com" not in md, \
        "write ▶ NN lines or colab:NAME links: the URLs come from ddpm_lite.runtime.REPO_URL"
    built = build_deck.live_links(md)
    github = REPO_URL + "/blob/main/notebooks/"
    colab = REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/")
    colab += "/blob/main/notebooks/"
    linked = set()
    for slide in _slides(built):
        notebooks = set(re.findall(re.escape(github) + r"(\w+)\.ipynb", slide))
        badges = set(re.findall(re.escape(colab) + r"(\w+)\.ipynb", slide))
        if "| notebook |" not in slide:  # the series map links Colab only
            assert notebooks == badges, f"{_heading(slide)!r}: notebook links {notebooks} but Colab badges {badges}"
        for name in notebooks:
            assert f">notebooks/{name}.ipynb</a>" in slide, f"{_heading(slide)!r}: link text should be the path"
        linked |= notebooks | badges
    assert linked == set(NOTEBOOKS), f"notebooks without a link: {sorted(set(NOTEBOOKS) - linked)}"


def test_our_samples_come_first():
    """The talk opens with samples: ours, on slide 2 or 3 (not near the end)."""
    slides = _slides(DECK.read_text(encoding="utf-8"))
    at = [i for i, s in enumerate(slides) if "assets/samples.png" in s]
    assert at and at[0] <= 2, f"our samples are on slide {at[0] + 1 if at else None}, not 2 or 3"


def test_math_is_protected_from_markdown():
    """Every $...$ / $$...$$ ends up inside backticks (marked would eat \\, \\| and _x_), none inside raw HTML."""
    md = build_deck.live_links(DECK.read_text(encoding="utf-8"))
    protected = build_deck.protect_math(md)
    outside = re.sub(r"`[^`]*`", "", protected)
    assert "$" not in outside, f"unprotected dollar sign near: {outside[outside.index('$') - 60:][:120]!r}"
    for line in md.splitlines():  # a raw HTML line (starting with a tag) keeps its backticks: no math there
        if re.match(r"\s*<(p|div|section|span|table)\b", line):
            assert "$" not in line, f"math inside a raw HTML line: {line[:100]!r}"


# ------------------------------------------------------------------------------------------ the notebooks' settings
class Unresolved(Exception):
    pass


class NotebookScript:
    """The module-level code of notebooks/scripts/NAME.py, evaluated lazily: ``value(name, before=line)`` computes
    what ``name`` holds just before that line in a full run (``pick(full, fast)`` -> ``full``, the CPU), running only
    the imports and the assignments and definitions it needs."""

    def __init__(self, name: str):
        self.tree = ast.parse((SCRIPTS / f"{name}.py").read_text(encoding="utf-8"))
        self.ns = {"__name__": f"notebook_{name}"}
        self.bindings: dict[str, list] = {}
        for stmt in self.tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) and not (
                    isinstance(stmt, ast.ImportFrom) and stmt.module == "IPython"):
                exec(compile(ast.Module([stmt], []), name, "exec"), self.ns)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        self.bindings.setdefault(target.id, []).append((stmt.lineno, stmt.value, None))
                    elif isinstance(target, ast.Tuple):
                        for i, elt in enumerate(target.elts):
                            if isinstance(elt, ast.Name):
                                self.bindings.setdefault(elt.id, []).append((stmt.lineno, stmt.value, i))
            elif isinstance(stmt, ast.FunctionDef):
                self.bindings.setdefault(stmt.name, []).append((stmt.lineno, stmt, "def"))
        self.ns.update(pick=lambda full, fast: full, device=torch.device("cpu"))
        self.cache: dict = {}

    def value(self, name: str, before: int = 10 ** 9):
        if name in ("pick", "device") or (name in self.ns and name not in self.bindings):
            return self.ns[name]
        found = [b for b in self.bindings.get(name, []) if b[0] < before]
        if not found:
            raise Unresolved(f"{name} is not bound before line {before}")
        lineno, node, index = found[-1]
        key = (name, lineno)
        if key not in self.cache:
            if index == "def":
                ns = {**self.ns, **self._names(node, lineno)}
                exec(compile(ast.Module([node], []), "notebook", "exec"), ns)
                self.cache[key] = ns[name]
            else:
                value = self.eval(node, lineno)
                self.cache[key] = value if index is None else value[index]
        return self.cache[key]

    def _names(self, node, lineno: int) -> dict:
        """The module-level names ``node`` reads, resolved as they are before ``lineno``."""
        own = {a.arg for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.Lambda)) for a in n.args.args}
        own |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - own
        out = {}
        for n in names:
            if n in self.bindings or n in self.ns:
                out[n] = self.value(n, lineno)
        return out

    def eval(self, node, lineno: int):
        return eval(compile(ast.Expression(node), "notebook", "eval"), {**self.ns, **self._names(node, lineno)})

    def call(self, func: str):
        """The first module-level call of ``func`` (a widget class): {parameter: value node} bound to its signature,
        and the line it is on."""
        for stmt in self.tree.body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == func:
                    cls = self.value(func)
                    bound = inspect.signature(cls).bind_partial(*node.args, **{k.arg: k.value for k in node.keywords})
                    return bound.arguments, stmt.lineno
        raise AssertionError(f"the notebook never calls {func}")

    def argument(self, func: str, parameter: str):
        """What the notebook passes ``func`` as ``parameter`` (its default when it passes nothing)."""
        arguments, lineno = self.call(func)
        if parameter not in arguments:
            return inspect.signature(self.value(func)).parameters[parameter].default
        return self.eval(arguments[parameter], lineno)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.allclose(a, b, rtol=1e-5, atol=1e-7)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b)
    return a == b


@pytest.fixture(scope="module")
def notebooks():
    return {}


def _nb(notebooks, name) -> NotebookScript:
    if name not in notebooks:
        notebooks[name] = NotebookScript(name)
    return notebooks[name]


def test_opener_matches_notebook_01(notebooks):
    """Slide 2's left half is notebook 01's first figure: the same model, respacing, seed and columns."""
    nb, s = _nb(notebooks, "01_forward_noising"), make_figures.LIVE["samples"].settings
    assert nb.value("shown") == s["shown"]
    assert nb.value("generator").initial_seed() == s["seed"]
    assert nb.value("fast").num_timesteps == s["steps"]
    assert nb.value("noise").shape == (8, 1, 8, 8)
    frames = make_figures.opener_frames()  # the same frames, drawn again here, as the notebook draws them
    assert len(frames) == s["steps"] + 1 and frames[0].shape == (8, 1, 8, 8)


@pytest.mark.parametrize("figure, parameters", [
    ("forward_chain", ["num_timesteps", "t", "digit", "schedule", "seed"]),
    ("schedules", ["num_timesteps", "t", "image", "n_cols", "seed"]),
    ("unet", ["preset", "model_channels", "num_res_blocks"]),
    ("learned_variance", ["v", "t", "diffusion", "learned"]),
    ("audio_forward", ["x0", "t", "sample_rate", "seed", "ms"]),
    ("guidance", ["label", "scale"]),
])
def test_deck_figure_is_the_widget_as_the_notebook_opens_it(figure, parameters, notebooks):
    """The deck's figure comes from the widget built with what the notebook gives it (each argument evaluated in the
    notebook's own code, full mode), so switching from the slide to the widget shows the same picture."""
    live = make_figures.LIVE[figure]
    nb = _nb(notebooks, live.notebook)
    if figure == "guidance":  # sampling 1,800 guided digits again is slow: compare the settings that make them
        s = live.settings
        assert nb.argument(live.call, "label") == s["label"]
        assert nb.argument(live.call, "scale") == s["scale"]
        _, lineno = nb.call(live.call)
        assert nb.value("scales", lineno) == s["scales"]
        assert len(nb.value("labels", lineno)) == s["samples"]
        assert nb.value("sampler", lineno).num_timesteps == s["steps"]
        return
    widget = {"forward_chain": make_figures.forward_explorer, "schedules": make_figures.schedule_explorer,
              "unet": make_figures.unet_explorer, "learned_variance": make_figures.variance_explorer,
              "audio_forward": make_figures.waveform_explorer}[figure]()
    ours = {"num_timesteps": lambda w: len(w.diffusions["linear"].betas), "t": lambda w: w.t.value,
            "digit": lambda w: w.images["digit"], "schedule": lambda w: w.schedule.value, "seed": lambda w: w.seed,
            "image": lambda w: w.image_choice.value, "n_cols": lambda w: w.n_cols, "preset": lambda w: w.preset.value,
            "model_channels": lambda w: w.model_channels.value, "num_res_blocks": lambda w: w.num_res_blocks.value,
            "v": lambda w: w.v.value, "diffusion": lambda w: w.diffusion.betas, "learned": lambda w: w.learned,
            "x0": lambda w: w.x0.reshape(-1), "sample_rate": lambda w: w.sample_rate, "ms": lambda w: w.ms}
    for parameter in parameters:
        theirs = nb.argument(live.call, parameter)
        if parameter == "diffusion":
            theirs = theirs.betas
        elif parameter == "x0":
            theirs = torch.as_tensor(theirs).reshape(-1)
        elif parameter == "model_channels" and theirs is None:
            continue  # the preset's own, as ours
        elif parameter == "num_res_blocks" and theirs is None:
            continue
        mine = ours[parameter](widget)
        if parameter == "learned":
            assert _same(mine[0], theirs[0]) and _same(mine[1], theirs[1]), f"{figure}: learned v(t) differs"
        else:
            assert _same(mine, theirs), f"{figure}: {parameter} is {mine!r} here, {theirs!r} in {live.notebook}"


def test_forward_chain_column_is_the_widget_view():
    """The forward-chain figure's column at the explorer's t shows exactly the explorer's digit and photo."""
    explorer = make_figures.forward_explorer()
    fig = make_figures.draw("forward_chain")
    column = [t for t in range(7) if fig.axes[t].get_title().startswith(f"t = {explorer.t.value}")]
    assert column, "no column at the explorer's t"
    ncols = 7
    for row, name in enumerate(explorer.images):
        ours = fig.axes[row * ncols + column[0]].images[0].get_array()
        theirs = next(ax for ax in explorer.fig.axes if ax.get_title() == name).images[0].get_array()
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), f"{name} at t = {explorer.t.value} differs"


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
  const box = s.getBoundingClientRect();
  const imgs = [...s.querySelectorAll('img')];
  const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const visible = e => { const r = e.getBoundingClientRect(); const st = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none' && st.opacity !== '0'; };
  // the smallest text: every element with a text node of its own, outside KaTeX (whose sub- and superscripts are
  // typeset smaller on purpose), at its computed size times the slide's scale
  const texts = [];
  for (const e of s.querySelectorAll('*')) {
    if (e.closest('.katex, aside.notes') || !visible(e)) continue;
    const own = [...e.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim())
      .map(n => n.textContent.trim()).join(' ');
    if (own) texts.push([parseFloat(getComputedStyle(e).fontSize) * Reveal.getScale(), own.slice(0, 40)]);
  }
  const controls = [...document.querySelectorAll('.reveal .controls button')].filter(b =>
    b.classList.contains('enabled') && visible(b)).map(rect);
  const number = document.querySelector('.reveal .slide-number');
  return {
    title: (s.querySelector('h1, h2, h3') || {}).textContent || '',
    text: s.innerText,
    katex: s.querySelectorAll('.katex').length,
    katexErrors: [...s.querySelectorAll('.katex-error')].map(e => e.getAttribute('title') || e.textContent),
    brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    images: imgs.map(i => ({src: i.getAttribute('data-file') || '', alt: i.alt, natural: i.naturalWidth,
                            shown: i.getBoundingClientRect().width, rect: rect(i)})),
    overflow: s.scrollHeight - Reveal.getConfig().height,
    tooWide: [...s.querySelectorAll('.katex-display > .katex, .katex .base, img, table, pre, p, li')].filter(e => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && (r.right > box.right + 2 || r.left < box.left - 2 || e.scrollWidth > e.clientWidth + 2);
    }).map(e => e.textContent.slice(0, 40) || e.alt),
    texts: texts,
    // what is drawn: images, and the boxes of each line of text (a Range's client rects, not the full-width block)
    content: [...s.querySelectorAll('img, h1, h2, h3, p, li, td, th, .katex-display')].filter(e =>
      visible(e) && (e.tagName === 'IMG' || e.textContent.trim())).flatMap(e => {
        if (e.tagName === 'IMG') return [['IMG ' + e.alt.slice(0, 30), rect(e)]];
        const range = document.createRange(); range.selectNodeContents(e);
        return [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0).map(r =>
          [e.tagName + ' ' + e.textContent.trim().slice(0, 30), [r.left, r.top, r.right, r.bottom]]); }),
    controls: controls,
    number: number && visible(number) ? rect(number) : null,
  };
}"""


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5


@pytest.fixture(scope="module")
def slides_seen(deck_html, browser):
    """Every slide visited at 1280x720: what CHECK_SLIDE measures, and a screenshot of each in SHOTS."""
    t0 = time.perf_counter()
    page = _open(browser, deck_html.as_uri())
    page.evaluate("Reveal.configure({transition: 'none', backgroundTransition: 'none'})")
    indices = page.evaluate("() => Reveal.getSlides().map(s => Reveal.getIndices(s))")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("deck_*.png"):
        old.unlink()
    results = []
    for n, i in enumerate(indices, start=1):
        page.evaluate(f"Reveal.slide({i['h']}, {i.get('v') or 0})")
        page.wait_for_timeout(60)
        r = page.evaluate(CHECK_SLIDE)
        r["n"], r["where"] = n, f"slide {n} ({i['h']}/{i.get('v') or 0}) {r['title']!r}"
        page.screenshot(path=str(SHOTS / f"deck_{n:02d}.png"))
        results.append(r)
    page.close()
    print(f"{len(results)} slides checked in {time.perf_counter() - t0:.1f} s; screenshots in {SHOTS}")
    return {"results": results, "indices": indices, "errors": page.errors, "blocked": page.blocked}


@browser_test
def test_deck_renders_offline(slides_seen):
    """Visit every slide: math typeset by KaTeX without errors, no raw $$, every image loaded, nothing overflowing,
    no console errors and no request leaving file:/data:; a screenshot of every slide."""
    results, indices = slides_seen["results"], slides_seen["indices"]
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
    assert sum(len(r["images"]) for r in results) >= 14, "suspiciously few images"
    assert not slides_seen["errors"], slides_seen["errors"]
    assert not slides_seen["blocked"], f"requests outside file:/data: {slides_seen['blocked']}"
    shots = sorted(SHOTS.glob("deck_*.png"))
    assert len(shots) == len(results), f"{len(shots)} screenshots for {len(results)} slides"


def _figure_sizes() -> dict[str, dict]:
    """Per deck image, in the order the deck shows them: what make_figures recorded (dpi, smallest font)."""
    manifest = json.loads((ASSETS / make_figures.MANIFEST).read_text())["figures"]
    return [manifest[Path(ref).name] | {"file": Path(ref).name}
            for ref in build_deck.image_refs(DECK.read_text(encoding="utf-8"))]


@browser_test
def test_figure_text_is_readable_on_every_slide(slides_seen):
    """Every figure at 1280x720: shown at most at its natural width (never upscaled), and its smallest text, the
    PNG's smallest font at its dpi times the shown/natural width measured in Chromium, at least 18 px."""
    shown = [img for r in slides_seen["results"] for img in r["images"]]
    recorded = _figure_sizes()
    assert len(shown) == len(recorded), f"{len(shown)} images on the slides, {len(recorded)} in deck.md"
    where = [r["where"] for r in slides_seen["results"] for _ in r["images"]]
    problems, table = [], []
    for img, rec, at in zip(shown, recorded, where):
        ratio = img["shown"] / img["natural"]
        assert img["natural"] == rec["width_px"], f"{at}: {rec['file']} is {img['natural']} px, manifest says " \
                                                  f"{rec['width_px']}: run `make figures`"
        px = rec["min_font_pt"] * rec["dpi"] / 72 * ratio
        table.append(f"{at}: {rec['file']} {img['shown']:.0f}/{img['natural']} px, smallest text "
                     f"{rec['min_font_pt']:g} pt at {rec['dpi']:g} dpi -> {px:.1f} px")
        if ratio > 1.001:
            problems.append(f"{at}: {rec['file']} upscaled x{ratio:.3f}")
        if px < 18 - 1e-6:
            problems.append(f"{at}: {rec['file']}'s smallest text ({rec['min_text']!r}) shows at {px:.1f} px")
    print("\n".join(table))
    assert not problems, "\n".join(problems)


@browser_test
def test_slide_text_is_readable(slides_seen):
    """No slide text (outside KaTeX's sub- and superscripts) under 18 px at 1280x720."""
    small = [f"{r['where']}: {text!r} at {px:.1f} px" for r in slides_seen["results"] for px, text in r["texts"]
             if px < 18 - 1e-6]
    assert not small, "\n".join(small)


@browser_test
def test_navigation_stays_clear(slides_seen):
    """The slide number never covers the navigation arrows, and no slide content sits under them."""
    problems = []
    for r in slides_seen["results"]:
        for control in r["controls"]:
            if r["number"] is not None and _overlap(r["number"], control):
                problems.append(f"{r['where']}: the slide number covers a navigation arrow")
            for what, rect in r["content"]:
                if _overlap(rect, control):
                    problems.append(f"{r['where']}: {what!r} is under a navigation arrow")
    assert not problems, "\n".join(problems)


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
