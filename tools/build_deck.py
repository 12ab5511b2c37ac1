"""Build the slide deck: slides/deck.md -> slides/dist/index.html (one offline file) and slides/dist/deck.pdf.

    python tools/build_deck.py                  # what `make slides` runs
    python tools/build_deck.py --no-pdf         # HTML only
    python tools/build_deck.py --pdf-only       # re-export the PDF of an existing build

The deck is reveal.js markdown: ``---`` between sections, ``--`` between the slides of a section, ``Note:`` starts
the speaker notes, ``$...$`` / ``$$...$$`` is LaTeX. Two shorthands name the notebooks, whose URLs come from
``ddpm_lite.runtime.REPO_URL`` (the one place the repository's address is written):

- a line ``▶ 05 §5 · ScheduleExplorer`` (notebook number, then where in it) says where a slide's idea lives and
  becomes ``<p class="nb">`` with that text, the notebook's link on GitHub and an "Open in Colab" badge;
- a link target ``colab:05_cosine_schedule`` or ``github:05_cosine_schedule`` becomes that notebook's URL.

The HTML inlines everything it needs (reveal.js with its markdown and notes plugins, KaTeX with its woff2 fonts,
every image as a data URI), so it works from file:// with no network. reveal.js and KaTeX come from the npm
registry at build time: when node_modules/ lacks the versions that package-lock.json pins, the build runs ``npm ci``
(node_modules/ is git-ignored, nothing is vendored).

The PDF is Chromium printing the deck's ``?print-pdf`` view, one page per slide: through Playwright for Python when
it is installed, else ``chromium --headless --print-to-pdf``. Debian's /usr/bin/chromium is used (never a browser
downloaded by ``playwright install``); set CHROMIUM to use another binary.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
from ddpm_lite.runtime import REPO_URL  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
NODE_MODULES = ROOT / "node_modules"
DECK = ROOT / "slides" / "deck.md"
DIST = ROOT / "slides" / "dist"
SLIDE_WIDTH, SLIDE_HEIGHT = 1280, 720
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
NPM_PACKAGES = ("reveal.js", "katex")

# Our additions to reveal's "white" theme: two columns, notebook links with a Colab-style badge, smaller type for
# dense slides, and KaTeX inside <code> (see protect_math) looking like ordinary math. No text under 0.625em
# (18.75 px of the 1280x720 slide, 18 px on a 1280x720 screen, where reveal.js scales the slide by 0.96). Images
# show at their natural size (make_figures draws them to fit: never scaled up, never shrunk). The navigation
# arrows take the bottom right corner: the slide number goes top right, and the notebook lines keep 100 px clear
# of both sides.
DECK_CSS = """
.reveal { font-size: 30px; }
.reveal h1, .reveal h2, .reveal h3 { text-transform: none; }
.reveal h1 { font-size: 2.1em; }
.reveal h2 { font-size: 1.4em; margin-bottom: 0.3em; }
.reveal h3 { font-size: 1.1em; }
.reveal p, .reveal li { line-height: 1.3; }
.reveal p { margin: 0.45em 0; }
.reveal ul, .reveal ol { display: block; margin-left: 1.2em; }
.reveal .slides section img { display: block; margin: 0 auto; border: 0; box-shadow: none; max-width: 100%; }
.reveal .slides section p:has(> img) { margin: 0.1em 0; }
.reveal .slide-number { top: 8px; right: 8px; bottom: auto; left: auto; }
.reveal code { font-size: 0.85em; }
.reveal code:has(> .katex), .reveal code:has(> .katex-display) {
  font-family: inherit; font-size: 1em; background: none; }
