"""The notebooks as files: pairs in sync, learner versions current, nothing executed committed, Colab-ready.

Running them is nbval's job (``pytest --nbval-lax notebooks/``, see the root conftest.py).
"""
import ast
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from script_modules import load_script  # tests/script_modules.py

from ddpm_lite.runtime import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
SOLUTIONS = sorted((NB / "scripts").glob("[0-9][0-9]_*.py"))
LEARNERS = sorted((NB / "exercises" / "scripts").glob("[0-9][0-9]_*.py"))
SCRIPTS = SOLUTIONS + LEARNERS
COLAB = REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/") + "/blob/main/"


make_learner = load_script("tools/make_learner.py")


def ids(paths):
    return [str(p.relative_to(NB)) for p in paths]


def paired_notebook(py: Path) -> Path:
    """notebooks/scripts/NN.py -> notebooks/NN.ipynb (jupytext.toml pairs each notebook with scripts/NN.py)."""
    return py.parent.parent / py.with_suffix(".ipynb").name


def cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ())),
             c.metadata.get("slideshow", {}).get("slide_type")) for c in nb.cells]


def test_the_three_notebooks_and_their_learner_versions_exist():
    names = {p.stem for p in SOLUTIONS}
    assert {"01_forward_noising", "03_loss", "05_cosine_schedule"} <= names
    assert {p.stem for p in LEARNERS} <= names


