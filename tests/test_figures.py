"""The deck's figures: every image slides/deck.md shows is in assets/, was written by tools/make_figures.py (its sha256
is in assets/figures.json, next to the function that drew it), and drawing it again gives the same bytes."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
DECK = ROOT / "slides" / "deck.md"
sys.path.insert(0, str(ROOT / "tools"))
import build_deck  # noqa: E402
import make_figures  # noqa: E402

REGENERATED = ["generative_families", "forward_definition", "unet", "learned_variance"]  # the quick ones


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


@pytest.mark.parametrize("name", REGENERATED)
def test_figure_is_reproducible(name, manifest, tmp_path):
    """Drawing a figure again gives the bytes in the manifest (same library versions) or, with other versions of
    matplotlib/torch/numpy, at least the same bytes twice in a row."""
    first = _sha(make_figures.render(name, tmp_path))
    if manifest.get("versions") == make_figures.versions():
        assert first == manifest["figures"][f"{name}.png"]["sha256"], \
            f"{name}: differs from assets/ (package code changed?): run `make figures`"
    else:
        (tmp_path / "again").mkdir()
        assert _sha(make_figures.render(name, tmp_path / "again")) == first, f"{name} is not deterministic"
