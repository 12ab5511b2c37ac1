"""Debian's Chromium driven by Playwright for Python: what the browser tests (the deck, JupyterLab) share.

Playwright only drives the system's Chromium (``executable_path``); ``playwright install`` is never needed.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_deck  # noqa: E402  (Chromium's path and flags, also used to export the deck's PDF)


def path() -> str | None:
    """Chromium's executable ($CHROMIUM, `chromium` on PATH, /usr/bin/chromium), or None when there is none."""
    try:
        return build_deck.chromium_path()
    except SystemExit:
        return None


def missing() -> str | None:
    """Why the browser tests cannot run here (Chromium or Playwright absent), or None."""
    if path() is None:
        return "Chromium is not installed (Debian: apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright; no `playwright install` needed)"
    return None


def launch(playwright):
    """A headless Chromium from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=path(), args=build_deck.CHROMIUM_ARGS)
