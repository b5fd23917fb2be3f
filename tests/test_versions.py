"""Every lower bound the project declares is a version CI runs: the Colab leg installs under
.ci/colab-constraints.txt, which pins each bounded package at exactly its lower bound."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / ".ci" / "colab-constraints.txt"


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple:
    """2.11 and 2.11.0 are the same release."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def pins() -> dict:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line.strip())
        if match:
            found[normal(match[1])] = match[2]
    return found


def lower_bounds() -> list[tuple[str, str, str]]:
    """(file, package, lower bound) from requirements.txt and pyproject.toml's dependencies."""
    pattern = re.compile(r"""^\s*"?([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)""")
    bounds = []
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M)[1].splitlines()
    for source, lines in (("requirements.txt", requirements), ("pyproject.toml", dependencies)):
        for line in lines:
            match = pattern.match(line)
            if match:
                bounds.append((source, normal(match[1]), match[2]))
    return bounds


def test_the_constraints_name_their_source_and_python():
    text = CONSTRAINTS.read_text()
    assert re.search(r"googlecolab/backend-info [0-9a-f]{7,} \d{4}-\d\d-\d\d", text)
    assert re.search(r"^# python 3\.\d+$", text, re.M)


def test_there_are_bounds_to_check():
    names = {name for _, name, _ in lower_bounds()}
    assert {"torch", "transformers", "accelerate", "datasets", "tokenizers", "numpy"} <= names


@pytest.mark.parametrize("source,name,bound", lower_bounds())
def test_every_lower_bound_is_a_version_ci_runs(source, name, bound):
    pinned = pins().get(name)
    assert pinned is not None, f"{source}: {name}>={bound}, but no CI leg pins {name}"
    assert release(pinned) == release(bound), (
        f"{source}: {name}>={bound}, but CI's Colab leg runs {name}=={pinned}: raise the bound to "
        f"{pinned} or pin {bound} in {CONSTRAINTS.name}")


def test_the_readme_names_the_versions_ci_runs():
    readme = (ROOT / "README.md").read_text()
    paragraph = re.search(r"^Tested versions.*?(?:\n\n|\Z)", readme, re.S | re.M)
    assert paragraph, "README.md has no paragraph starting 'Tested versions'"
    line = " ".join(paragraph[0].split())
    python = re.search(r"^# python (3\.\d+)$", CONSTRAINTS.read_text(), re.M)[1]
    quoted = dict(re.findall(r"\b(Python|torch|transformers|accelerate|datasets) (\d[\d.]*\d)", line))
    expected = {"Python": python, **{k: pins()[k] for k in ("torch", "transformers", "accelerate", "datasets")}}
    for name, version in expected.items():
        assert name in quoted and release(quoted[name]) == release(version), (name, line)
