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


# ---- a learner's path: 01-04 the tutorial, 05 on appendices ------------------------------------------

TUTORIAL = [path for path in NOTEBOOKS if int(path.name[:2]) <= 4]
APPENDICES = [path for path in NOTEBOOKS if int(path.name[:2]) > 4]
MAX_CELL_WORDS, MAX_TUTORIAL_WORDS, MAX_WORDS_BEFORE_CODE = 300, 2000, 150


def words(text: str) -> int:
    """Words a reader reads: the figure markers (HTML comments) are not shown."""
    return len(re.sub(r"<!--.*?-->", "", text, flags=re.S).split())


def markdown_cells(path) -> list[str]:
    return [source(c) for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_markdown_cell_is_over_300_words(path):
    long = {cell.split("\n")[0][:60]: words(cell) for cell in markdown_cells(path) if words(cell) > MAX_CELL_WORDS}
    assert not long, f"{path.name}: markdown cells over {MAX_CELL_WORDS} words: {long}"


@pytest.mark.parametrize("path", TUTORIAL, ids=[p.name for p in TUTORIAL])
def test_a_tutorial_notebook_is_short_and_starts_with_code(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    total = sum(words(source(c)) for c in cells if c["cell_type"] == "markdown")
    assert total <= MAX_TUTORIAL_WORDS, f"{path.name} has {total} words of markdown"
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    before = sum(words(source(c)) for c in cells[:first_code])
    assert before <= MAX_WORDS_BEFORE_CODE, f"{path.name}: {before} words before its first code cell"


def test_notebook_01_says_what_a_reader_should_know_beforehand():
    opening = markdown_cells(TUTORIAL[0])[0]
    assert "Before you start" in opening and "Python" in opening, opening


@pytest.mark.parametrize("path", APPENDICES, ids=[p.name for p in APPENDICES])
def test_the_notebooks_after_the_tutorial_are_marked_as_appendices(path):
    title = markdown_cells(path)[0].split("\n")[0]
    assert "Appendix" in title, f"{path.name}: its title should say it is an appendix: {title!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_questionnaire_beside_the_exercises(path):
    """fastbook's habit: a few questions a reader checks themselves on, next to the exercises."""
    sections = re.split(r"^(## .*)$", "\n".join(markdown_cells(path)), flags=re.M)
    by_heading = dict(zip(sections[1::2], sections[2::2]))
    assert "## Try next" in by_heading, f"{path.name} has no '## Try next' exercises"
    assert "## Questionnaire" in by_heading, f"{path.name} has no '## Questionnaire'"
    items = re.split(r"^\d+\.\s", by_heading["## Questionnaire"], flags=re.M)[1:]
    questions = [item for item in items if "?" in item]
    assert len(questions) >= 3, f"{path.name}: the questionnaire asks {len(questions)} questions"
