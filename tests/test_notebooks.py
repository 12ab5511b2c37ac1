"""The notebooks as files: pairs in sync, learner versions current, nothing executed committed, Colab-ready.

Running them is nbval's job (``pytest --nbval-lax notebooks/``, see the root conftest.py).
"""
import ast
import importlib.util
import re
from pathlib import Path

import jupytext
import pytest

from ddpm_lite.runtime import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
SOLUTIONS = sorted((NB / "scripts").glob("[0-9][0-9]_*.py"))
LEARNERS = sorted((NB / "exercises" / "scripts").glob("[0-9][0-9]_*.py"))
SCRIPTS = SOLUTIONS + LEARNERS
COLAB = REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/") + "/blob/main/"


def _load_make_learner():
    spec = importlib.util.spec_from_file_location("make_learner", ROOT / "tools" / "make_learner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_learner = _load_make_learner()


def ids(paths):
    return [str(p.relative_to(NB)) for p in paths]


def paired_notebook(py: Path) -> Path:
    """notebooks/scripts/NN.py -> notebooks/NN.ipynb (jupytext.toml pairs each notebook with scripts/NN.py)."""
    return py.parent.parent / py.with_suffix(".ipynb").name


def cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


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
    # tags, and jupytext's own blank-line bookkeeping; no Colab ids, execution info, scroll or collapse state
    noisy = [i for i, c in enumerate(nb.cells) if set(c.metadata) - {"tags", "lines_to_next_cell"}]
    assert not noisy, f"cells {noisy} carry metadata other than tags (Colab ids?)"


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
