"""Point every link to the project at its published location, set in one place: pyproject.toml's
``[project.urls] Repository``.

    python tools/set_repo_url.py https://github.com/OWNER/REPO   # set it in pyproject.toml, then rewrite the rest
    python tools/set_repo_url.py                                 # rewrite the rest from pyproject.toml's value
    python tools/set_repo_url.py --check                         # list what disagrees with it (exit 1), change nothing

What it rewrites, in the tracked text files (never the paired .ipynb or the learner versions, which are regenerated
from the scripts):

* the Colab badges, ``https://colab.research.google.com/github/OWNER/REPO/blob/...``;
* the notebooks' setup cells, ``%pip install git+https://github.com/OWNER/REPO``;
* links to the notebooks on GitHub, ``https://github.com/OWNER/REPO/blob/main/notebooks/...`` (README, deck, tests);
* the fallback constant of ``ddpm_lite/runtime.py`` (used only where neither pyproject.toml nor the installed
  package's metadata can be read).

Then, unless ``--no-sync``: ``jupytext --sync notebooks/scripts/*.py`` (the .ipynb pairs) and
``tools/make_learner.py`` (the learner versions). ``ddpm_lite.runtime.REPO_URL`` reads pyproject.toml in a
checkout and the package metadata in an installed wheel, so it follows with no edit. Colab opens notebooks from
GitHub only, so the location must be ``https://github.com/OWNER/REPO``.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GITHUB = re.compile(r"^https://github\.com/([\w.-]+/[\w.-]+?)/?$")
NAME = r"[\w.-]+/[\w.-]+?"
# each pattern finds one kind of link to the project; group 1 is OWNER/REPO
PATTERNS = (
    re.compile(rf"https://colab\.research\.google\.com/github/({NAME})/blob/"),
    re.compile(rf"git\+https://github\.com/({NAME})(?=[\"'\s@#)]|$)", re.M),
    re.compile(rf"https://github\.com/({NAME})/blob/main/notebooks/"),
    re.compile(rf'^_FALLBACK_URL = "https://github\.com/({NAME})"', re.M),
)
SKIP_SUFFIXES = {".ipynb", ".png", ".jpg", ".pt", ".pdf", ".woff", ".woff2", ".ico", ".gz", ".zip", ".npz", ".npy"}
SKIP_PARTS = {"node_modules", "build", ".venv", "dist"}
SKIP_FILES = {"tools/set_repo_url.py", "tests/test_repo_url.py"}  # their examples are not links to the project


class RepoUrlError(ValueError):
    """A location Colab cannot open, or a pyproject.toml without one."""


def owner_repo(url: str) -> str:
    """``OWNER/REPO`` of ``https://github.com/OWNER/REPO``; RepoUrlError for anything else."""
    match = GITHUB.match(url.strip())
    if not match:
        raise RepoUrlError(f"{url!r} is not https://github.com/OWNER/REPO: Colab opens notebooks from GitHub only")
    return match.group(1)


def read_url(root: Path = ROOT) -> str:
    """pyproject.toml's ``[project.urls] Repository``."""
    sys.path.insert(0, str(root))
    try:
        from ddpm_lite.runtime import _url_from_pyproject
    finally:
        sys.path.pop(0)
    url = _url_from_pyproject((root / "pyproject.toml").read_text(encoding="utf-8"))
    if not url:
        raise RepoUrlError(f"{root / 'pyproject.toml'} has no [project.urls] Repository = \"https://github.com/...\"")
    return url


def write_url(url: str, root: Path = ROOT) -> None:
    """Set ``[project.urls] Repository`` in pyproject.toml to ``url`` (the line is edited in place)."""
    owner_repo(url)
    path = root / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(r'(?ms)(^\[project\.urls\][^\[]*?^Repository\s*=\s*)"[^"]*"', rf'\g<1>"{url}"', text)
    if count != 1:
        raise RepoUrlError(f"{path} has no [project.urls] section with a Repository line to edit")
    path.write_text(new, encoding="utf-8")


def text_files(root: Path = ROOT) -> list[Path]:
    """The tracked (and untracked, not ignored) text files that may link to the project; not the .ipynb pairs, not
    the learner versions (both regenerated from the scripts)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                             capture_output=True, text=True).stdout.splitlines()
        paths = [root / line for line in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
        paths = [p for p in root.rglob("*") if p.is_file()]
    keep = []
    for path in paths:
        rel = path.relative_to(root)
        if path.suffix in SKIP_SUFFIXES or SKIP_PARTS & set(rel.parts) or rel.parts[:2] == ("notebooks", "exercises") \
                or rel.as_posix() in SKIP_FILES:
            continue
        if path.is_file():
            keep.append(path)
    return keep


def links(text: str) -> list[tuple[int, int, str]]:
    """(start, end, OWNER/REPO) of each link to the project in ``text``."""
    found = []
    for pattern in PATTERNS:
        found += [(m.start(1), m.end(1), m.group(1)) for m in pattern.finditer(text)]
    return sorted(found)


def disagreements(root: Path = ROOT, url: str | None = None) -> dict[str, list[str]]:
    """{file: [the OWNER/REPO it links to, ...]} for every file that links to another location than ``url``."""
    want = owner_repo(url or read_url(root))
    wrong: dict[str, list[str]] = {}
    for path in text_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        others = sorted({name for _, _, name in links(text) if name != want})
        if others:
            wrong[str(path.relative_to(root))] = others
    return wrong


def rewrite(root: Path = ROOT, url: str | None = None) -> list[str]:
    """Rewrite every link to the project to ``url`` (default: pyproject's); returns the files changed."""
    want = owner_repo(url or read_url(root))
    changed = []
    for path in text_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        spans = [(a, b) for a, b, name in links(text) if name != want]
        if not spans:
            continue
        for a, b in reversed(spans):
            text = text[:a] + want + text[b:]
        path.write_text(text, encoding="utf-8")
        changed.append(str(path.relative_to(root)))
    return changed


def sync(root: Path = ROOT) -> None:
    """The .ipynb pairs and the learner versions, from the scripts."""
    scripts = sorted(str(p) for p in (root / "notebooks" / "scripts").glob("[0-9][0-9]_*.py"))
    if scripts:
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", *scripts], cwd=root, check=True)
    subprocess.run([sys.executable, str(root / "tools" / "make_learner.py")], cwd=root, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="the new location, https://github.com/OWNER/REPO (default: keep "
                                               "pyproject.toml's and rewrite the rest from it)")
    parser.add_argument("--check", action="store_true", help="list the files that disagree (exit 1); change nothing")
    parser.add_argument("--no-sync", action="store_true", help="do not run jupytext --sync and make_learner.py")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.check:
            if args.url:
                parser.error("--check compares with pyproject.toml's location: give no URL")
            url = read_url(args.root)
            wrong = disagreements(args.root, url)
            for name, others in wrong.items():
                print(f"{name}: links to {', '.join(others)}, not {owner_repo(url)}")
            print(f"{len(wrong)} file(s) disagree with pyproject.toml's {url}" if wrong
                  else f"every link agrees with pyproject.toml's {url}")
            return 1 if wrong else 0
        if args.url:
            write_url(args.url.rstrip("/"), args.root)
        url = read_url(args.root)
        changed = rewrite(args.root, url)
        print(f"{url}: rewrote {len(changed)} file(s)" + (": " + ", ".join(changed) if changed else ""))
        if changed and not args.no_sync:
            sync(args.root)
        return 0
    except RepoUrlError as err:
        print(f"set_repo_url: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
