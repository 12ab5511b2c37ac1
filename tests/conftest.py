"""Fixtures shared by the unit tests."""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/chromium.py


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's, driven by Playwright) for the browser tests of the session."""
    import chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = chromium.launch(p)
        yield b
        b.close()


@pytest.fixture
def small_pngs(monkeypatch):
    """Widgets render their figures at 30 dpi: the same code paths, far fewer pixels to encode."""
    from ddpm_lite.course import widgets

    monkeypatch.setattr(widgets.FigureWidget, "dpi", 30)


@pytest.fixture(autouse=True)
def no_figures_left_open():
    """Close every figure a test leaves open, so memory stays flat across the suite."""
    before = set(plt.get_fignums())
    yield
    for num in set(plt.get_fignums()) - before:
        plt.close(num)
