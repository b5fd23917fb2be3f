"""Guards that keep the notebooks' and the README's prose true of the code and the recorded runs.

* A setting the prose asks the reader to change in the settings cell is a (commented) line of that
  cell, and the notebook's code reads it (directly, or through a helper it hands `settings` to).
* Every image a notebook or the README embeds exists in the repository; notebooks from 02 on embed
  their recorded results with an address that resolves on GitHub and in Colab, and a caption.
* Every line of a notebook's settings cell offers a setting that notebook reads.
* A number quoted from a recorded run carries a marker naming its source (docs/recorded.py), and
  the recorded value, formatted, is what the text says; a bound written before it ("under 2",
  "about 6", "within 15 %") holds for the recorded value itself, not only for its rounding. The
  benchmark table of docs/results.md is checked cell by cell against docs/benchmark/results.json.
* A machine the prose names (an Intel Xeon, an AMD EPYC) is quoted from the record it ran, by a
  marker reading that record's cpu_name, so no sentence can pin one machine's run on another.
"""
import ast
import dataclasses
import inspect
import itertools
import json
import re
import sys
from pathlib import Path

import pytest

import helpers
import support.device
import support.environment
import support.imdb
import support.memory
import support.models

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The prose a reader reads: the notebooks' markdown, the README and the hand-written pages of docs/
# (the results.md files a benchmark writes are its output, not prose).
PAGES = [README, *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("*/README.md"))]
PROSE = [*NOTEBOOKS, *PAGES]
SETTINGS = {f.name for f in dataclasses.fields(helpers.Settings)}
sys.path.insert(0, str(ROOT / "docs"))
import recorded  # noqa: E402


def cells(path, kind):
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == kind]


def markdown_of(path) -> str:
    return "\n\n".join(cells(path, "markdown")) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")


# ---- settings the prose asks the reader to change ---------------------------------------------------

def settings_named_for_the_settings_cell(markdown: str) -> set[str]:
    """Settings a sentence mentioning the settings cell names as `name` or `name=value`."""
    named = set()
    for sentence in re.split(r"(?<=[.!?])\s+|\n\n", markdown):
        if "settings cell" in sentence:
            named |= {name for name in re.findall(r"`(?:settings\.)?(\w+)\s*=?[^`]*`", sentence)
                      if name in SETTINGS}
    return named


MODULES = [helpers, support.device, support.environment, support.imdb, support.memory, support.models]


def settings_read_by(function, seen=None) -> set[str]:
    """The Settings fields a function reads from its `settings`, and through the functions it hands
    `settings` to (helpers and support), transitively; Settings' own methods count too."""
    seen = set() if seen is None else seen
    if function in seen:
        return set()
    seen.add(function)
    try:
        tree = ast.parse(inspect.getsource(function).lstrip() if not inspect.isclass(function)
                         else inspect.getsource(function))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return set()
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
            read.add(node.attr)
            method = getattr(helpers.Settings, node.attr, None)
            if callable(method):
                read |= {a.attr for a in ast.walk(ast.parse(inspect.getsource(method).lstrip()))
                         if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id == "self"}
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == "settings"
                                              for a in [*node.args, *[k.value for k in node.keywords]]):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for module in MODULES:
                callee = getattr(module, name or "", None)
                if callable(callee):
                    read |= settings_read_by(callee, seen)
    return read


