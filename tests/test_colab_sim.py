"""Colab, simulated end to end: notebooks 01 and 07 run through their real setup cell in a kernel set up like
Colab's, and the package they import is the one that cell installed.

How the simulation works (everything under build/colab-sim/):

* **A Colab-like Python.** A venv of the base interpreter (``venv/``), without this project's editable install:
  it sees the main environment's packages (torch, numpy, matplotlib, ...: not downloaded again) through a
  ``.pth`` line to ``view/``, a folder of links to them that leaves out ddpm_lite and the notebook stack. Colab's
  notebook stack is installed into the venv itself: ipywidgets 7.7.1, notebook 6.5.7, ipykernel 6.17.1,
  IPython 7.34.0, jupyter_client 6.1.12 (pip fetches them once from the registry, or from pip's cache; the venv
  is kept between runs).
* **google.colab.** A stand-in package on the kernel's PYTHONPATH (``stub/google/colab``), imported at kernel
  start by a ``sitecustomize`` as Colab imports the real one, so ``"google.colab" in sys.modules`` is true and
  the setup cell installs. It records every call made to it in ``colab-calls.jsonl``.
* **The install from the published URL, offline.** The setup cell is not changed: it runs
  ``%pip install -q git+<REPO_URL>``. git's ``url.<base>.insteadOf`` (a ``GIT_CONFIG_GLOBAL`` file) points that URL
  at ``remote/``, a git repository holding a snapshot of this working tree (the tracked and untracked, not
  ignored files). pip clones it and builds the wheel locally (no build isolation: setuptools comes from the main
  environment), with ``--no-index``: a dependency that Colab's packages do not satisfy would fail here instead of
  being downloaded (torch must never be reinstalled).
* **The run.** nbclient executes the notebooks (solution versions, fast mode, strict checkers) in that kernel, in
  an empty working folder (Colab's /content), with one extra cell at the end that reports where ddpm_lite,
  ipywidgets and torch were imported from, their versions, the install's direct_url.json and REPO_URL.

The test fails if a cell fails, if the kernel imported the repository's ddpm_lite rather than the installed
wheel, if ipywidgets is not 7.7.1, if torch was installed into the venv, or if a notebook calls
``google.colab.output.enable_custom_widget_manager`` (it breaks core widgets in Colab). It is skipped, with the
reason, only when Colab's packages cannot be installed (no registry and nothing cached) or git is missing.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpm_lite.runtime import REPO_URL, _url_from_pyproject

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "build" / "colab-sim"
VENV, VIEW, STUB, REMOTE, CONTENT = (SIM / n for n in ("venv", "view", "stub", "remote", "content"))
KERNELS = SIM / "kernels"  # the kernel spec "colab-sim"
CALLS = SIM / "colab-calls.jsonl"
NOTEBOOKS = ("01_forward_noising", "07_unet")
# Colab's notebook stack (what `pip list` shows in a Colab runtime): replaces the main environment's
COLAB_PINS = ("ipywidgets==7.7.1", "notebook==6.5.7", "ipykernel==6.17.1", "ipython==7.34.0",
              "jupyter_client==6.1.12")
# left out of the view of the main environment: this project, and what the pins replace or conflict with
HIDDEN = ("ddpm_lite", "__editable__", "ipywidgets", "widgetsnbextension", "ipykernel", "ipython", "jupyter_client",
          "notebook", "nbclassic", "jupyterlab", "jupyter_server", "jupyter_lsp")
MARK = "COLAB-SIM "

pytestmark = pytest.mark.colab

GOOGLE_INIT = '__path__ = __import__("pkgutil").extend_path(__path__, __name__)\n'
COLAB_STUB = '''"""Colab's google.colab, stood in for by tests/test_colab_sim.py: calls are recorded, none acts."""
import json
import os
import sys
import types


def _record(name, args=(), kwargs=None):
    log = os.environ.get("COLAB_SIM_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "call": name, "args": [repr(a) for a in args],
                                "kwargs": {k: repr(v) for k, v in (kwargs or {}).items()}}) + "\\n")


