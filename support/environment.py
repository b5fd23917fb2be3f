"""Profiles, environment variables and where outputs go.

Two profiles share every line of code:

* ``full``: the recipe (bert-base-uncased, IMDB, max_len 400, batch 16, ...). Colab with a GPU.
* ``tiny``: generated reviews, a 2-layer BERT built from a config and a WordPiece tokenizer
  trained on the spot. No network, seconds on a CPU. CI runs every notebook this way.

``helpers.get_settings(profile=..., **overrides)`` picks one; headless runs use the environment
variable ``SMART_BATCHING_PROFILE`` (``full``, ``tiny`` or ``auto``, the default: ``full`` with a
CUDA GPU, ``tiny`` without one; a notebook that trains no model, ``get_settings(trains=False)``,
gets ``full`` on a CPU too, since the real reviews and tokenizer need no GPU). Other variables:
``SMART_BATCHING_DATA`` (``auto``, ``tfds``, ``download``, ``synthetic`` or a path to an aclImdb
folder / ``.tar.gz``), ``SMART_BATCHING_MODEL`` (a hub name or a local folder),
``SMART_BATCHING_TOKENIZER`` (when it is not the model's own, e.g. for ``random-bert-base``),
``SMART_BATCHING_TRAIN_SIZE``, ``SMART_BATCHING_TEST_SIZE`` and ``SMART_BATCHING_COMPARISON_SIZE``
(subset sizes), ``SMART_BATCHING_EPOCHS``, ``SMART_BATCHING_CACHE`` (where downloads go) and
``SMART_BATCHING_OUTPUT`` (where figures and models go).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from support.imdb import DATA_SOURCES, looks_like_path
from support.models import TINY_MODEL

ENV_PREFIX = "SMART_BATCHING_"

# The tiny profile: small enough that all notebooks run in a few minutes on 2 CPU cores, big
# enough that the model visibly learns (notebook 04 checks its test accuracy is well above chance). A model trained from scratch needs
# a larger learning rate than fine-tuning a pretrained one, hence 2e-3 and 3 epochs, and a short
# warm-up (15 of its 150 steps): without one, some seeds sit at chance for two epochs.
TINY_PROFILE = dict(
    data_source="synthetic", model_name=TINY_MODEL, max_len=128, batch_size=16,
    learning_rate=2e-3, warmup_steps=15, epochs=3, train_size=800, test_size=400,
    comparison_size=None,
)

# Settings that an environment variable can set: SMART_BATCHING_<variable> -> setting.
ENVIRONMENT_SETTINGS = dict(DATA="data_source", MODEL="model_name", TOKENIZER="tokenizer_name",
                            TRAIN_SIZE="train_size", TEST_SIZE="test_size",
                            COMPARISON_SIZE="comparison_size", EPOCHS="epochs", CACHE="cache_dir")
_SIZES = ("train_size", "test_size", "comparison_size")


def in_colab() -> bool:
    """Whether this runs in Colab, asked as the notebooks' set-up cell asks it."""
    return "google.colab" in sys.modules


def resolve_profile(profile: str | None = None, trains: bool = True) -> str:
    """'full' or 'tiny': `profile`, else $SMART_BATCHING_PROFILE, else 'auto' (see `auto_profile`,
    whose reason is printed: the reader sees what was chosen and why)."""
    from_env = not profile and bool(os.environ.get(ENV_PREFIX + "PROFILE"))
    requested = profile or os.environ.get(ENV_PREFIX + "PROFILE") or "auto"
    profile = str(requested).lower()
    if profile not in ("full", "tiny", "auto"):
        if from_env:
            raise ValueError(f"{ENV_PREFIX}PROFILE={requested!r}: expected 'full', 'tiny' or 'auto'")
        raise ValueError(f"unknown profile {requested!r}: use 'full', 'tiny' or 'auto'")
    if profile == "auto":
        profile, why = auto_profile(trains)
        print(why)
    return profile


def auto_profile(trains: bool = True) -> tuple[str, str]:
    """What 'auto' means here, and a sentence saying why: 'full' with a CUDA GPU, or on a CPU where
    nothing is trained (loading and tokenizing the real reviews needs no GPU); else 'tiny', since
    the recipe's training (bert-base on 25,000 reviews) would take more than a day on a CPU."""
    if torch.cuda.is_available():
        return "full", "Profile 'full' (auto): there is a CUDA GPU, so the recipe itself runs."
    if not trains:
        return "full", ("Profile 'full' (auto): there is no GPU, but this notebook trains no model, so "
                        "it reads the real IMDB reviews on the CPU. For generated ones, offline: "
                        "profile=\"tiny\" in the settings cell.")
    where = "this Colab runtime has" if in_colab() else "this machine has"
    return "tiny", (f"Profile 'tiny' (auto): {where} no GPU, and the full recipe (bert-base on 25,000 "
                    "reviews) would take more than a day on its CPU. For the full profile choose a GPU "
                    "(in Colab: Runtime > Change runtime type; a T4 is free), or pass "
                    "profile=\"full\" in the settings cell.")


def profile_values(profile: str | None = None, trains: bool = True) -> dict:
    """The profile (resolved, see `resolve_profile`) and the settings it changes from the recipe's."""
    profile = resolve_profile(profile, trains)
    return dict(profile=profile, **(TINY_PROFILE if profile == "tiny" else {}))


def environment_overrides() -> dict:
    """The settings given by SMART_BATCHING_* variables, parsed; a bad value is a ValueError
    naming its variable and what it accepts."""
    values = {}
    for variable, key in ENVIRONMENT_SETTINGS.items():
        raw = os.environ.get(ENV_PREFIX + variable)
        if raw is None or raw.strip() == "":
            continue
        if key in _SIZES or key == "epochs":
            values[key] = _count_from_env(key, raw.strip())
        elif key == "data_source" and raw not in DATA_SOURCES and not looks_like_path(raw):
            raise ValueError(f"{ENV_PREFIX}DATA={raw!r}: expected one of {', '.join(DATA_SOURCES)} "
                             "or the path of an aclImdb folder or .tar.gz archive")
        else:
            values[key] = raw
    return values


def _count_from_env(key: str, raw: str) -> int | None:
    """A size or epoch count from the environment, or a ValueError naming the variable."""
    sizes = key in _SIZES
    if sizes and raw.lower() in ("all", "none"):
        return None
    if re.fullmatch(r"\d+", raw) and int(raw) >= 1:
        return int(raw)
    variable = ENV_PREFIX + key.upper()
    raise ValueError(f"{variable}={raw!r}: expected a whole number >= 1" + (" or 'all'" if sizes else ""))


# ----------------------------------------------------------------------------------------------
# Where notebooks put what they make (figures, saved models, results).
# ----------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def output_dir(*parts: str) -> Path:
    """outputs/<parts>, created on demand: in a clone (an editable install included) in the
    repository's folder; where the package is installed (Colab's site-packages), in the working
    folder; $SMART_BATCHING_OUTPUT wins over both."""
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()
    root = Path(os.environ.get(ENV_PREFIX + "OUTPUT") or base / "outputs")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as outputs/figures/<name>.png (150 dpi) and return the path."""
    path = output_dir("figures") / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
