"""The Colab path, offline: the notebooks' set-up cell fetches helpers.py from where the project
lives, and a notebook runs to its end in a runtime that has nothing but the notebook.

A stand-in `google.colab` module (a folder on PYTHONPATH) makes the set-up cell take its Colab
branch; a small HTTP server on 127.0.0.1 serves the repository in place of GitHub
(SMART_BATCHING_REPO_RAW points at it); SMART_BATCHING_COLAB_PIP='' skips the pip install.
"""
import functools
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = ROOT / "README.md"


def code_sources(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


SETUP_CELL = code_sources(NOTEBOOKS[0])[0]


def repo_in_setup_cell() -> str:
    """The GitHub owner/name the set-up cell fetches from by default: the one place it is named."""
    match = re.search(r'os\.environ\.get\("SMART_BATCHING_REPO", "([\w.-]+/[\w.-]+)"\)', SETUP_CELL)
    assert match, "the set-up cell should read SMART_BATCHING_REPO with an owner/name default"
    return match[1]


REQUESTS = []  # (path, status) of every request the test server answered


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        REQUESTS.append((self.path, int(code)))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_repo():
    """http://127.0.0.1:<port>: the repository root, as raw.githubusercontent.com would serve it."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(ROOT)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def requests_during(action):
    """Run action(); return its result and the requests the test server answered meanwhile."""
    before = len(REQUESTS)
    result = action()
    return result, REQUESTS[before:]


@pytest.fixture(scope="module")
def stand_in_colab(tmp_path_factory):
    """A folder that makes `import google.colab` work (google stays a namespace package)."""
    folder = tmp_path_factory.mktemp("stand_in_colab")
    (folder / "google" / "colab").mkdir(parents=True)
    (folder / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module."""\n')
    return folder


def runtime_env(repo_raw, colab_folder=None, **extra):
    """The environment of a fresh runtime: none of our variables but the ones given, offline."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SMART_BATCHING_") and k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env.update(SMART_BATCHING_REPO_RAW=repo_raw, SMART_BATCHING_COLAB_PIP="", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYDEVD_DISABLE_FILE_VALIDATION="1")
    if colab_folder is not None:
        env["PYTHONPATH"] = str(colab_folder)
    env.update(extra)
    return env


def run_setup_cell(cwd, env):
    """The set-up cell as a plain Python program (it uses no IPython syntax)."""
    return subprocess.run([sys.executable, "-c", SETUP_CELL], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the one place that names the project ------------------------------------------------------

def test_every_notebook_has_the_same_set_up_and_settings_cells():
    firsts = {path.name: code_sources(path)[:2] for path in NOTEBOOKS}
    setups = {name: cells[0] for name, cells in firsts.items()}
    settings = {name: cells[1] for name, cells in firsts.items()}
    assert len(set(setups.values())) == 1, "the set-up cells differ between notebooks"
    assert len(set(settings.values())) == 1, "the settings cells differ between notebooks"
    settings_cell = next(iter(settings.values()))
    assert "helpers.get_settings(" in settings_cell and "profile=" in settings_cell, \
        "the settings cell should call helpers.get_settings and show how to pick a profile"


def test_readme_badges_open_every_notebook_from_the_set_up_cells_repository():
    repo = repo_in_setup_cell()
    readme = README.read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        url = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}"
        assert url in readme, f"README.md has no Colab badge for {path.name} ({url})"
    others = set(re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/", readme)) - {repo}
    assert not others, f"README.md's Colab links name other repositories: {sorted(others)}"
    assert "SMART_BATCHING_REPO" in readme, "README.md should say how a fork points the notebooks at itself"


# ---- the set-up cell on its own -----------------------------------------------------------------

def files_in_setup_cell() -> list[str]:
    """The set-up cell's FILES, computed as the cell computes them."""
    match = re.search(r"^FILES = .*?(?=^\S)", SETUP_CELL, re.M | re.S)
    assert match, "the set-up cell should define FILES, the one list of what it fetches"
    namespace = {}
    exec(match[0], namespace)
    return namespace["FILES"]


def repository_modules_imported_by(path: Path, seen=None) -> set[str]:
    """The repository's own files that `path` imports, directly or through each other."""
    import ast

    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            for candidate in (ROOT / (name.replace(".", "/") + ".py"),
                              ROOT / name.replace(".", "/") / "__init__.py"):
                relative = candidate.relative_to(ROOT).as_posix()
                if candidate.exists() and relative not in seen:
                    seen.add(relative)
                    if relative.endswith(".py"):
                        repository_modules_imported_by(candidate, seen)
            if "." in name:  # a submodule needs its package's __init__ too
                package_init = ROOT / name.split(".")[0] / "__init__.py"
                if package_init.exists():
                    seen.add(package_init.relative_to(ROOT).as_posix())
    return seen


def test_files_are_everything_helpers_imports_and_the_notebooks_run():
    files = files_in_setup_cell()
    assert files[0] == "helpers.py" and len(set(files)) == len(files), files
    needed = {"helpers.py"} | repository_modules_imported_by(ROOT / "helpers.py")
    run = {f"benchmarks/{name}" for path in NOTEBOOKS
           for name in re.findall(r"benchmarks/(\w+\.py)", path.read_text(encoding="utf-8"))}
    for path in NOTEBOOKS:  # the repository's top-level modules a notebook imports or runs
        code = "\n".join(code_sources(path)[1:])
        names = re.findall(r"^\s*(?:import|from) (\w+)", code, re.M) + re.findall(r"\b(\w+)\.py\b", code)
        run |= {f"{name}.py" for name in names if (ROOT / f"{name}.py").exists()}
    for script in sorted(run):  # a script the notebooks run needs what it imports too
        needed |= {script} | repository_modules_imported_by(ROOT / script)
    assert needed <= set(files), f"the set-up cell does not fetch {sorted(needed - set(files))}"
    assert all((ROOT / name).exists() for name in files), "FILES names a file the repository lacks"


def test_set_up_cell_fetches_its_files_once_per_runtime(tmp_path, served_repo, stand_in_colab):
    env = runtime_env(served_repo, stand_in_colab)
    first, requests = requests_during(lambda: run_setup_cell(tmp_path, env))
    assert first.returncode == 0, first.stderr[-3000:]
    assert requests == [(f"/{name}", 200) for name in files_in_setup_cell()]
    assert (tmp_path / "helpers.py").stat().st_size > 10_000
    # Run again: every file is already there, so no request at all.
    again, requests = requests_during(lambda: run_setup_cell(tmp_path, env))
    assert again.returncode == 0, again.stderr[-3000:]
    assert requests == []


def test_a_404_says_in_one_line_what_it_tried_and_what_to_set(tmp_path, served_repo, stand_in_colab):
    """In a kernel, as Colab runs it: the error is the message alone, not urllib's traceback."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP_CELL)])
    notebook.metadata["kernelspec"] = dict(name="python3", display_name="Python 3", language="python")
    nbformat.write(notebook, tmp_path / "set_up.ipynb")
    repo_raw = f"{served_repo}/no-such-fork/main"
    result = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
                             "--output", "executed.ipynb", "set_up.ipynb"], cwd=tmp_path,
                            env=runtime_env(repo_raw, stand_in_colab), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = nbformat.read(tmp_path / "executed.ipynb", as_version=4).cells[0].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "SystemExit", outputs
    message = errors[0].evalue
    assert len(message.splitlines()) == 1, message
    assert f"{repo_raw}/helpers.py" in message and "404" in message and "SMART_BATCHING_REPO" in message
    shown = "".join(errors[0].traceback)
    assert len(errors[0].traceback) <= 2 and "urllib" not in shown, shown
    assert not (tmp_path / "helpers.py").exists(), "a failed fetch should leave no helpers.py behind"


def test_no_server_at_all_is_one_line_too(tmp_path, stand_in_colab):
    """The same cell as a plain Python program: one line on stderr, no traceback."""
    repo_raw = f"http://127.0.0.1:{free_port()}/main"
    result = run_setup_cell(tmp_path, runtime_env(repo_raw, stand_in_colab))
    message = result.stderr.strip()
    assert result.returncode != 0 and len(message.splitlines()) == 1, message
    assert f"{repo_raw}/helpers.py" in message and "SMART_BATCHING_REPO" in message


def test_pip_runs_in_colab_only_and_a_failure_names_the_variable(tmp_path, served_repo, stand_in_colab):
    failing_pip = "--no-index --quiet /no/such/package.whl"  # fails at once, without the network
    result = run_setup_cell(tmp_path, runtime_env(served_repo, stand_in_colab,
                                                  SMART_BATCHING_COLAB_PIP=failing_pip))
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "pip install" in last_line and "SMART_BATCHING_COLAB_PIP" in last_line, result.stderr[-2000:]
    # Outside Colab the same setting is never used: the cell finds or fetches helpers.py, no pip.
    result = run_setup_cell(tmp_path, runtime_env(served_repo, None, SMART_BATCHING_COLAB_PIP=failing_pip))
    assert result.returncode == 0, result.stderr[-3000:]


# ---- whole notebooks, run the way Colab runs them -------------------------------------------------

def run_like_colab(notebook, tmp_path, env):
    """Execute a copy of `notebook`, alone in `tmp_path`; return the executed notebook."""
    (tmp_path / notebook.name).write_bytes(notebook.read_bytes())
    command = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
               "--ExecutePreprocessor.timeout=900", "--output", "executed.ipynb", notebook.name]
    result, requests = requests_during(lambda: subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800))
    assert result.returncode == 0, f"{notebook.name} failed in the stand-in Colab:\n{result.stderr[-6000:]}"
    fetched = [(f"/{name}", 200) for name in files_in_setup_cell()]
    assert requests[:len(fetched)] == fetched, f"the set-up cell's files were not fetched from the test server: {requests}"
    executed = json.loads((tmp_path / "executed.ipynb").read_text(encoding="utf-8"))
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert code[-1]["execution_count"] is not None, "the last cell did not run"
    return code


def text_of(cell) -> str:
    return "".join("".join(o.get("text", "")) for o in cell["outputs"])


def test_notebook_01_runs_in_colab_without_a_gpu_in_the_tiny_profile(tmp_path, served_repo, stand_in_colab):
    # No profile given, no GPU visible: `auto` in Colab must fall back to tiny, and say so.
    env = runtime_env(served_repo, stand_in_colab, CUDA_VISIBLE_DEVICES="")
    code = run_like_colab(ROOT / "notebooks" / "01_load_imdb.ipynb", tmp_path, env)
    settings_output = text_of(code[1])
    assert "Profile 'tiny'" in settings_output and 'profile="full"' in settings_output, settings_output
    assert re.search(r"^\s*profile\s+tiny$", settings_output, re.M), settings_output


def test_notebook_04_trains_in_colab_in_the_tiny_profile(tmp_path, served_repo, stand_in_colab):
    env = runtime_env(served_repo, stand_in_colab, SMART_BATCHING_PROFILE="tiny")
    run_like_colab(ROOT / "notebooks" / "04_fine_tune_and_evaluate.ipynb", tmp_path, env)