class _Recorder(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = self.__name__ + "." + name

        def call(*args, **kwargs):
            _record(full, args, kwargs)

        return call


for _name in ("output", "files", "drive", "data_table"):
    _module = _Recorder("google.colab." + _name)
    sys.modules[_module.__name__] = _module
    globals()[_name] = _module
_record("import")
'''
SITECUSTOMIZE = "import google.colab  # noqa: F401  (as Colab's kernel does at start)\n"
REPORT_CELL = f'''import importlib.metadata, json, sys
import ddpm_lite, ddpm_lite.runtime, ipykernel, IPython, ipywidgets, torch
_dist = importlib.metadata.distribution("ddpm-lite")
print({MARK!r} + json.dumps({{
    "ddpm_lite": ddpm_lite.__file__, "ipywidgets": ipywidgets.__version__, "ipykernel": ipykernel.__version__,
    "IPython": IPython.__version__, "torch": torch.__file__, "torch_version": torch.__version__,
    "colab": "google.colab" in sys.modules, "repo_url": ddpm_lite.runtime.REPO_URL,
    "direct_url": json.loads(_dist.read_text("direct_url.json") or "null"), "executable": sys.executable}}))
'''


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def venv_site() -> Path:
    return next((VENV / "lib").glob("python3*/site-packages"))


def main_site() -> Path:
    import torch

    return Path(torch.__file__).resolve().parent.parent


def build_venv() -> None:
    """The Colab-like venv (kept between runs while the main environment and the pins stay the same)."""
    key = json.dumps({"pins": COLAB_PINS, "hidden": HIDDEN, "site": str(main_site()),
                      "entries": sorted(p.name for p in main_site().iterdir())})
    ready = SIM / "venv.ready"
    if ready.exists() and ready.read_text() == key and (VENV / "bin" / "python").exists():
        return
    shutil.rmtree(VENV, ignore_errors=True)
    shutil.rmtree(VIEW, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", "--without-pip", VENV])
    if made.returncode:
        pytest.skip(f"cannot create a venv with {base}: {made.stderr.strip()[-300:]}")
    VIEW.mkdir(parents=True)
    for entry in main_site().iterdir():
        name = entry.name.lower().replace("-", "_")
        if name.startswith(HIDDEN) or name.endswith(".pth") or name == "__pycache__":
            continue
        (VIEW / entry.name).symlink_to(entry.resolve())
    (venv_site() / "_main_environment.pth").write_text(f"{VIEW}\n")
    pip = run([VENV / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *COLAB_PINS])
    if pip.returncode:
        shutil.rmtree(VENV, ignore_errors=True)
        reason = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
        pytest.skip(f"cannot install Colab's notebook stack ({', '.join(COLAB_PINS)}) without the package "
                    f"registry or pip's cache: {reason}")
    ready.write_text(key)


def snapshot_remote() -> str:
    """A git repository holding this working tree (tracked and untracked, not ignored files); its commit id."""
    if shutil.which("git") is None:
        pytest.skip("git is needed: the setup cell installs with pip from a git URL")
    files = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True).stdout.split("\0")
    shutil.rmtree(REMOTE, ignore_errors=True)
    for rel in filter(None, files):
        source = ROOT / rel
        if source.is_file():
            target = REMOTE / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=colab-sim", "-c", "user.email=colab-sim@localhost", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot of the working tree"]):
        run(git + cmd, cwd=REMOTE, check=True)
    return run(["git", "rev-parse", "HEAD"], cwd=REMOTE, check=True).stdout.strip()


def kernel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "JUPYTER", "GIT_", "DDPM_LITE_"))}
    (SIM / "gitconfig").write_text(f'[url "file://{REMOTE}"]\n\tinsteadOf = {REPO_URL}\n')
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(STUB), COLAB_SIM_LOG=str(CALLS),
        DDPM_LITE_FAST="1", DDPM_LITE_STRICT="1", DDPM_LITE_DATA=str(SIM / "data"), OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="", MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYDEVD_DISABLE_FILE_VALIDATION="1",  # ipykernel 6's debugger warns about frozen modules otherwise
        # the setup cell's `%pip install git+REPO_URL`: offline, from the snapshot, built here
        PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
        GIT_CONFIG_GLOBAL=str(SIM / "gitconfig"), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


@pytest.fixture(scope="module")
def colab():
    """The simulated Colab: venv, stub, kernel spec and snapshot; the commit id of the snapshot. Held under a lock:
    two test runs on one machine would share build/colab-sim."""
    pytest.importorskip("nbclient")
    SIM.mkdir(parents=True, exist_ok=True)
    with open(SIM / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield set_up()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def set_up() -> str:
    SIM.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    build_venv()
    shutil.rmtree(STUB, ignore_errors=True)
    (STUB / "google" / "colab").mkdir(parents=True)
    (STUB / "google" / "__init__.py").write_text(GOOGLE_INIT)
    (STUB / "google" / "colab" / "__init__.py").write_text(COLAB_STUB)
    (STUB / "sitecustomize.py").write_text(SITECUSTOMIZE)
    spec = KERNELS / "colab-sim"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(VENV / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab (simulated)", "language": "python"}))
    run([VENV / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "ddpm-lite"])  # the cell must install it
    commit = snapshot_remote()
    CALLS.unlink(missing_ok=True)
    shutil.rmtree(CONTENT, ignore_errors=True)
    CONTENT.mkdir()
    print(f"colab-sim: set up in {time.perf_counter() - start:.0f} s")
    return commit


def execute(name: str) -> tuple[object, dict, float]:
    """Run notebooks/<name>.ipynb in the simulated Colab kernel; (notebook, the report, seconds)."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    client = NotebookClient(nb, kernel_name="colab-sim", timeout=900, resources={"metadata": {"path": str(CONTENT)}})
    specs = KernelSpecManager(kernel_dirs=[str(KERNELS)])
    client.km = client.kernel_manager_class(kernel_name="colab-sim", config=client.config, kernel_spec_manager=specs)
    start = time.perf_counter()
    client.execute(env=kernel_env(), cwd=str(CONTENT))
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    line = next(line for line in text.splitlines() if line.startswith(MARK))
    print(f"colab-sim: {name} ran in {seconds:.0f} s")
    return nb, json.loads(line[len(MARK):]), seconds


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values())
                   for o in cell.get("outputs", ()))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_simulated_colab_from_its_setup_cell(name, colab):
    nb, report, seconds = execute(name)  # a failing cell raises CellExecutionError here
    site = venv_site().resolve()
    # the package came from the setup cell's install, not from the repository
    assert Path(report["ddpm_lite"]).resolve().is_relative_to(site), report["ddpm_lite"]
    assert report["direct_url"]["url"] == REPO_URL and report["direct_url"]["vcs_info"]["commit_id"] == colab
    assert report["repo_url"] == REPO_URL == _url_from_pyproject((ROOT / "pyproject.toml").read_text())
    # Colab's stack, and the main environment's torch (never reinstalled)
    assert report["ipywidgets"] == "7.7.1" and report["ipykernel"] == "6.17.1" and report["IPython"] == "7.34.0"
    assert not Path(report["torch"]).resolve().is_relative_to(site) and not (site / "torch").exists()
    assert report["colab"] and Path(report["executable"]).parent == VENV / "bin"
    setup = nb.cells[1]
    assert "colab-setup" in setup.metadata.get("tags", ())
    assert "ERROR" not in outputs_text(setup), outputs_text(setup)
    calls = [json.loads(line)["call"] for line in CALLS.read_text().splitlines()]
    assert "import" in calls and "google.colab.output.enable_custom_widget_manager" not in calls
    widgets = [o for cell in nb.cells for o in cell.get("outputs", ())
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if name == "07_unet":
        assert widgets, "07 shows its explorers and the training monitor as widgets"
        assert all(w["data"]["application/vnd.jupyter.widget-view+json"]["version_major"] == 2 for w in widgets)
        assert "CPU path: no CUDA GPU here" in "".join(outputs_text(c) for c in nb.cells)
    assert seconds < 600
