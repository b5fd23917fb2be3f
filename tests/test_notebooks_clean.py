"""Every notebook is committed clean (no outputs, no execution counts), numbered without gaps,
and starts with the shared set-up cell."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def planned_notebooks() -> list[str]:
    """The notebooks README.md links to (empty while there is no README)."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    return sorted(set(re.findall(r"notebooks/(\d\d_[a-z0-9_]+\.ipynb)", text)))


def code_cells(notebook):
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_notebooks_numbered_without_gaps():
    assert NOTEBOOKS, "no notebooks in notebooks/"
    numbers = []
    for path in NOTEBOOKS:
        match = NAME.match(path.name)
        assert match, f"{path.name}: expected NN_lowercase_name.ipynb"
        numbers.append(int(match[1]))
    assert len(set(numbers)) == len(numbers), f"two notebooks share a number: {numbers}"
    missing = [n for n in range(1, max(numbers) + 1) if n not in numbers]
    assert not missing, f"numbering has gaps: {[f'{n:02d}' for n in missing]} missing"


def test_readme_links_every_notebook():
    planned = planned_notebooks()
    unlisted = [p.name for p in NOTEBOOKS if p.name not in planned]
    assert not unlisted, f"README.md does not link {unlisted}"
    dead = [name for name in planned if not (ROOT / "notebooks" / name).exists()]
    assert not dead, f"README.md links notebooks that do not exist: {dead}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(code_cells(notebook)):
        assert cell.get("outputs") == [], f"{path.name}: code cell {i} has outputs"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_starts_with_the_shared_set_up_cell(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = code_cells(notebook)
    assert cells, f"{path.name} has no code cells"
    first = source(cells[0])
    assert "google.colab" in first and re.search(r"^import helpers\s*$", first, re.M), \
        f"{path.name}: the first code cell is not the shared set-up cell"
    if len(cells) > 1:
        assert "helpers.get_settings(" in source(cells[1]), \
            f"{path.name}: the second code cell should load the settings"


def test_the_set_up_cell_is_short():
    first = source(code_cells(json.loads(NOTEBOOKS[0].read_text(encoding="utf-8")))[0])
    assert len(first.rstrip("\n").split("\n")) <= MAX_SET_UP_LINES


def test_every_notebook_has_the_same_set_up_cell():
    firsts = {path.name: source(code_cells(json.loads(path.read_text(encoding="utf-8")))[0]).strip()
              for path in NOTEBOOKS}
    assert len(set(firsts.values())) == 1, "the set-up cells differ between notebooks"


DOCS_LINK = re.compile(r"\]\(((?:\.\./)?docs/[^)\s]+)\)")  # relative: the README's


def github_docs_link() -> re.Pattern:
    """A link to a file under docs/ by its absolute GitHub address (a page or its raw file), in the
    repository the set-up cell installs from: Colab opens a notebook alone, where ../docs/ is nothing."""
    setup = source(code_cells(json.loads(NOTEBOOKS[0].read_text(encoding="utf-8")))[0])
    repo = re.escape(re.search(r"git\+https://github\.com/([\w.-]+/[\w.-]+)", setup)[1])
    return re.compile(rf"\]\(https://(?:github\.com/{repo}/blob/main|raw\.githubusercontent\.com/{repo}/main)"
                      r"/(docs/[^)\s#]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_links_its_recorded_results(path):
    """Notebooks are committed without outputs: a reader sees a run's numbers and plots only through
    the recorded files each one links (docs/figures, docs/benchmark), by their GitHub addresses."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    text = "".join(source(c) for c in notebook["cells"] if c["cell_type"] == "markdown")
    relative = DOCS_LINK.findall(text)
    assert not relative, f"{path.name} links docs/ by relative paths, which Colab cannot open: {relative}"
    links = github_docs_link().findall(text)
    assert links, f"{path.name} links no recorded figure or result under docs/"
    dead = [link for link in links if not (ROOT / link).exists()]
    assert not dead, f"{path.name} links files that do not exist: {dead}"


def test_readme_links_to_docs_exist():
    links = DOCS_LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert links
    dead = [link for link in links if not (ROOT / link).exists()]
    assert not dead, f"README.md links files that do not exist: {dead}"


MAX_CELL_LINES = 26  # "a notebook cell does one idea"
MAX_SET_UP_LINES = 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_cells_stay_short(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    long = {i: n for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
            and (n := len(source(cell).rstrip("\n").split("\n"))) > MAX_CELL_LINES}
    assert not long, f"{path.name}: cells (index: lines) longer than {MAX_CELL_LINES} lines: {long}"