.reveal .katex-display { margin: 0.35em 0; }
.reveal .cols { display: flex; gap: 1.5em; text-align: left; }
.reveal .cols > div { flex: 1; }
.reveal .eqs { font-size: 0.78em; text-align: left; }
.reveal .eqs p { margin: 0.15em 0; }
.reveal .algo {
  border: 2px solid #888; border-radius: 6px; padding: 0.2em 0.6em; font-size: 0.85em; text-align: left; }
.reveal .algo ol { list-style: none; margin-left: 0.2em; }
.reveal .small { font-size: 0.65em; color: #555; }
.reveal table { font-size: 0.65em; }
.reveal p.nb { font-size: 0.65em; margin: 0.3em auto 0; line-height: 1.45; max-width: calc(100% - 200px); }
.reveal p.nb .links { white-space: nowrap; }
.reveal p.nb .live { font-weight: 600; color: #1a5e20; margin-right: 0.2em; }
.reveal .small code { font-size: 1em; }
.reveal p.nb a.path { font-family: monospace; }
.reveal a.colab {
  display: inline-block; margin-left: 0.6em; border-radius: 4px; overflow: hidden; vertical-align: middle;
  background: #f9ab00; color: #222; font-family: sans-serif; font-weight: 600; padding: 0.05em 0.45em 0.05em 0; }
.reveal a.colab span {
  display: inline-block; background: #555; color: #fff; padding: 0.05em 0.45em; margin-right: 0.4em; }
"""


# ----------------------------------------------------------------------------------------- npm packages
def locked_versions() -> dict[str, str]:
    """The versions of reveal.js and KaTeX that package-lock.json pins."""
    lock = json.loads((ROOT / "package-lock.json").read_text())
    return {name: lock["packages"][f"node_modules/{name}"]["version"] for name in NPM_PACKAGES}


def installed_versions() -> dict[str, str | None]:
    out = {}
    for name in NPM_PACKAGES:
        meta = NODE_MODULES / name / "package.json"
        out[name] = json.loads(meta.read_text())["version"] if meta.exists() else None
    return out


def ensure_node_modules() -> None:
    """Run ``npm ci`` when node_modules/ lacks the locked reveal.js or KaTeX."""
    if installed_versions() == locked_versions():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("build_deck: reveal.js and KaTeX are not installed and npm is missing: install Node.js 18+ "
                         "(Debian: apt-get install -y nodejs npm), then run `npm ci` in the repository root")
    t0 = time.perf_counter()
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    print(f"npm ci: {time.perf_counter() - t0:.1f} s")
    if installed_versions() != locked_versions():
        raise SystemExit(f"build_deck: npm ci left {installed_versions()}, package-lock.json pins {locked_versions()}")


# ----------------------------------------------------------------------------------------- notebook links
def notebook_name(ref: str) -> str:
    """The notebook a reference names: ``"05"`` or ``"05_cosine_schedule"`` -> ``"05_cosine_schedule"``."""
    found = sorted(p.stem for p in NOTEBOOKS.glob(f"{ref[:2]}_*.ipynb"))
    if not found or (len(ref) > 2 and ref not in found):
        raise SystemExit(f"build_deck: no notebook {ref!r} in notebooks/ (there are: "
                         f"{', '.join(sorted(p.stem for p in NOTEBOOKS.glob('[0-9][0-9]_*.ipynb')))})")
    return ref if len(ref) > 2 else found[0]


def github_url(name: str) -> str:
    """The notebook on GitHub (from ``REPO_URL``)."""
    return f"{REPO_URL}/blob/main/notebooks/{name}.ipynb"


def colab_url(name: str) -> str:
    """The notebook opened in Colab straight from GitHub (from ``REPO_URL``)."""
    return REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/") + \
        f"/blob/main/notebooks/{name}.ipynb"


LIVE_LINE = re.compile(r"^▶ (\d\d)\b(.*)$")


def live_links(md: str) -> str:
    """Turn each run of ``▶ NN where`` lines into one ``<p class="nb">``: the text, the notebook's GitHub link (its
    path as text) and a Colab badge; and ``colab:NAME`` / ``github:NAME`` link targets into URLs."""
    out, run = [], []

    def flush():
        if run:
            items = []
            for number, where in run:
                name = notebook_name(number)
                path = f'<a class="path" href="{github_url(name)}">notebooks/{name}.ipynb</a>'
                badge = f'<a class="colab" href="{colab_url(name)}"><span>Open in</span> Colab</a>'
                items.append(f'<span class="live">▶ {html.escape(number + where.rstrip())}</span> '
                             f'<span class="links">{path} {badge}</span>')
            out.append('<p class="nb">' + "<br>".join(items) + "</p>")
            run.clear()

    for line in md.splitlines():
        m = LIVE_LINE.match(line)
        if m:
            if "$" in line:
                raise SystemExit(f"build_deck: no math in a ▶ line (it becomes raw HTML): {line!r}")
            run.append(m.groups())
            continue
        flush()
        out.append(line)
    flush()
    md = "\n".join(out) + ("\n" if md.endswith("\n") else "")
    md = re.sub(r"\]\(colab:([\w]+)\)", lambda m: f"]({colab_url(notebook_name(m.group(1)))})", md)
    return re.sub(r"\]\(github:([\w]+)\)", lambda m: f"]({github_url(notebook_name(m.group(1)))})", md)


# ----------------------------------------------------------------------------------------- markdown
def data_uri(path: Path) -> str:
    mime = "font/woff2" if path.suffix == ".woff2" else mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def image_refs(md: str) -> list[str]:
    """The image paths a deck references, in order: ``<img src="...">`` and ``![alt](...)``."""
    refs = re.findall(r'<img\b[^>]*?\bsrc="([^"]+)"', md) + re.findall(r"!\[[^\]]*\]\(([^)\s]+)", md)
    return [r for r in refs if not r.startswith(("data:", "http:", "https:"))]


def inline_images(md: str, base: Path) -> str:
    """Replace every local image path with a data URI; a missing image is an error, not a broken slide."""
    def repl(m):
        src = m.group(2)
        if src.startswith(("data:", "http:", "https:")):
            raise SystemExit(f"build_deck: remote image {src!r} would need the network; put it in assets/")
        path = (base / src).resolve()
        if not path.is_file():
            raise SystemExit(f"build_deck: image {src!r} not found ({path}); run `make figures`")
        return m.group(1) + data_uri(path) + m.group(3)
    md = re.sub(r'(<img\b[^>]*?\bsrc=")([^"]+)(")', repl, md)
    return re.sub(r"(!\[[^\]]*\]\()([^)\s]+)(\))", repl, md)


def protect_math(md: str) -> str:
    """Wrap $$...$$ and $...$ in backticks so that reveal's markdown parser (marked) leaves the LaTeX alone.

    Unprotected, marked turns ``\\,`` into ``,``, ``\\|`` into ``|``, ``\\\\`` into ``\\`` and ``_a_`` into
    italics. Inside `code` it touches nothing; KaTeX's auto-render then typesets the code's text (its
    ``ignoredTags`` leave ``code`` out) and CSS makes ``code > .katex`` look like ordinary math. Code fences and
    existing inline code are left as they are. Math must therefore not sit inside a raw HTML block (a line that
    starts with a tag), where marked would keep the backticks: leave a blank line after the opening tag.
    """
    parts = re.split(r"(^```.*?^```[ \t]*$|`[^`\n]+`)", md, flags=re.S | re.M)
    for k in range(0, len(parts), 2):
        t = re.sub(r"\$\$(.+?)\$\$", lambda m: "`$$" + m.group(1) + "$$`", parts[k], flags=re.S)
        parts[k] = re.sub(r"(?<![`$\\])\$(?!\$)([^$\n]+?)\$(?!\$)", lambda m: "`$" + m.group(1) + "$`", t)
    return "".join(parts)


def katex_css() -> str:
    """KaTeX's stylesheet with each @font-face reduced to its woff2 source, inlined."""
    dist = NODE_MODULES / "katex" / "dist"
    css = (dist / "katex.min.css").read_text()
    css = re.sub(r"src:url\((fonts/[^)]+\.woff2)\) format\(\"woff2\"\)(,url\([^)]+\) format\(\"[a-z]+\"\))*",
                 lambda m: f'src:url({data_uri(dist / m.group(1))}) format("woff2")', css)
    if "fonts/" in css:
        raise SystemExit("build_deck: a KaTeX font reference was left un-inlined (KaTeX's CSS changed?)")
    return css


# ----------------------------------------------------------------------------------------- HTML
def build_html(src: Path, out: Path, theme: str = "white") -> Path:
    md = protect_math(live_links(inline_images(src.read_text(encoding="utf-8"), src.parent)))
    md = md.replace("</textarea>", "&lt;/textarea&gt;")
    rv = NODE_MODULES / "reveal.js" / "dist"
    script = lambda path: path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")  # noqa: E731
    css = {name: (rv / f).read_text(encoding="utf-8") for name, f in
           [("reset", "reset.css"), ("reveal", "reveal.css"), ("theme", f"theme/{theme}.css")]}
    title = html.escape(next((line.lstrip("# ").strip() for line in src.read_text().splitlines()
                              if line.startswith("# ")), src.stem))
    versions = installed_versions()
    generator = f"tools/build_deck.py (reveal.js {versions['reveal.js']}, KaTeX {versions['katex']})"
    separators = ('data-separator="^\\r?\\n---\\r?\\n$" data-separator-vertical="^\\r?\\n--\\r?\\n$" '
                  'data-separator-notes="^Note:"')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<meta name="generator" content="{generator}">
<style>{css['reset']}</style>
<style>{css['reveal']}</style>
<style>{css['theme']}</style>
<style>{katex_css()}</style>
<style>{DECK_CSS}</style>
</head><body><div class="reveal"><div class="slides">
<section data-markdown {separators}>
<textarea data-template>
{md}
</textarea></section>
</div></div>
<script>{script(rv / 'reveal.js')}</script>
<script>{script(rv / 'plugin' / 'markdown.js')}</script>
<script>{script(rv / 'plugin' / 'notes.js')}</script>
<script>{script(NODE_MODULES / 'katex' / 'dist' / 'katex.min.js')}</script>
<script>{script(NODE_MODULES / 'katex' / 'dist' / 'contrib' / 'auto-render.min.js')}</script>
<script>
Reveal.initialize({{hash: true, slideNumber: 'c/t', width: {SLIDE_WIDTH}, height: {SLIDE_HEIGHT}, margin: 0.04,
                   transition: 'slide', pdfSeparateFragments: false, plugins: [RevealMarkdown, RevealNotes]}})
  .then(() => {{
    renderMathInElement(Reveal.getSlidesElement(), {{
      delimiters: [{{left: '$$', right: '$$', display: true}}, {{left: '$', right: '$', display: false}}],
      ignoredTags: ['script', 'noscript', 'style', 'textarea', 'pre'], throwOnError: false}});
    for (const a of Reveal.getSlidesElement().querySelectorAll('a[href^="http"]')) {{
      a.target = '_blank'; a.rel = 'noopener';
    }}
    Reveal.layout();
    document.body.dataset.deckReady = '1';
  }});
</script></body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------- PDF
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise SystemExit("build_deck: Chromium not found for the PDF export (Debian: apt-get install -y chromium; "
                         "or set CHROMIUM=/path/to/chrome, or pass --no-pdf)")
    return path


def export_pdf(deck: Path, pdf: Path, browser=None) -> Path:
    """Print the deck's ?print-pdf view to ``pdf``, one 1280x720 page per slide. ``browser``: an already launched
    Playwright browser to use (a test's); by default one is launched, or the Chromium CLI is used."""
    url = deck.resolve().as_uri() + "?print-pdf"
    if browser is not None:
        _print_page(browser, url, pdf)
        return pdf
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is not None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            _print_page(browser, url, pdf)
            browser.close()
    else:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium_path(), "--headless", *CHROMIUM_ARGS, f"--user-data-dir={profile}",
                            "--virtual-time-budget=10000", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url],
                           check=True, capture_output=True)
    return pdf


def _print_page(browser, url: str, pdf: Path) -> None:
    page = browser.new_page(viewport={"width": SLIDE_WIDTH, "height": SLIDE_HEIGHT})
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
    page.goto(url)
    page.wait_for_selector("body[data-deck-ready]", timeout=60_000)
    page.evaluate("document.fonts.ready")
    page.wait_for_timeout(300)
    page.pdf(path=str(pdf), width=f"{SLIDE_WIDTH}px", height=f"{SLIDE_HEIGHT}px", print_background=True,
             prefer_css_page_size=True)
    page.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, nargs="?", default=DECK, help="reveal markdown (default: slides/deck.md)")
    ap.add_argument("-o", "--out", type=Path, default=DIST / "index.html", help="HTML output")
    ap.add_argument("--pdf", type=Path, default=None, help="PDF output (default: deck.pdf next to the HTML)")
    ap.add_argument("--no-pdf", action="store_true", help="skip the PDF export")
    ap.add_argument("--pdf-only", action="store_true", help="only re-export the PDF of an existing HTML build")
    ap.add_argument("--theme", default="white")
    args = ap.parse_args(argv)
    pdf = args.pdf or args.out.with_name("deck.pdf")
    t0 = time.perf_counter()
    if not args.pdf_only:
        ensure_node_modules()
        build_html(args.src, args.out, args.theme)
        print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    if not args.no_pdf:
        t1 = time.perf_counter()
        export_pdf(args.out, pdf)
        print(f"wrote {pdf} ({pdf.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t1:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
