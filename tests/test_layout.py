"""The layout the series promises: a small helpers.py that reads as the tutorial, and beside it the
support/ package it stands on, which never imports helpers back."""
import ast
from pathlib import Path

import helpers

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = sorted((ROOT / "support").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_helpers_is_small():
    lines = (ROOT / "helpers.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 800, f"helpers.py has {lines} lines; the tutorial module stays at 800 or fewer"


def test_support_never_imports_helpers():
    assert SUPPORT, "support/ is missing"
    for path in SUPPORT:
        back = {name for name in imported_modules(path) if name.split(".")[0] == "helpers"}
        assert not back, f"{path.relative_to(ROOT)} imports {back}: support must not import helpers"


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