def settings_read_by_notebook(path) -> set[str]:
    code = "\n".join(cells(path, "code")[2:])  # after the set-up and settings cells
    read = set(re.findall(r"\bsettings\.(\w+)", code))
    for method in [m for m in read if callable(getattr(helpers.Settings, m, None))]:
        read |= settings_read_by(getattr(helpers.Settings, method)) | {"train_size", "test_size",
                                                                        "comparison_size"}
    for name in set(re.findall(r"\bhelpers\.(\w+)\(", code)):
        if re.search(rf"helpers\.{name}\((?:[^()]|\([^()]*\))*\bsettings\b", code):
            read |= settings_read_by(getattr(helpers, name))
    return read


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_settings_the_prose_asks_for_are_in_the_settings_cell_and_used(path):
    settings_cell = cells(path, "code")[1]
    offered = set(re.findall(r"^\s*#\s*(\w+)=", settings_cell, re.M))
    named = settings_named_for_the_settings_cell(markdown_of(path))
    assert named <= offered, f"{path.name} asks for {sorted(named - offered)}, which its settings cell lacks"
    unread = named - settings_read_by_notebook(path)
    assert not unread, f"{path.name} asks the reader to change {sorted(unread)}, which its code never reads"


def offered_in_settings_cell(settings_cell: str) -> set[str]:
    """The settings a settings cell offers: every `name=` on its commented lines (before a comment)."""
    offered = set()
    for line in settings_cell.splitlines():
        commented = re.match(r"\s*#\s*(\w+=.*)", line)
        if commented:
            offered |= set(re.findall(r"(\w+)=", commented[1].split("  #")[0]))
    return offered


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_setting_the_settings_cell_offers_is_read(path):
    offered = offered_in_settings_cell(cells(path, "code")[1])
    unread = offered - settings_read_by_notebook(path) - {"profile"}  # get_settings reads the profile
    assert not unread, f"{path.name}'s settings cell offers {sorted(unread)}, which the notebook never reads"


def test_the_settings_guard_would_catch_an_unread_setting():
    prose = "Then uncomment `pad_to_multiple_of=8` in the settings cell and run it again."
    assert settings_named_for_the_settings_cell(prose) == {"pad_to_multiple_of"}
    assert "pad_to_multiple_of" not in settings_read_by(helpers.prepare_data)
    assert {"train_size", "model_name", "max_len", "seed"} <= settings_read_by(helpers.prepare_data)
    assert {"learning_rate", "weight_decay", "epochs"} <= settings_read_by(helpers.fine_tune)
    cell = "settings = helpers.get_settings(\n    # train_size=2000, test_size=2000,  # subsets\n    # seed=321,\n)"
    assert offered_in_settings_cell(cell) == {"train_size", "test_size", "seed"}


# ---- images ------------------------------------------------------------------------------------------

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def repository():
    setup = cells(NOTEBOOKS[0], "code")[0]
    return re.search(r"github\.com/([\w-]+/[\w-]+(?:\.(?!git\b)[\w-]+)*)", setup)[1]


def image_file(address: str, base: Path) -> Path | None:
    raw = f"https://raw.githubusercontent.com/{repository()}/main/"
    if address.startswith(raw):
        return ROOT / address[len(raw):]
    if re.match(r"\w+://", address):
        return None  # an outside image (a Colab badge)
    return (base / address).resolve()


@pytest.mark.parametrize("path", PROSE, ids=[p.relative_to(ROOT).as_posix() for p in PROSE])
def test_every_embedded_image_exists(path):
    for _, address in IMAGE.findall(markdown_of(path)):
        if "raw.githubusercontent.com" in address:
            assert address.startswith(f"https://raw.githubusercontent.com/{repository()}/main/"), \
                f"{path.name}: {address} is not from the set-up cell's repository"
        file = image_file(address, path.parent)
        assert file is None or file.is_file(), f"{path.name} embeds {address}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=[p.name for p in NOTEBOOKS[1:]])
def test_notebooks_show_their_recorded_results_with_a_caption(path):
    markdown = markdown_of(path)
    raw = f"https://raw.githubusercontent.com/{repository()}/main/docs/"
    # the image, then its caption: an italic paragraph (up to the next blank line)
    shown = [m for m in re.finditer(r"!\[[^\]]*\]\(([^)\s]+)\)[ \t]*\n+[ \t]*([*_](?:.+\n?)+)", markdown)
             if m[1].startswith(raw)]
    assert shown, f"{path.name} embeds no recorded figure from docs/ by its GitHub address, with a caption"
    for match in shown:
        caption = match[2]
        assert re.search(r"CPU|GPU", caption) and re.search(r"BERT|bert", caption) and "review" in caption, \
            f"{path.name}: the caption should say the machine, model and data: {caption!r}"


