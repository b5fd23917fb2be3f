"""The layout the series promises: a small helpers.py that reads as the tutorial, and beside it the
support/ package it stands on, which never imports helpers back."""
from pathlib import Path

import helpers

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = sorted((ROOT / "support").glob("*.py"))


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


def test_helpers_is_small():
    lines = (ROOT / "helpers.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 800, f"helpers.py has {lines} lines; the tutorial module stays at 800 or fewer"


def test_support_never_imports_helpers():
    assert SUPPORT, "support/ is missing"
    for path in SUPPORT:  # directly or through another repository module
        assert "helpers.py" not in repository_modules_imported_by(path), \
            f"{path.relative_to(ROOT)} imports helpers: support must not import helpers"


def test_the_support_names_the_notebooks_use_are_reexported_unchanged():
    import support.device
    import support.environment
    import support.imdb
    import support.memory
    import support.models

    for module, names in [(support.device, ["get_device", "attention_backends", "autocast_dtype",
                                            "model_inputs", "synchronize"]),
                          (support.environment, ["output_dir", "save_figure"]),
                          (support.imdb, ["load_imdb"]),
                          (support.memory, ["step_peak_memory"]),
                          (support.models, ["load_model", "load_tokenizer", "model_max_length"])]:
        for name in names:
            assert getattr(helpers, name) is getattr(module, name), f"helpers.{name} is not {module.__name__}.{name}"


def test_no_mutable_setting_is_reexported():
    """A re-exported constant would be a copy: setting helpers.X would change nothing the loops read
    (ATTENTION_BACKENDS lives in support.device, and is set there)."""
    assert not hasattr(helpers, "ATTENTION_BACKENDS")


# ---- guards over the repository's code --------------------------------------------------------

CODE = sorted([ROOT / "helpers.py", ROOT / "smart_trainer.py", ROOT / "train.py",
               *(ROOT / "support").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").glob("*.py")])
TUTORIAL_CODE = [path for path in CODE if path.parent.name == "support"
                 or path.name in ("helpers.py", "smart_trainer.py", "train.py")]
LONGEST_FUNCTION = 60
BENCHMARK_LINES = 1600


def functions(path: Path):
    """(qualified name, lines) of every function and method in a file, nested ones included."""
    import ast

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child.end_lineno - child.lineno + 1
            name = getattr(child, "name", None)
            yield from walk(child, f"{prefix}{name}." if isinstance(name, str) else prefix)

    return list(walk(ast.parse(path.read_text(encoding="utf-8")), ""))


def test_no_function_over_sixty_lines():
    assert all(path.exists() for path in CODE[:3])
    long = [f"{path.relative_to(ROOT)}:{name} ({lines} lines)" for path in CODE
            for name, lines in functions(path) if lines > LONGEST_FUNCTION]
    assert not long, f"functions over {LONGEST_FUNCTION} lines (split them by what they do): {long}"


def test_functions_are_counted_whole():
    """The guard above counts a function from its def to its last line, methods and nested ones too."""
    import textwrap

    source = textwrap.dedent("""
        class A:
            def method(self):
                def inner():
                    return 1
                return inner()
        def top():
            x = 1

            return x
    """)
    path = ROOT / "tests" / "__layout_probe.py"
    try:
        path.write_text(source)
        assert functions(path) == [("A.method", 4), ("A.method.inner", 2), ("top", 4)]
    finally:
        path.unlink()


def sys_path_changes(text: str) -> list[str]:
    import re

    return re.findall(r"sys\.path\s*(?:\.\s*(?:insert|append|extend)\s*\(|\[[^\]]*\]\s*=|\+=)", text)


def test_no_sys_path_insertion_outside_conftest_and_tests():
    """One package (or the project installed) is how modules find each other, not sys.path."""
    found = [str(path.relative_to(ROOT)) for path in CODE if sys_path_changes(path.read_text(encoding="utf-8"))]
    assert not found, f"sys.path changed in {found}: import from the package instead"
    assert sys_path_changes("sys.path.insert(0, root)") and sys_path_changes("sys.path[:0] = [x]")
    assert not sys_path_changes("print(sys.path)")


def test_no_sys_path_insertion_in_the_notebooks():
    import json

    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        found += [f"{path.name} cell {i}" for i, cell in enumerate(cells)
                  if cell["cell_type"] == "code" and sys_path_changes("".join(cell["source"]))]
    assert not found, f"sys.path changed in {found}: import from the installed package instead"


def dated_or_numbered(text: str) -> list[str]:
    import re

    return re.findall(r"\b\d{4}-\d{2}-\d{2}\b|\bissues?\s*#?\s*\d+|(?<![\w/])#\d+\b", text, re.IGNORECASE)


def test_no_dates_or_issue_numbers_in_the_tutorial_code():
    """Code says what and why; when something was measured, and in which issue, lives in the records."""
    found = {str(path.relative_to(ROOT)): dated_or_numbered(path.read_text(encoding="utf-8"))
             for path in TUTORIAL_CODE}
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"dates or issue numbers in {found}: cite the record by name instead"
    assert dated_or_numbered("measured 2026-12-05, see issue 24 and #26") == ["2026-12-05", "issue 24", "#26"]
    assert not dated_or_numbered("x = y  # noqa: E731, 16 x 400, sm90, docs/benchmark/results.json")


def test_the_lab_stays_small():
    lines = sum(path.read_text(encoding="utf-8").count("\n") for path in (ROOT / "benchmarks").glob("*.py"))
    assert lines <= BENCHMARK_LINES, f"benchmarks/ has {lines} lines; the lab stays at {BENCHMARK_LINES} or fewer"


def test_no_benchmark_runs_another_ones_command_line():
    """A command line (parse_args, main) belongs to its script; the others import its library parts."""
    import ast

    for path in (ROOT / "benchmarks").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("benchmarks") for alias in node.names]
        called = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id in {p.stem for p in path.parent.glob("*.py")}]
        assert not {"main", "parse_args", "make_settings"} & set(imported + called), \
            f"{path.name} uses another benchmark's command line"