@pytest.mark.parametrize("py", SCRIPTS, ids=ids(SCRIPTS))
def test_pair_in_sync(py):
    ipynb = paired_notebook(py)
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --sync {py.relative_to(ROOT)}`"
    assert cells(jupytext.read(py)) == cells(jupytext.read(ipynb)), (
        f"{py.relative_to(ROOT)} and {ipynb.relative_to(ROOT)} differ: run `jupytext --sync notebooks/scripts/*.py` "
        "(or on the .ipynb you edited), then `python tools/make_learner.py`")


@pytest.mark.parametrize("py", SCRIPTS, ids=ids(SCRIPTS))
def test_ipynb_committed_clean(py):
    nb = jupytext.read(paired_notebook(py))
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs: `jupyter nbconvert --clear-output --inplace {py.stem}.ipynb`"
    assert set(nb.metadata) <= {"kernelspec", "jupytext"}, (
        f"notebook metadata {sorted(set(nb.metadata) - {'kernelspec', 'jupytext'})} (widget state, colab, "
        "language_info?): strip it, e.g. `nbstripout --extra-keys 'metadata.widgets metadata.colab "
        "metadata.language_info'`")
    # tags, slide types, and jupytext's own blank-line bookkeeping; no Colab ids, execution info, scroll or collapse
    # state
    noisy = [i for i, c in enumerate(nb.cells) if set(c.metadata) - {"tags", "slideshow", "lines_to_next_cell"}]
    assert not noisy, f"cells {noisy} carry metadata other than tags and slideshow (Colab ids?)"


def test_learner_versions_up_to_date():
    stale = []
    for solution in SOLUTIONS:
        text = make_learner.learner_text(solution)
        if text is not None:
            stale += make_learner.stale(solution, text)
    assert not stale, f"stale: {stale}; run `python tools/make_learner.py`"
    assert make_learner.main(["--check"]) == 0


@pytest.mark.parametrize("py", SOLUTIONS, ids=ids(SOLUTIONS))
def test_solution_and_learner_exercises(py):
    text = py.read_text()
    assert text.count("### BEGIN SOLUTION") == text.count("### END SOLUTION")
    if "### BEGIN SOLUTION" not in text:  # a notebook without exercises has no learner version
        assert not (NB / "exercises" / "scripts" / py.name).exists()
        return
    learner = (NB / "exercises" / "scripts" / py.name).read_text()
    assert "SOLUTION" not in learner
    assert learner.count("raise NotImplementedError(") == text.count("### BEGIN SOLUTION")
    for cell in jupytext.read(py).cells:  # every exercise cell checks its answer right away
        if "exercise" in cell.metadata.get("tags", ()):
            assert re.search(r"^(\w+) = check_\1\(\1\)$", cell.source, re.M), cell.source[:80]


@pytest.mark.parametrize("py", SCRIPTS, ids=ids(SCRIPTS))
def test_colab_ready(py):
    nb = jupytext.read(paired_notebook(py))
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first, setup = nb.cells[0], nb.cells[1]
    # the badge opens this very file on GitHub's main branch
    badge = re.search(r"\(https://colab\.research\.google\.com/github/[^)]+\)", first.source)
    assert first.cell_type == "markdown" and badge, "the first cell is a markdown cell with the Colab badge"
    assert badge.group(0)[1:-1] == COLAB + str(paired_notebook(py).relative_to(ROOT))
    # then the setup cell: installs the package from REPO_URL in Colab, imports nothing from it
    assert setup.cell_type == "code" and "colab-setup" in setup.metadata.get("tags", ())
    assert 'if "google.colab" in sys.modules:' in setup.source
    urls = re.findall(r'run_line_magic\("pip", "install -q git\+(\S+?)"\)', setup.source)
    assert urls == [REPO_URL], "the setup cell must pip-install git+REPO_URL (ddpm_lite.runtime.REPO_URL)"
    assert not re.search(r"^\s*(import|from)\s+ddpm_lite", setup.source, re.M), "it runs before the install"
    source = "\n".join(c.source for c in nb.cells)
    assert "enable_custom_widget_manager" not in source  # breaks core widgets in Colab (colabtools#3571)
    assert "os.environ" not in source and "getenv" not in source  # fast mode: through ddpm_lite.runtime only
    assert "from ddpm_lite.runtime import" in nb.cells[2].source  # imports, device, fast mode come next


@pytest.mark.parametrize("py", SCRIPTS, ids=ids(SCRIPTS))
def test_scripts_are_valid_python(py):
    ast.parse(py.read_text(), filename=str(py))


def test_strip_solutions():
    text = ("def f(x):\n"
            "    ### BEGIN SOLUTION\n"
            "    y = 2 * x\n"
            "    return y\n"
            "    ### END SOLUTION\n"
            "\n"
            "x = 1\n"
            "### BEGIN SOLUTION\n"
            "x = 2\n"
            "### END SOLUTION\n")
    out, count = make_learner.strip_solutions(text)
    assert count == 2
    assert out == ("def f(x):\n"
                   "    # YOUR CODE HERE\n"
                   "    raise NotImplementedError(\"exercise: replace this line by your code (run hint('f') in a cell "
                   "if you want a hint)\")\n"
                   "\n"
                   "x = 1\n"
                   "# YOUR CODE HERE\n"
                   "raise NotImplementedError(\"exercise: replace this line by your code (run hint('f') in a cell if "
                   "you want a hint)\")\n")
    namespace = {}
    exec(out.split("x = 1")[0], namespace)  # noqa: S102
    with pytest.raises(NotImplementedError, match=r"hint\('f'\)"):
        namespace["f"](1)


def test_a_hint_on_the_solution_marker_is_refused():
    """Hints come on request from the checker (hint('name')), never printed in the learner's stub up front."""
    with pytest.raises(make_learner.SolutionMarkerError, match="on request"):
        make_learner.strip_solutions("def f():\n    ### BEGIN SOLUTION hint: return 2\n    return 2\n"
                                     "    ### END SOLUTION\n")


def test_learner_stubs_hand_over_no_code():
    for py in LEARNERS:
        for line in py.read_text().splitlines():
            if "raise NotImplementedError(" in line:
                assert "hint: " not in line and "exercise: replace this line by your code" in line, line


@pytest.mark.parametrize("bad", ["    ### BEGIN SOLUTION\n    x = 1\n",
                                 "    x = 1\n    ### END SOLUTION\n",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n"])
def test_strip_solutions_rejects_broken_markers(bad):
    with pytest.raises(make_learner.SolutionMarkerError):
        make_learner.strip_solutions(bad)


def test_lab_shows_one_entry_per_notebook():
    """The file browser lists notebooks/NN.ipynb only: the paired scripts live in notebooks/scripts/."""
    for folder in (NB, NB / "exercises"):
        assert not list(folder.glob("[0-9][0-9]_*.py")), f"a paired script sits beside the notebooks in {folder}"
    assert {paired_notebook(p).name for p in SOLUTIONS} == {p.name for p in NB.glob("[0-9][0-9]_*.ipynb")}
    learners = {p.name for p in (NB / "exercises").glob("[0-9][0-9]_*.ipynb")}
    assert {paired_notebook(p).name for p in LEARNERS} == learners


# ------------------------------------------------------------------------------------------ slides
# Instructors present the notebooks themselves (README, "Presenting"): each cell's `slideshow.slide_type` says where
# it goes. No slide type means "continue the current slide"; "-" (which RISE reads so) is refused: the presenting
# extension, jupyterlab-slideshow, hides such a cell.
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes"}
SLIDE_STARTS = {"slide", "subslide"}
HIDDEN = {"skip", "notes"}
MAX_SLIDE_LINES = 35  # about 700 px of Lab's 14 px prose and 13 px code: one 1280x720 screen
PICTURE_LINES = 15  # a figure, a widget or a player counts as 15 lines (~300 px, a 3 in high figure)
WRAP = 120  # a markdown source line longer than this shows as several lines
WIDGETS_IMPORT = re.compile(r"^from ddpm_lite\.course\.widgets import \(?([\w, ]+)", re.M)


def slide_type(cell):
    return cell.metadata.get("slideshow", {}).get("slide_type")


def widget_names(nb) -> set[str]:
    """The variables that hold one of the course's widgets (ddpm_lite.course.widgets), e.g. `explorer`."""
    classes = {name.strip() for c in nb.cells for m in WIDGETS_IMPORT.finditer(c.source) for name in m[1].split(",")}
    return {m[1] for c in nb.cells if c.cell_type == "code"
            for m in re.finditer(r"^(\w+) = (\w+)\(", c.source, re.M) if m[2] in classes}


def _statements(cell):
    return ast.parse(cell.source).body if cell.cell_type == "code" else []


def shows_widget(cell, widgets: set[str]) -> bool:
    """The cell displays a widget: `display(w)` at top level, or `w` as its last line."""
    body = _statements(cell)
    for k, st in enumerate(body):
        value = st.value if isinstance(st, ast.Expr) else None
        if isinstance(value, ast.Name) and value.id in widgets and k == len(body) - 1:
            return True
        if (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "display" and value.args
                and isinstance(value.args[0], ast.Name) and value.args[0].id in widgets):
            return True
    return False


def drives_widget(cell, widgets: set[str]) -> bool:
    """A check cell: it sets a shown widget's controls from code and asserts what the widget did."""
    return (cell.cell_type == "code" and "assert" in cell.source and not shows_widget(cell, widgets)
            and any(re.search(rf"^\s*{w}\.\w+\.value = ", cell.source, re.M) for w in widgets))


def only_asserts(cell) -> bool:
    body = _statements(cell)
    return bool(body) and all(isinstance(st, ast.Assert) for st in body)


def shows_picture(cell, widgets: set[str]) -> bool:
    """A figure (plt.show()), a displayed object (an audio player) or a widget."""
    return cell.cell_type == "code" and (
        "plt.show()" in cell.source or bool(re.search(r"^display\(", cell.source, re.M))
        or shows_widget(cell, widgets))


def slide_lines(cell, widgets: set[str]) -> int:
    """How much of a screen the cell takes, in lines of source (a picture counts as PICTURE_LINES)."""
    lines = cell.source.splitlines()
    if cell.cell_type == "markdown":
        return sum(max(1, -(-len(line) // WRAP)) for line in lines)
    return len(lines) + PICTURE_LINES * shows_picture(cell, widgets)


def slides(nb) -> list[list[int]]:
    """The cells shown on each slide, by index: a slide or subslide, then its fragments and continuations."""
    out = []
    for i, cell in enumerate(nb.cells):
        kind = slide_type(cell)
        if kind in HIDDEN:
            continue
        if kind in SLIDE_STARTS or not out:
            out.append([])
        out[-1].append(i)
    return out


def slide_problems(nb) -> list[str]:
    """What breaks the slide rules in a notebook (empty when it presents well):

    - every slide type is one that jupyterlab-slideshow and RISE both read (none: the cell continues the slide);
    - the title cell is the first slide; the Colab setup and imports cells are skipped (run all before presenting);
    - each section (a `## ` heading) starts a slide, and a cell that opens with a `### ` subsection starts one too;
    - each widget is on a slide of its own: its cell starts a slide and the next cell shown starts the next one;
    - a check cell that drives a widget from code is skipped (the presenter drives it), one made only of asserts
      is skipped or continues its slide;
    - a slide shows at most one picture and MAX_SLIDE_LINES lines (a picture counts PICTURE_LINES), unless it is a
      single cell, which slide types cannot split.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        kind = slide_type(cell)
        if set(cell.metadata.get("slideshow", {})) - {"slide_type"} or (kind is not None and kind not in SLIDE_TYPES):
            problems.append(f"cell {i}: slideshow {cell.metadata['slideshow']}; use a slide_type among "
                            f"{sorted(SLIDE_TYPES)}, or none to continue the slide (jupyterlab-slideshow hides '-')")
    expected = {0: ("slide", "the title cell"), 1: ("skip", "the Colab setup cell"), 2: ("skip", "the imports cell")}
    for i, (kind, what) in expected.items():
        if len(nb.cells) > i and slide_type(nb.cells[i]) != kind:
            problems.append(f"cell {i}: {what} should be {kind!r}, not {slide_type(nb.cells[i])!r}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        section = re.search(r"^## .*", cell.source, re.M)
        if (section and slide_type(cell) != "slide") or (cell.source.startswith("### ")
                                                         and slide_type(cell) not in SLIDE_STARTS):
            title = section[0] if section else cell.source.splitlines()[0]
            problems.append(f"cell {i} ({title!r}) opens a section: make it a slide")
    widgets = widget_names(nb)
    for i, cell in enumerate(nb.cells):
        if shows_widget(cell, widgets):
            if slide_type(cell) not in SLIDE_STARTS:
                problems.append(f"cell {i} shows a widget: make it a slide")
            after = next((j for j in range(i + 1, len(nb.cells)) if slide_type(nb.cells[j]) not in HIDDEN), None)
            if after is not None and slide_type(nb.cells[after]) not in SLIDE_STARTS:
                problems.append(f"cell {after} shares the slide of the widget of cell {i}: make it a slide or skip it")
        if drives_widget(cell, widgets) and slide_type(cell) != "skip":
            problems.append(f"cell {i} checks a widget from code: skip it (the presenter drives the widget)")
        elif only_asserts(cell) and slide_type(cell) not in {None, "skip"}:
            problems.append(f"cell {i} only checks: skip it, or let it continue its slide")
    for shown in slides(nb):
        pictures = [i for i in shown if shows_picture(nb.cells[i], widgets)]
        if len(pictures) > 1:
            problems.append(f"cells {pictures} each show a picture on one slide: start a slide at cell {pictures[1]}")
        lines = sum(slide_lines(nb.cells[i], widgets) for i in shown)
        if lines > MAX_SLIDE_LINES and len(shown) > 1:
            problems.append(f"the slide of cells {shown} takes {lines} lines (> {MAX_SLIDE_LINES}): start a slide "
                            "at one of them")
    return problems


@pytest.mark.parametrize("py", SOLUTIONS, ids=ids(SOLUTIONS))
def test_slides(py):
    """Each notebook presents as a slideshow that follows the rules of slide_problems (its learner version shares
    the slide types: make_learner copies them, test_pair_in_sync compares them)."""
    nb = jupytext.read(paired_notebook(py))  # what Lab opens: the .ipynb holds the slide types
    assert not slide_problems(nb), "\n".join([f"{py.name}:", *slide_problems(nb)])
    widgets = widget_names(nb)
    if py.stem != "03_loss":  # its figures are all inline
        assert any(shows_widget(c, widgets) for c in nb.cells), f"{py.name}: no widget found - has its import moved?"


def _notebook(*cells):
    """A notebook of (cell type, source, slide type or None) triples, after the usual three opening cells."""
    opening = [("markdown", "# Title", "slide"), ("code", "import sys", "skip"),
               ("code", "from ddpm_lite.course.widgets import Explorer\nexplorer = Explorer()", "skip")]
    return nbformat.v4.new_notebook(cells=[
        (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(
            source, metadata={"slideshow": {"slide_type": slide}} if slide else {})
        for kind, source, slide in [*opening, *cells]])


@pytest.mark.parametrize("cells, problem", [
    ([("markdown", "Text", "-")], "jupyterlab-slideshow hides '-'"),
    ([("markdown", "Text", "slide"), ("markdown", "## 2. Next", None)], "opens a section"),
    ([("markdown", "Text", "slide"), ("markdown", "### Exercise", "fragment")], "opens a section"),
    ([("code", "assert 1 + 1 == 2", "slide")], "only checks"),
    ([("code", "explorer", None)], "shows a widget: make it a slide"),
    ([("code", "explorer", "slide"), ("markdown", "Look at it.", None)], "shares the slide of the widget"),
    ([("code", "explorer", "slide"), ("code", "explorer.t.value = 3\nassert explorer.ok", "slide")],
     "checks a widget from code"),
    ([("code", "plt.show()", "slide"), ("code", "x = 1\nplt.show()", None)], "each show a picture"),
    ([("markdown", "text\n" * 30, "slide"), ("code", "x = 1\n" * 10, None)], "takes 40 lines"),
    ([("markdown", ("word " * 50 + "\n") * 10, "slide"), ("code", "x = 1\n" * 10, None)], "takes 40 lines"),
])
def test_slide_rules_catch_mistakes(cells, problem):
    assert not slide_problems(_notebook(("markdown", "## 1. Idea", "slide"), ("code", "explorer", "slide"),
                                        ("code", "explorer.t.value = 3\nassert explorer.ok", "skip"),
                                        ("markdown", "text\n" * 20, "slide"), ("code", "x = 1\n" * 15, None)))
    found = slide_problems(_notebook(*cells))
    assert any(problem in p for p in found), found
