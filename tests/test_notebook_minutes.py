"""The README's table and each notebook say the same "About N minutes" (a reading-and-doing estimate: the notebook's
own line is the authors' number; docs/notebooks.md measures only how long the code runs)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_minutes_match_the_notebooks():
    readme = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^\| \[`(\w+)`\]\(notebooks/\1\.ipynb\) \|[^|]*\| (\d+) \|", (ROOT / "README.md").read_text(), re.M)}
    scripts = sorted((ROOT / "notebooks" / "scripts").glob("*.py"))
    notebooks = {}
    for path in scripts:
        m = re.search(r"\*About (\d+) minutes\.", path.read_text(encoding="utf-8"))
        assert m, f"{path.name}: no '*About N minutes.*' line"
        notebooks[path.stem] = int(m.group(1))
    assert readme == notebooks, "README.md's minutes and the notebooks' 'About N minutes' lines differ"
