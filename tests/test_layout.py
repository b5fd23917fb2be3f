"""The layout the series promises: a small helpers.py that reads as the tutorial, and beside it the
support/ package it stands on, which never imports helpers back."""
from pathlib import Path

import helpers
from test_colab import repository_modules_imported_by  # the one reader of the repository's imports

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = sorted((ROOT / "support").glob("*.py"))


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
