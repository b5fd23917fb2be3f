"""The Colab path, offline: the set-up cell installs the project with pip from the repository it
names, and a notebook runs to its end from an empty folder, with nothing but the notebook.

Three stand-ins make that work without the network. A copy of the working tree, committed into a
git repository under a temporary folder, stands in for GitHub: the copied notebook's install line
is pointed at it the way a fork points the notebooks at itself (the README's sed). A virtual
environment that sees this machine's packages stands in for the Colab runtime (pip finds every
dependency installed, and PIP_NO_INDEX keeps it off any index). A `google.colab` module, imported
at start-up by a sitecustomize beside it, makes the set-up cell take its Colab branch.
"""
import json
import os
import re
import site
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = ROOT / "README.md"
GITHUB = re.compile(r"git\+https://github\.com/([\w.-]+/[\w.-]+)")


def code_sources(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


SETUP_CELL = code_sources(NOTEBOOKS[0])[0]


def repo_in_setup_cell() -> str:
    """The GitHub owner/name the set-up cell installs from: the one place it is named."""
    found = GITHUB.findall(SETUP_CELL)
    assert len(found) == 1, "the set-up cell should install from one git+https://github.com/owner/name"
    return found[0]


# ---- the set-up cell as a reader meets it -------------------------------------------------------

def test_the_set_up_cell_is_short_plain_and_installs_the_project_only():
    lines = SETUP_CELL.rstrip("\n").split("\n")
    assert len(lines) <= 6, f"the set-up cell has {len(lines)} lines"
    long = [line for line in lines if len(line) > 100]
    assert not long, f"set-up lines over 100 characters: {long}"
    chained = [line for line in lines if not line.lstrip().startswith("#") and
               (";" in line or re.match(r"\s*(try|except|else|finally|if|for|with)\b.*:\s*[^\s#]", line))]
    assert not chained, f"chained one-liners in the set-up cell: {chained}"
    installs = [line for line in lines if "pip install" in line and not line.lstrip().startswith("#")]
    name = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    assert len(installs) == 1 and f'"{name} @ git+https://github.com/{repo_in_setup_cell()}"' in installs[0], \
        f"the set-up cell should install {name} from its repository and nothing else: {installs}"
    assert re.search(r"^import helpers$", SETUP_CELL, re.M)


def test_the_package_holds_everything_the_notebooks_import_or_run():
    """A module a notebook imports from the repository, or runs with `python -m`, is installed by
    the set-up cell's one `pip install`; no notebook runs a script by its path."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    installed = set(tool["py-modules"]) | set(tool["packages"])
    for path in NOTEBOOKS:
        code = "\n".join(code_sources(path)[1:])
        names = (re.findall(r"^\s*(?:import|from) ([\w.]+)", code, re.M) +
                 re.findall(r"python -m ([\w.]+)", code))
        ours = {name.split(".")[0] for name in names
                if (ROOT / f"{name.split('.')[0]}.py").exists() or (ROOT / name.split(".")[0]).is_dir()}
        assert ours <= installed, f"{path.name} needs {sorted(ours - installed)}, which the package lacks"
        without_comments = re.sub(r"(^|\s)#\s.*$", "", code, flags=re.M)
        scripts = re.findall(r"python3?\s+\S+\.py\b|benchmarks/\w+\.py|[\"']\w+\.py[\"']", without_comments)
        assert not scripts, f"{path.name} runs scripts by path ({scripts}): use python -m benchmarks.<name>"


def test_readme_badges_and_fork_instructions_name_the_set_up_cells_repository():
    repo = repo_in_setup_cell()
    readme = README.read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        url = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}"
        assert url in readme, f"README.md has no Colab badge for {path.name} ({url})"
    others = set(re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/", readme)) - {repo}
    assert not others, f"README.md's Colab links name other repositories: {sorted(others)}"
    assert re.search(rf"sed -i '?s#{re.escape(repo)}#", readme), \
        "README.md should show the sed with which a fork points the notebooks at itself"


def run_set_up_cell_with_a_recording_ipython(cwd, colab=None) -> list:
    """The set-up cell as IPython turns it into Python, run with a get_ipython() that records the
    magics it is asked to run instead of running them; returns those (magic, line) pairs."""
    from IPython.core.inputtransformer2 import TransformerManager

    program = ("import json\ncalls = []\nclass Recorder:\n"
               "    def run_line_magic(self, name, line):\n        calls.append((name, line))\n"
               "get_ipython = Recorder\n" + TransformerManager().transform_cell(SETUP_CELL) +
               "\nprint(json.dumps(calls))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (colab, ROOT) if p)
    result = subprocess.run([sys.executable, "-c", program], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_in_a_clone_the_set_up_cell_installs_nothing_and_in_colab_only_the_project(tmp_path):
    assert run_set_up_cell_with_a_recording_ipython(tmp_path) == []  # helpers importable: a clone
    colab = tmp_path / "colab"
    (colab / "google" / "colab").mkdir(parents=True)
    (colab / "google" / "colab" / "__init__.py").write_text("")
    (colab / "sitecustomize.py").write_text("import google.colab\n")
    calls = run_set_up_cell_with_a_recording_ipython(tmp_path, colab)
    assert [name for name, _ in calls] == ["pip"], calls
    assert f"git+https://github.com/{repo_in_setup_cell()}" in calls[0][1]


# ---- whole notebooks, run the way Colab runs them -------------------------------------------------

@pytest.fixture(scope="module")
def stand_in_github(tmp_path_factory):
    """A git repository holding the working tree as it is (tracked and new files, not ignored ones)."""
    repo = tmp_path_factory.mktemp("github") / "smart-batching"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the working tree"]):
        subprocess.run(git + command, cwd=repo, check=True)
    return repo


@pytest.fixture(scope="module")
def stand_in_runtime(tmp_path_factory):
    """(python, PYTHONPATH): a fresh environment that sees this machine's packages, without the
    project, and a folder that makes it look like Colab ('google.colab' in sys.modules)."""
    folder = tmp_path_factory.mktemp("runtime")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    colab = folder / "colab"
    (colab / "google" / "colab").mkdir(parents=True)
    (colab / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module."""\n')
    packages = site.getsitepackages()  # this interpreter's: a virtual environment's, where it is one
    (colab / "sitecustomize.py").write_text(
        "import site, sys\n"
        f"for folder in {packages!r}:  # the packages of the Python running the tests\n"
        "    site.addsitedir(folder)\n"
        "# This machine's `pip install -e .` of a clone shows through; Colab has no such install, so\n"
        "# its import hook is taken out (the set-up cell must install the project).\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable___smart_batching')]\n"
        "import google.colab  # as Colab's kernel has it\n")
    found = subprocess.run([str(python), "-c", "import helpers"], cwd=folder, capture_output=True,
                           env=runtime_env(colab))
    assert found.returncode != 0, "the stand-in runtime already has helpers: it would test nothing"
    return python, colab


def runtime_env(colab: Path, **variables) -> dict:
    """A fresh runtime's environment: none of our variables but the ones given, offline."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SMART_BATCHING_") and k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env.update(PYTHONPATH=str(colab), PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYDEVD_DISABLE_FILE_VALIDATION="1", **variables)
    return env


def small_aclimdb(folder: Path, per_class: int = 6) -> Path:
    """An archive in the official layout (aclImdb/<split>/<pos|neg>/<id>_<rating>.txt)."""
    from support.imdb import synthetic_reviews

    texts, labels = synthetic_reviews(4 * per_class, seed=3)
    path = folder / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for i, (text, label) in enumerate(zip(texts, labels)):
            split, kind = ("train", "test")[i % 2], ("neg", "pos")[int(label)]
            member = folder / f"{i}_{7 if label else 2}.txt"
            member.write_text(text, encoding="utf-8")
            archive.add(member, arcname=f"aclImdb/{split}/{kind}/{member.name}")
    return path


def run_like_colab(name, tmp_path, github, runtime, **variables):
    """Execute a copy of notebook `name`, alone in an empty folder, in the stand-in runtime, with
    its install line pointed at the stand-in GitHub; return the executed notebook's code cells."""
    python, colab = runtime
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    setup = notebook.cells[next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")]
    setup.source = GITHUB.sub(f"git+file://localhost{github}", setup.source)  # what a fork's sed does
    notebook.cells.append(nbformat.v4.new_code_cell("print(helpers.__file__)"))
    run = tmp_path / "run"
    run.mkdir()
    nbformat.write(notebook, run / name)
    command = [str(python), "-m", "nbconvert", "--to", "notebook", "--execute",
               "--ExecutePreprocessor.timeout=900", "--output", "executed.ipynb", name]
    result = subprocess.run(command, cwd=run, env=runtime_env(colab, **variables), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, f"{name} failed in the stand-in Colab:\n{result.stderr[-6000:]}"
    code = [c for c in nbformat.read(run / "executed.ipynb", as_version=4).cells if c.cell_type == "code"]
    installed_at = text_of(code[-1]).strip()
    assert installed_at.startswith(str(python.parent.parent)), \
        f"helpers came from {installed_at}, not from the package the set-up cell installed"
    return code


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs)


def test_notebook_01_reads_real_reviews_in_colab_without_a_gpu(tmp_path, stand_in_github, stand_in_runtime):
    """No profile given, no GPU: `auto` gives notebook 01, which trains nothing, the full profile and
    real reviews (here a small archive in the official layout), and the settings cell says why."""
    archive = small_aclimdb(tmp_path)
    code = run_like_colab("01_load_imdb.ipynb", tmp_path, stand_in_github, stand_in_runtime,
                          CUDA_VISIBLE_DEVICES="", SMART_BATCHING_DATA=str(archive))
    settings_output = text_of(code[1])
    assert "Profile 'full' (auto)" in settings_output and "trains no model" in settings_output, settings_output
    assert "reviews from " + str(archive) in "".join(text_of(cell) for cell in code)
    assert (tmp_path / "run" / "outputs" / "figures" / "01_class_balance.png").exists(), \
        "an installed package should write its figures under the working folder"


def test_notebook_04_trains_in_colab_in_the_tiny_profile(tmp_path, stand_in_github, stand_in_runtime):
    run_like_colab("04_fine_tune_and_evaluate.ipynb", tmp_path, stand_in_github, stand_in_runtime,
                   SMART_BATCHING_PROFILE="tiny")