# ---- numbers quoted from recorded runs ------------------------------------------------------------------

MARKER = re.compile(r"<!--\s*fig:\s*(\S+)\s+(\S+)\s+(\S+)\s*-->")


def quoted_figures(reach=20):
    for path in PROSE:
        markdown = markdown_of(path)
        for match in MARKER.finditer(markdown):
            yield path, markdown[max(0, match.start() - reach):match.start()], match


def test_quoted_figures_match_their_records():
    wrong = []
    for path, before, match in quoted_figures():
        file, dotted, spec = match.groups()
        expected = format(recorded.lookup(file, dotted), spec.replace("_", " "))
        if expected not in before:
            wrong.append(f"{path.name}: {before!r} quotes {file} {dotted}, which is {expected}")
    assert not wrong, "\n".join(wrong)


# A bound word right before a quoted number, and what it says of the recorded value v against the
# number d as written: "under 2" needs v < 2 (2.43, written "2", is not under 2).
BOUNDS = {
    "under": lambda v, d: v < d, "below": lambda v, d: v < d, "less than": lambda v, d: v < d,
    "up to": lambda v, d: v <= d, "at most": lambda v, d: v <= d, "within": lambda v, d: v <= d,
    "over": lambda v, d: v > d, "above": lambda v, d: v > d, "more than": lambda v, d: v > d,
    "at least": lambda v, d: v >= d,
    "about": lambda v, d: abs(v - d) <= 0.15 * abs(d), "around": lambda v, d: abs(v - d) <= 0.15 * abs(d),
    "nearly": lambda v, d: d * 0.85 <= v <= d, "almost": lambda v, d: d * 0.85 <= v <= d,
}
NUMBER = r"([\d,]*\.?\d+(?:e[-+]?\d+)?)"  # 2, 4,293, 0.38, 1.2e-07
BOUNDED = re.compile(rf"\b({'|'.join(BOUNDS)})\s+~?\s*{NUMBER}\s*(%|x|×)?\s*(?:s|min|MiB|GiB)?\s*$", re.I)


def bound_broken(before: str, value, spec: str) -> str | None:
    """What is wrong with a bound word before a quoted number, or None (no bound, or it holds)."""
    found = BOUNDED.search(before)
    if not found or not isinstance(value, (int, float)):
        return None
    word, written = found[1].lower(), float(found[2].replace(",", ""))
    shown = value * 100 if spec.endswith("%") else value
    return None if BOUNDS[word](shown, written) else f"'{found[0].strip()}' but the record says {shown:g}"


def test_bound_words_agree_with_the_recorded_value():
    wrong = []
    for path, before, match in quoted_figures(reach=40):
        file, dotted, spec = match.groups()
        broken = bound_broken(before, recorded.lookup(file, dotted), spec)
        if broken:
            wrong.append(f"{path.name}: {file} {dotted}: {broken}")
    assert not wrong, "\n".join(wrong)


def test_the_bound_guard_would_catch_a_rounded_bound():
    assert bound_broken("notebook 06 takes under 2", 2.43, ".0f")
    assert bound_broken("took about 6", 7.2, ".0f")
    assert bound_broken("within 15", 0.2, ".0%")
    assert bound_broken("up to 2.4", 2.425, ".1f")  # rounds to what is written, but is not within it
    assert bound_broken("up to 2.5", 2.425, ".1f") is None
    assert bound_broken("under 2.5", 2.43, ".1f") is None and bound_broken("took 2", 2.43, ".0f") is None
    assert bound_broken("by at most 1.2e-07", 1.3e-07, ".1e") and not bound_broken("at most 1.2e-07", 1.2e-07, ".1e")


