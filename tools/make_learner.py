"""Generate the learner versions of the notebooks: the solutions taken out.

The instructor notebooks ``notebooks/scripts/NN_name.py`` (jupytext percent, the source of truth, paired with
``notebooks/NN_name.ipynb``) hold each exercise's
solution between two marker lines, nbgrader style::

    def q_sample(x0, t, noise, betas):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

(no hint on that line: a learner gets hints only on request, from the exercise's checker, ``hint("q_sample")``).
For every notebook with at least one such block, this writes ``notebooks/exercises/scripts/NN_name.py`` (paired
with ``notebooks/exercises/NN_name.ipynb``) with each block
replaced by::

        # YOUR CODE HERE
        raise NotImplementedError("exercise: replace this line by your code (run hint('q_sample') in a cell ...)")

and the Colab badge pointing at the learner version, then updates the paired ``.ipynb`` with
``jupytext --to ipynb --update`` (cell ids and any outputs kept).

    python tools/make_learner.py            # write what is stale
    python tools/make_learner.py --check    # exit 1, listing what is stale, and write nothing (CI)
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCRIPTS = NOTEBOOKS / "scripts"  # the paired percent scripts (jupytext.toml: "ipynb,scripts//py:percent")
LEARNER = NOTEBOOKS / "exercises"
LEARNER_SCRIPTS = LEARNER / "scripts"

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+hint:[ \t]*(?P<hint>.*?))?[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
DEF = re.compile(r"^[ \t]*def (\w+)\(")
BADGE = "/blob/main/notebooks/{name}.ipynb"
LEARNER_BADGE = "/blob/main/notebooks/exercises/{name}.ipynb"
NOTE = ("> **Exercise version.** Fill in the cells marked `YOUR CODE HERE`; the solutions are in "
        "`notebooks/{name}.ipynb`.")


class SolutionMarkerError(ValueError):
    pass


def strip_solutions(text: str, source: str = "<text>") -> tuple[str, int]:
    """Replace every solution block of a percent script; returns (learner text, number of blocks)."""
    out, count, block = [], 0, None
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        begin, end = BEGIN.match(line.rstrip("\n")), END.match(line.rstrip("\n"))
        if block is not None:
            if begin:
                raise SolutionMarkerError(f"{source}:{lineno}: BEGIN SOLUTION inside the block opened at line {block}")
            if end:
                block = None
            continue
        if end:
            raise SolutionMarkerError(f"{source}:{lineno}: END SOLUTION without BEGIN SOLUTION")
        if begin:
            if begin["hint"]:
                raise SolutionMarkerError(f"{source}:{lineno}: hints live in the exercise's checker (hint('name') "
                                          "in the notebook), not on the BEGIN SOLUTION line: the learner should see "
                                          "a hint only on request")
            block, count = lineno, count + 1
            indent = begin["indent"]
            function = next((m[1] for m in map(DEF.match, reversed(out)) if m), None)
            message = "exercise: replace this line by your code" + (
                f" (run hint('{function}') in a cell if you want a hint)" if function else "")
            out.append(f"{indent}# YOUR CODE HERE\n")
            out.append(f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})\n")
            continue
        out.append(line)
    if block is not None:
        raise SolutionMarkerError(f"{source}:{block}: BEGIN SOLUTION never closed by END SOLUTION")
    return "".join(out), count


def learner_text(solution: Path) -> str | None:
    """The learner version of a solution script, or None when it has no exercise."""
    text = solution.read_text(encoding="utf-8")
    stripped, count = strip_solutions(text, str(solution.relative_to(ROOT)))
    if count == 0:
        return None
    name = solution.stem
    badge, learner_badge = BADGE.format(name=name), LEARNER_BADGE.format(name=name)
    if badge not in stripped:
        raise SolutionMarkerError(f"{solution.name}: no Colab badge linking to ...{badge}")
    stripped = stripped.replace(badge, learner_badge)
    # the note goes right after the badge line (in the first markdown cell)
    lines = stripped.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if learner_badge in line)
    lines[at + 1:at + 1] = ["#\n", f"# {NOTE.format(name=name)}\n"]
    stripped = "".join(lines)
    ast.parse(stripped, filename=f"exercises/{solution.name}")  # the learner script must still be valid Python
    return stripped


def _cells(nb) -> list:
    """What a pair must agree on: each cell's type, source, tags and slide type (jupytext.toml keeps both)."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ())),
             c.metadata.get("slideshow", {}).get("slide_type")) for c in nb.cells]


def solutions() -> list[Path]:
    return sorted(SCRIPTS.glob("[0-9][0-9]_*.py"))


def learner_notebook(solution: Path) -> Path:
    """notebooks/scripts/NN_name.py -> notebooks/exercises/NN_name.ipynb."""
    return LEARNER / solution.with_suffix(".ipynb").name


def stale(solution: Path, text: str) -> list[str]:
    """What is out of date for this solution's learner pair: [] when both files are current."""
    py, ipynb = LEARNER_SCRIPTS / solution.name, learner_notebook(solution)
    problems = []
    if not py.exists() or py.read_text(encoding="utf-8") != text:
        problems.append(str(py.relative_to(ROOT)))
    if not ipynb.exists() or _cells(jupytext.read(ipynb)) != _cells(jupytext.reads(text, fmt="py:percent")):
        problems.append(str(ipynb.relative_to(ROOT)))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a learner notebook is stale; write nothing")
    args = parser.parse_args(argv)

    expected, problems = set(), []
    for solution in solutions():
        text = learner_text(solution)
        if text is None:
            continue
        expected |= {solution.name, solution.with_suffix(".ipynb").name}
        todo = stale(solution, text)
        if not todo:
            continue
        if args.check:
            problems += todo
            continue
        LEARNER_SCRIPTS.mkdir(parents=True, exist_ok=True)
        py, ipynb = LEARNER_SCRIPTS / solution.name, learner_notebook(solution)
        py.write_text(text, encoding="utf-8")
        from jupytext.cli import jupytext as jupytext_cli

        update = ["--update"] if ipynb.exists() else []
        jupytext_cli(["--quiet", "--to", "ipynb", *update, "--output", str(ipynb), str(py)])
        print(f"wrote {py.relative_to(ROOT)} and {ipynb.relative_to(ROOT)}")
    present = [p for p in [*LEARNER.glob("*.ipynb"), *LEARNER_SCRIPTS.glob("*.py")]]
    orphans = sorted(str(p.relative_to(ROOT)) for p in present if p.name not in expected)
    if orphans:
        problems += [f"{o} (no solution notebook with exercises; delete it)" for o in orphans]
    if problems:
        print("learner notebooks out of date:\n  " + "\n  ".join(problems)
              + ("\nrun: python tools/make_learner.py" if args.check else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