MACHINE = re.compile(r"\b(?:Intel\s+Xeon|AMD\s+EPYC|Xeon|EPYC)\b")


def unquoted_machines(markdown: str) -> list[str]:
    """Machine names not followed at once by a marker reading a record's cpu_name."""
    return [markdown[max(0, m.start() - 40):m.end()] for m in MACHINE.finditer(markdown)
            if not re.match(r"<!--\s*fig:\s*\S+\s+\S*cpu_name\s", markdown[m.end():])]


def test_machines_are_quoted_from_their_records():
    wrong = [f"{path.name}: ...{text!r}" for path in PROSE for text in unquoted_machines(markdown_of(path))]
    assert not wrong, "a machine named without its record's marker (docs/recorded.py, cpu_name):\n" + \
        "\n".join(wrong)


def test_the_machine_guard_would_catch_a_machine_taken_from_another_record():
    assert unquoted_machines("the rerun, on the same AMD EPYC, gave 1.11x")
    quoted = "on an AMD EPYC<!-- fig: benchmark/2026-12-05_fixed_smart/results.json metadata.machine.cpu_name s -->"
    assert not unquoted_machines(quoted)
    file, dotted, spec = MARKER.search(quoted).groups()
    assert format(recorded.lookup(file, dotted), spec) == "Intel Xeon"  # so the figure check fails it


def test_the_figure_guard_would_catch_a_stale_number():
    assert format(recorded.lookup("benchmark/2026-11-26_2000/results.json", "strategies.smart.train_speedup"), ".2f") == "1.52"
    with pytest.raises(KeyError):
        recorded.lookup("benchmark/results.json", "strategies.no_such_strategy.accuracy")


def results_benchmark_rows():
    """The cells of the first table under docs/results.md's benchmark heading, header and rule left out."""
    section = (DOCS / "results.md").read_text(encoding="utf-8").split("Every strategy side by side", 1)[1]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))[2:]
    return [[cell.strip(" *") for cell in row.strip("|").split("|")] for row in table]


def test_the_results_benchmark_table_is_the_recorded_one():
    record = recorded.load("benchmark/results.json")
    rows = results_benchmark_rows()
    assert len(rows) == len(record["strategies"])
    for row, s in zip(rows, record["strategies"]):
        expected = [
            f"{s['train_steps']}", f"{s['sequences_per_step_mean']:.1f}".removesuffix(".0") + f" / {s['sequences_per_step_max']}",
            f"{s['distinct_widths']}", f"{s['processed_tokens']:,}", f"{s['efficiency']:.1%}".replace("%", " %"),
            f"{s['predicted_train_seconds']:,.0f} s", f"{s['train_seconds']:,.1f} s",
            f"{s['predicted_speedup']:.2f}", f"{s['epoch_speedup']:.2f}",
            f"{s['eval_seconds']:,.1f} s", f"{s['eval_speedup']:.2f}", f"{s['peak_mem_mb']:,.0f} MiB",
            f"{s['accuracy']:.3f}"]
        assert row[1:] == expected, f"docs/results.md row {row[0]!r} differs from results.json's {s['name']}"


# ---- the README as the front door ---------------------------------------------------------------------

def test_the_readme_is_a_front_door():
    """At most 250 lines, with every notebook's Colab badge on the first screen (its first 40 lines):
    results, investigations and the GPU story live in docs/, which the README links."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    badges = [line for line in lines[:40] if "colab.research.google.com/github/" in line]
    assert len(badges) == len(NOTEBOOKS), f"{len(badges)} Colab badges in README.md's first 40 lines"
    for page in ("docs/results.md", "docs/gpu.md"):
        assert f"]({page})" in "\n".join(lines), f"README.md does not link {page}"
