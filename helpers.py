"""Smart batching for fine-tuning and evaluating BERT on IMDB: the one module every notebook imports.

Read top to bottom, it follows the tutorial, then what the tutorial stands on:

    settings -> step 1: tokenize without padding -> step 2: smart batches (and the
    fixed-padding baseline, the token counter) -> step 3: the PyTorch way (dataset, sampler,
    collate) -> training and evaluation loops
    then: progress lines -> IMDB and its sources -> tokenizer and model -> peak memory

One batch shape runs through it all: a dict of input_ids, attention_mask, labels and index (the
examples' positions in their dataset, from which ``evaluate`` restores the original order), built
from lists by ``batches_from_indices`` and by a DataLoader with ``PadCollator`` alike. Only
``make_smart_batches`` returns the recipe's three lists, for the recipe's readers.

Two profiles share every line of code:

* ``full``: the recipe (bert-base-uncased, IMDB, max_len 400, batch 16, ...). Colab with a GPU.
* ``tiny``: generated reviews, a 2-layer BERT built from a config and a WordPiece tokenizer
  trained on the spot. No network, seconds on a CPU. CI runs every notebook this way.

Pick one in a notebook's settings cell, ``helpers.get_settings(profile=..., **overrides)``, or for
headless runs with the environment variable ``SMART_BATCHING_PROFILE`` (``full``, ``tiny`` or
``auto``, the default: ``full`` with a CUDA GPU, ``tiny`` without one, a Colab CPU runtime
included). Every other setting has a keyword and an environment variable: ``SMART_BATCHING_DATA``
(``auto``, ``tfds``, ``download``, ``synthetic`` or a path to an aclImdb folder / ``.tar.gz``),
``SMART_BATCHING_MODEL`` (a hub name or a local folder), ``SMART_BATCHING_TOKENIZER`` (when it is
not the model's own, e.g. for ``random-bert-base``), ``SMART_BATCHING_TRAIN_SIZE``,
``SMART_BATCHING_TEST_SIZE`` and ``SMART_BATCHING_COMPARISON_SIZE`` (subset sizes),
``SMART_BATCHING_EPOCHS`` and ``SMART_BATCHING_CACHE`` (where downloads go).

The training and evaluation loops are written for a GPU as much as for the CPU: attention
without cuDNN's per-shape plans (``ATTENTION_BACKENDS``), no host-device wait in every step,
fused AdamW, bf16 only where the GPU has it. ``benchmarks/gpu_check.py`` measures what that buys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import math
import os
import re
import resource
import sys
import tarfile
import time
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# ----------------------------------------------------------------------------------------------
# Settings: everything a run depends on, in one place.
# ----------------------------------------------------------------------------------------------

ENV_PREFIX = "SMART_BATCHING_"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Published checksum of aclImdb_v1.tar.gz (84,125,825 bytes): a truncated or tampered download is
# caught here instead of surfacing later as a confusing tarfile error.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
TINY_MODEL = "tiny"  # model_name that means "build a small BERT from a config, offline"
# model_name for bert-base's exact shape with random weights: honest GPU timings without the
# weights (give its tokenizer in tokenizer_name, e.g. a local folder with the bert-base vocabulary).
RANDOM_BERT_BASE = "random-bert-base"


@dataclasses.dataclass
class Settings:
    """The recipe's values as defaults; `get_settings()` applies the profile and overrides."""

    profile: str = "full"
    data_source: str = "auto"  # auto | tfds | download | synthetic | path to aclImdb folder/.tar.gz
    model_name: str = "bert-base-uncased"
    tokenizer_name: str | None = None  # None: the model's own
    max_len: int = 400
    batch_size: int = 16
    learning_rate: float = 5e-5
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0
    epochs: int = 1
    seed: int = 321
    max_grad_norm: float = 1.0
    # How the loops run (not the recipe's; it has neither). Both measured in benchmarks/gpu_check.py.
    pad_to_multiple_of: int | None = None  # round each batch's width up (fewer distinct shapes)
    compile: bool = False  # torch.compile(dynamic=True) for training: one graph for all widths
    train_size: int | None = None  # None: the whole split (25,000 reviews)
    test_size: int | None = None
    # Reviews per split where a notebook trains three or more models (05, 06, 07, the benchmark),
    # at most train_size / test_size; None: train_size / test_size themselves.
    comparison_size: int | None = 2000
    cache_dir: str = str(Path.home() / ".cache" / "smart_batching")

    def describe(self) -> str:
        return "\n".join(f"  {f.name:<15} {getattr(self, f.name)}" for f in dataclasses.fields(self))

    def comparison_sizes(self) -> tuple[int | None, int | None]:
        """(train, test) subset sizes for a notebook that trains several models: comparison_size,
        capped by train_size / test_size (None: the whole split)."""
        def capped(size):
            if self.comparison_size is None:
                return size
            return self.comparison_size if size is None else min(size, self.comparison_size)
        return capped(self.train_size), capped(self.test_size)


# The tiny profile: small enough that all notebooks run in a few minutes on 2 CPU cores, big
# enough that the model visibly learns (0.9+ test accuracy). A model trained from scratch needs
# a larger learning rate than fine-tuning a pretrained one, hence 2e-3 and 3 epochs, and a short
# warm-up (15 of its 150 steps): without one, some seeds sit at chance for two epochs.
TINY_OVERRIDES = dict(
    data_source="synthetic", model_name=TINY_MODEL, max_len=128, batch_size=16,
    learning_rate=2e-3, warmup_steps=15, epochs=3, train_size=800, test_size=400,
    comparison_size=None,
)


def in_colab() -> bool:
    return "google.colab" in sys.modules


# What a Colab runtime without a GPU prints when `auto` gives it the tiny profile.
COLAB_WITHOUT_GPU = ("Profile 'tiny': this Colab runtime has no GPU, and the full recipe (bert-base on "
                     "25,000 reviews) would take more than a day on its CPU. For the full profile choose "
                     "Runtime > Change runtime type > a GPU (T4 is free), or pass profile=\"full\" in the "
                     "settings cell.")


def resolve_profile(profile: str | None = None) -> str:
    """'full' or 'tiny': `profile`, else $SMART_BATCHING_PROFILE, else 'auto', which means full
    with a CUDA GPU and tiny without one (a Colab runtime without a GPU says so)."""
    from_env = not profile and bool(os.environ.get(ENV_PREFIX + "PROFILE"))
    requested = profile or os.environ.get(ENV_PREFIX + "PROFILE") or "auto"
    profile = str(requested).lower()
    if profile not in ("full", "tiny", "auto"):
        if from_env:
            raise ValueError(f"{ENV_PREFIX}PROFILE={requested!r}: expected 'full', 'tiny' or 'auto'")
        raise ValueError(f"unknown profile {requested!r}: use 'full', 'tiny' or 'auto'")
    if profile == "auto":
        profile = "full" if torch.cuda.is_available() else "tiny"
        if profile == "tiny" and in_colab():
            print(COLAB_WITHOUT_GPU)
    return profile


def get_settings(profile: str | None = None, **overrides) -> Settings:
    """Settings for a profile, then environment overrides, then keyword overrides (last wins)."""
    profile = resolve_profile(profile)
    values = dict(profile=profile)
    if profile == "tiny":
        values.update(TINY_OVERRIDES)
    env = {
        "data_source": os.environ.get(ENV_PREFIX + "DATA"),
        "model_name": os.environ.get(ENV_PREFIX + "MODEL"),
        "tokenizer_name": os.environ.get(ENV_PREFIX + "TOKENIZER"),
        "train_size": os.environ.get(ENV_PREFIX + "TRAIN_SIZE"),
        "test_size": os.environ.get(ENV_PREFIX + "TEST_SIZE"),
        "comparison_size": os.environ.get(ENV_PREFIX + "COMPARISON_SIZE"),
        "epochs": os.environ.get(ENV_PREFIX + "EPOCHS"),
        "cache_dir": os.environ.get(ENV_PREFIX + "CACHE"),
    }
    for key, raw in env.items():
        if raw is None or raw.strip() == "":
            continue
        if key in ("train_size", "test_size", "comparison_size", "epochs"):
            values[key] = _count_from_env(key, raw.strip())
        elif key == "data_source" and raw not in DATA_SOURCES and not _looks_like_path(raw):
            raise ValueError(f"{ENV_PREFIX}DATA={raw!r}: expected one of {', '.join(DATA_SOURCES)} "
                             "or the path of an aclImdb folder or .tar.gz archive")
        else:
            values[key] = raw
    values.update(overrides)
    unknown = set(values) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ValueError(f"unknown setting(s): {sorted(unknown)}")
    settings = Settings(**values)
    for name in ("max_len", "batch_size", "epochs", "train_size", "test_size", "comparison_size"):
        value = getattr(settings, name)
        if value is None and name in ("train_size", "test_size", "comparison_size"):
            continue  # the whole split
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return settings


DATA_SOURCES = ("auto", "tfds", "download", "synthetic")


def _count_from_env(key: str, raw: str) -> int | None:
    """A size or epoch count from the environment, or a ValueError naming the variable."""
    sizes = key in ("train_size", "test_size", "comparison_size")
    if sizes and raw.lower() in ("all", "none"):
        return None
    if re.fullmatch(r"\d+", raw) and int(raw) >= 1:
        return int(raw)
    variable = ENV_PREFIX + key.upper()
    raise ValueError(f"{variable}={raw!r}: expected a whole number >= 1" + (" or 'all'" if sizes else ""))


def get_device(verbose: bool = True) -> torch.device:
    """CUDA when there is a GPU, else the CPU, saying which (and what that means for speed)."""
    if torch.cuda.is_available():
        device = torch.device("cuda")
        if verbose:
            print(f"Using the GPU: {torch.cuda.get_device_name(0)}")
    else:
        device = torch.device("cpu")
        if verbose:
            print("No GPU found: running on the CPU. Fine for the tiny profile; for the full recipe "
                  "in Colab choose Runtime > Change runtime type > GPU.")
    return device


def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# ----------------------------------------------------------------------------------------------
# Step 1: tokenize without padding.
# ----------------------------------------------------------------------------------------------

def tokenize_without_padding(texts: Sequence[str], tokenizer, max_len: int = 400,
                             chunk_size: int = 1000, verbose: bool = True) -> list[list[int]]:
    """Token ids of each text: [CLS] ... [SEP], truncated to max_len ([SEP] stays last), no padding.

    The fast tokenizer's batched call does the work in Rust; we feed it in chunks only to print
    progress on long inputs.
    """
    check_max_len(max_len, tokenizer)
    check_texts(texts)
    progress = Progress(len(texts), "tokenized", updates=5,
                        enabled=verbose and len(texts) >= 5 * chunk_size)
    input_ids: list[list[int]] = []
    for start in range(0, len(texts), chunk_size):
        encoded = tokenizer(list(texts[start:start + chunk_size]), add_special_tokens=True,
                            truncation=True, max_length=max_len, padding=False,
                            return_attention_mask=False, return_token_type_ids=False)
        input_ids.extend(encoded["input_ids"])
        progress.update(len(input_ids))
    return input_ids


# ----------------------------------------------------------------------------------------------
# Step 2: smart batches. Sort by length, take contiguous runs at random, pad each to its longest.
# ----------------------------------------------------------------------------------------------

class _RemainingInOrder:
    """The not-yet-batched indices in length order, with fast 'remove the run at rank r'.

    The recipe keeps them in one Python list and deletes each batch from it: O(n) per deletion,
    O(n^2/batch_size) in all (about 8 s for a million sequences here, 10x ours). Here they sit in chunks of
    `chunk` items, and a Fenwick tree over the chunk sizes finds the chunk that holds rank r in
    O(log n). Removing a run only shortens one or two small chunks.
    """

    def __init__(self, order: np.ndarray, chunk: int = 4096):
        self.chunks = [order[i:i + chunk].tolist() for i in range(0, len(order), chunk)]
        self.size = len(order)
        self.tree = [0] * (len(self.chunks) + 1)  # Fenwick tree, 1-based
        for i, c in enumerate(self.chunks):
            self._add(i, len(c))
        self.top = 1 << max(0, len(self.chunks).bit_length() - 1)

    def _add(self, i: int, delta: int) -> None:
        i += 1
        while i < len(self.tree):
            self.tree[i] += delta
            i += i & -i

    def _find(self, rank: int) -> tuple[int, int]:
        """(chunk, offset) of the item with this rank among the remaining ones."""
        tree, n, pos, step = self.tree, len(self.tree), 0, self.top
        while step:  # Fenwick descent: the largest prefix of chunks holding <= rank items
            nxt = pos + step
            if nxt < n and tree[nxt] <= rank:
                pos = nxt
                rank -= tree[nxt]
            step >>= 1
        return pos, rank

    def pop_run(self, start: int, count: int) -> list[int]:
        """Remove and return the `count` items of ranks start .. start+count-1."""
        run: list[int] = []
        while len(run) < count:
            chunk, offset = self._find(start)  # `start` stays put: later items shift down to it
            items = self.chunks[chunk]
            piece = items[offset:offset + count - len(run)]
            del items[offset:offset + len(piece)]
            self._add(chunk, -len(piece))
            run.extend(piece)
        self.size -= count
        return run


def smart_batch_indices(lengths, batch_size: int | None, seed: int | None = None,
                        max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches of indices, each a contiguous run of the length-sorted order, in random order.

    This is the recipe's method, step for step: sort by length; then, while sequences remain,
    choose a random start among the remaining ones, take the next `batch_size` of them as a
    batch and remove them. Every index lands in exactly one batch; the last batch holds whatever
    is left (fewer than batch_size). The same seed gives the same batches.

    With `max_tokens`, a batch is as many sequences as fit in `len(batch) * longest <= max_tokens`
    (capped by batch_size unless that is None): short reviews travel in big batches, long ones in
    small ones. Here we cut the sorted order into such runs, from the longest end down, with a
    random-size first run so that every seed moves all the cuts, then shuffle the runs. Why not
    the random removal above: it leaves gaps, and a run that spans a gap mixes lengths from both
    sides; at 16 per batch that costs little, but batches of 100+ short reviews span wider gaps
    (on IMDB at max_tokens=6400: 6,401,564 tokens processed that way, 6,365,482 with cuts).
    """
    lengths = _check_lengths(lengths)
    if batch_size is None and max_tokens is None:
        raise ValueError("give batch_size, max_tokens or both")
    if batch_size is not None:
        check_batch_size(batch_size)
    if max_tokens is not None:
        _check_budget(lengths, max_tokens)
    rng = np.random.default_rng(seed)
    order = length_order(lengths)
    batches = []
    if max_tokens is None:
        remaining = _RemainingInOrder(order)
        # One uniform draw per batch, made up front: same stream as drawing in the loop, faster.
        for u in rng.random(-(-len(order) // batch_size)):
            take = min(batch_size, remaining.size)
            start = int(u * (remaining.size - take + 1))
            batches.append(np.array(remaining.pop_run(start, take)))
        return batches
    runs = _budget_runs(order, lengths[order], batch_size, max_tokens, rng)
    return [runs[i] for i in rng.permutation(len(runs))]


def _budget_runs(order, sorted_lengths, cap, max_tokens, rng=None) -> list[np.ndarray]:
    """Cut the length-sorted `order` into runs with len(run) * longest <= max_tokens, longest first.

    With `rng`, the first run gets a random size, which shifts every later cut.
    """
    cap = cap or len(order)
    runs, end = [], len(order)
    while end > 0:
        take = min(cap, max_tokens // int(sorted_lengths[end - 1]), end)
        if rng is not None and not runs:
            take = int(rng.integers(1, take + 1))
        runs.append(order[end - take:end])
        end -= take
    return runs


def token_budget(lengths, batch_size: int) -> int:
    """A max_tokens budget that keeps batch_size's training dynamics: batch_size x the mean length
    (at least the longest sequence, which must fit).

    With it an epoch has about as many optimizer steps as with batch_size (each batch holds
    about batch_size sequences' worth of real tokens), so the recipe's learning rate and schedule
    still fit, while no batch exceeds the budget: on IMDB at max_len 400, 16 x 254 = 4,064
    tokens, below the 16 x 400 = 6,400 of a fixed-padding batch. A larger budget gives fewer,
    fuller steps (what a GPU likes) but fewer updates per epoch: with the recipe's learning rate a
    budget of 6,400 took 42 steps instead of 63 on 1,000 IMDB reviews and lost 7.6 points of
    accuracy after one epoch (README, the recorded benchmark).
    """
    lengths = _check_lengths(lengths)
    check_batch_size(batch_size)
    return max(int(math.ceil(batch_size * lengths.mean())), int(lengths.max()))


def sorted_batch_indices(lengths, batch_size: int | None, max_tokens: int | None = None):
    """Deterministic batches in pure length order, shortest first: least padding, for evaluation."""
    lengths = _check_lengths(lengths)
    order = length_order(lengths)
    if max_tokens is None:
        check_batch_size(batch_size)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    _check_budget(lengths, max_tokens)
    return _budget_runs(order, lengths[order], batch_size, max_tokens)[::-1]


def recipe_batch_indices(lengths, batch_size: int, seed: int | None = None) -> list[np.ndarray]:
    """The recipe's original list-deletion method, kept as a reference for tests and benchmarks.

    Same random draws as `smart_batch_indices`, so the two give identical batches; this one is
    O(n^2 / batch_size) because `del samples[a:b]` shifts the rest of the list every time.
    """
    lengths = _check_lengths(lengths)
    check_batch_size(batch_size)
    rng = np.random.default_rng(seed)
    samples = length_order(lengths).tolist()
    batches = []
    for u in rng.random(-(-len(samples) // batch_size)):
        to_take = min(batch_size, len(samples))
        select = int(u * (len(samples) - to_take + 1))
        batches.append(np.array(samples[select:select + to_take]))
        del samples[select:select + to_take]
    return batches


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Indices in ascending length, ties in input order (a stable sort).

    Token lengths fit in int16, and NumPy sorts int16 stably with a radix sort: the same order
    as sorting int64, about 5x faster (0.02 s for a million).
    """
    if lengths.max() < 2**15:
        lengths = lengths.astype(np.int16)
    return np.argsort(lengths, kind="stable")


def _check_lengths(lengths) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or len(lengths) == 0:
        raise ValueError("lengths must be a non-empty 1-D sequence of sequence lengths")
    if not np.issubdtype(lengths.dtype, np.integer) or (lengths < 1).any():
        raise ValueError("lengths must be positive integers")
    return lengths


def _check_budget(lengths: np.ndarray, max_tokens) -> None:
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    longest = int(lengths.max())
    if longest > max_tokens:
        raise ValueError(f"sequence {int(lengths.argmax())} has {longest} tokens, more than the "
                         f"max_tokens budget of {max_tokens}: raise the budget or lower max_len")


def padded_width(longest: int, pad_to: int | None = None, pad_to_multiple_of: int | None = None) -> int:
    """The width a batch is padded to: pad_to if given, else its longest sequence; with
    pad_to_multiple_of, rounded up to a multiple of it (DataCollatorWithPadding's option).

    Rounding up buckets the widths (at most max_len / multiple distinct ones), which helps where
    every new shape costs a set-up (a cuDNN plan, a torch.compile graph without dynamic shapes),
    at the price of the [PAD] tokens it adds: count them with `count_tokens`.
    """
    width = pad_to or longest
    if pad_to_multiple_of is None:
        return width
    if not isinstance(pad_to_multiple_of, (int, np.integer)) or pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be an integer >= 1 or None, got {pad_to_multiple_of!r}")
    return -(-width // pad_to_multiple_of) * pad_to_multiple_of


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None,
              pad_to_multiple_of: int | None = None):
    """(input_ids, attention_mask) as LongTensors, padded on the right to the longest (or pad_to),
    rounded up to a multiple of pad_to_multiple_of if given (see `padded_width`)."""
    width = padded_width(max(len(s) for s in sequences), pad_to, pad_to_multiple_of)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq) > width:
            raise ValueError(f"sequence of {len(seq)} tokens does not fit in {width}")
        input_ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, :len(seq)] = 1
    return input_ids, attention_mask


def batches_from_indices(input_ids, labels, batch_indices, pad_id: int, pad_to: int | None = None,
                         pad_to_multiple_of: int | None = None) -> list[dict]:
    """One dict per batch, the shape every loop here takes (and a DataLoader with `PadCollator`
    yields): input_ids and attention_mask padded as `pad_batch` pads them, labels, and index,
    the batch's positions in the dataset, with which `evaluate` puts predictions back in order."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    batches = []
    for idx in batch_indices:
        index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        ids, mask = pad_batch([input_ids[i] for i in index.tolist()], pad_id, pad_to, pad_to_multiple_of)
        batches.append(dict(input_ids=ids, attention_mask=mask, labels=labels[index], index=index))
    return batches


def smart_batches_from_ids(input_ids, labels, batch_size: int, pad_id: int, seed: int | None = None,
                           pad_to_multiple_of: int | None = None,
                           num_labels: int | None = None) -> list[dict]:
    """Smart batches (dicts, see `batches_from_indices`) of already-tokenized sequences: call it
    again each epoch, no re-tokenizing. Labels are class ids 0..K-1 (see `check_labels`)."""
    check_labels(labels, len(input_ids), num_labels)
    indices = smart_batch_indices([len(s) for s in input_ids], batch_size, seed)
    return batches_from_indices(input_ids, labels, indices, pad_id,
                                pad_to_multiple_of=pad_to_multiple_of)


def make_smart_batches(text_samples, labels, batch_size: int, tokenizer, max_len: int = 400,
                       seed: int | None = None, pad_to_multiple_of: int | None = None,
                       num_labels: int | None = None):
    """The recipe's function: tokenize without padding, then smart batches.

    Any single-label classification task: labels are class ids 0..K-1, K inferred from them or
    given as num_labels (IMDB's 0/1 is K = 2).

    Returns the recipe's three lists (py_inputs, py_attn_masks, py_labels), one tensor per batch,
    padded with the tokenizer's pad id to each batch's longest sequence (rounded up to
    pad_to_multiple_of if given). The loops take batch dicts: tokenize once with
    `tokenize_without_padding` and use `smart_batches_from_ids`, which gives the same batches.
    """
    check_batch_size(batch_size)
    check_max_len(max_len, tokenizer)
    check_texts_and_labels(text_samples, labels, num_labels)
    input_ids = tokenize_without_padding(text_samples, tokenizer, max_len)
    batches = smart_batches_from_ids(input_ids, labels, batch_size, tokenizer.pad_token_id, seed,
                                     pad_to_multiple_of, num_labels)
    return tuple([batch[key] for batch in batches] for key in ("input_ids", "attention_mask", "labels"))


def fixed_batch_indices(n: int, batch_size: int, seed: int | None = None,
                        shuffle: bool = True) -> list[np.ndarray]:
    """The old way's batches: a random permutation (or input order) cut into runs of batch_size."""
    check_batch_size(batch_size)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def make_fixed_batches(input_ids, labels, batch_size: int, pad_id: int, max_len: int,
                       seed: int | None = None, shuffle: bool = True) -> list[dict]:
    """The recipe's "old approach": every sequence padded to max_len, batches in random order
    (dicts, see `batches_from_indices`)."""
    check_max_len(max_len)
    check_labels(labels, len(input_ids))
    indices = fixed_batch_indices(len(input_ids), batch_size, seed, shuffle)
    return batches_from_indices(input_ids, labels, indices, pad_id, pad_to=max_len)


def count_tokens(lengths, batch_indices, pad_to: int | None = None,
                 pad_to_multiple_of: int | None = None) -> dict:
    """The tokens of these batches, from the sequences' lengths (no tensors needed): real_tokens,
    the sequences' own; processed_tokens, every position the model computes ([PAD] included), with
    each batch padded to its longest (or pad_to, rounded up to pad_to_multiple_of as `pad_batch`
    does); pad_tokens, the difference; efficiency, real / processed."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for idx in batch_indices:
        batch = lengths[np.asarray(idx)]
        real += int(batch.sum())
        padded += len(batch) * padded_width(int(batch.max()), pad_to, pad_to_multiple_of)
    return dict(real_tokens=real, processed_tokens=padded, pad_tokens=padded - real,
                efficiency=real / padded if padded else float("nan"))


# ----------------------------------------------------------------------------------------------
# Step 3: the same, the PyTorch way: a Dataset, a batch Sampler and a collate function.
# ----------------------------------------------------------------------------------------------

class TokenizedDataset(torch.utils.data.Dataset):
    """Unpadded token ids and labels; item i is {"input_ids": [...], "labels": label, "index": i}.

    The index travels with the example into its batch (`PadCollator` keeps it), so that
    `evaluate` can put predictions back in the dataset's order whatever the batch sampler did.
    The Hugging Face Trainer drops it (it is no argument of the model's forward)."""

    def __init__(self, input_ids: Sequence[Sequence[int]], labels, num_labels: int | None = None,
                 texts: Sequence[str] | None = None):
        self.num_labels = check_labels(labels, len(input_ids), num_labels)
        self.input_ids, self.labels = input_ids, np.asarray(labels, dtype=np.int64)
        self.texts = texts  # the texts they came from, if given (prepare_data keeps them)
        # What every sampler and token counter needs, computed once.
        self.lengths = np.fromiter((len(s) for s in input_ids), dtype=np.int64, count=len(input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": int(self.labels[i]), "index": int(i)}


@dataclasses.dataclass
class PreparedData:
    """What `prepare_data` returns: the tokenizer, its [PAD] id and the tokenized splits."""

    tokenizer: object
    pad_id: int
    train: TokenizedDataset | None
    test: TokenizedDataset | None


def prepare_data(settings: Settings, comparison: bool = False, splits=("train", "test"),
                 verbose: bool = True) -> PreparedData:
    """Steps 0 and 1 in one call: the tokenizer, and each split loaded and tokenized without
    padding. Subset sizes come from the settings: train_size / test_size, or with comparison=True
    (a notebook that trains several models) settings.comparison_sizes()."""
    tokenizer = load_tokenizer(settings)
    sizes = dict(zip(SPLITS, settings.comparison_sizes() if comparison else
                     (settings.train_size, settings.test_size)))
    data = {}
    for split in splits:
        texts, labels = load_imdb(split, settings.data_source, sizes[split], settings.seed,
                                  cache_dir=settings.cache_dir, verbose=verbose)
        input_ids = tokenize_without_padding(texts, tokenizer, settings.max_len, verbose=verbose)
        data[split] = TokenizedDataset(input_ids, labels, texts=texts)
    return PreparedData(tokenizer, tokenizer.pad_token_id, data.get("train"), data.get("test"))


class PadCollator:
    """collate_fn: pad a list of examples to the batch's longest and build the attention mask.

    Output has the keys and dtypes of Hugging Face's DataCollatorWithPadding (input_ids,
    attention_mask, labels), so it drops into a Trainer too, plus the examples' "index" when
    they carry one (`TokenizedDataset` does): the batch dict of `batches_from_indices`. A class
    rather than a closure so that DataLoader workers (num_workers > 0) can pickle it.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        padded_width(1, pad_to_multiple_of=pad_to_multiple_of)  # checks it
        self.pad_id, self.pad_to_multiple_of = pad_id, pad_to_multiple_of

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        input_ids, attention_mask = pad_batch([e["input_ids"] for e in examples], self.pad_id,
                                              pad_to_multiple_of=self.pad_to_multiple_of)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        key = "labels" if "labels" in examples[0] else "label" if "label" in examples[0] else None
        if key:
            batch["labels"] = torch.tensor([int(e[key]) for e in examples], dtype=torch.long)
        if "index" in examples[0]:
            batch["index"] = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
        return batch


class SmartBatchSampler(torch.utils.data.Sampler):
    """A batch sampler that yields lists of indices, smart-batched: use it as
    `DataLoader(dataset, batch_sampler=SmartBatchSampler(lengths, 16), collate_fn=PadCollator(pad_id))`.

    shuffle=True: `smart_batch_indices` (random contiguous runs of the sorted order), re-drawn
    for each epoch with seed + epoch: call `set_epoch` as with DistributedSampler. So epoch e gives
    exactly the batches of `smart_batches_from_ids(..., seed=seed + e)`.
    shuffle=False: `sorted_batch_indices`, pure length order, for evaluation.
    max_tokens: a token budget per batch, len(batch) * longest <= max_tokens (see
    smart_batch_indices); a sequence longer than the budget is an error here, not an OOM later.
    `token_budget(lengths, batch_size)` gives the budget that keeps batch_size's number of
    optimizer steps (batch_size x the mean length); larger budgets give fewer, fuller steps.
    fail_fast: each rank's most expensive batch (the one holding its longest sequence) comes
    second, so a run that would run out of memory fails at step 2, not hours later. Second, not
    first: a fresh AdamW allocates its state (2x the parameters) during step 1, so the same batch
    peaks higher at step 2 than at step 1 (a 6-layer BERT on the CPU, 16 x 400: 4,259 vs 3,997
    MiB; bert-base's state is 0.8 GiB). Costliest-first never tests the worst step of the epoch.
    num_replicas / rank: for torchrun or Accelerate; every rank builds the same batches and keeps
    every num_replicas-th one. To give all ranks the same number of batches without repeating
    any sequence, the largest batches are split in two until the count divides evenly
    (drop_last=True drops the short last batch and the remainder instead).
    """

    def __init__(self, lengths, batch_size: int | None = 16, *, max_tokens: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0, fail_fast: bool = False):
        self.lengths = _check_lengths(lengths)
        if batch_size is None and max_tokens is None:
            raise ValueError("give batch_size, max_tokens or both")
        if batch_size is not None:
            check_batch_size(batch_size)
        if max_tokens is not None:
            _check_budget(self.lengths, max_tokens)
        if not (isinstance(num_replicas, int) and num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, "
                             f"got num_replicas={num_replicas}, rank={rank}")
        if len(self.lengths) < num_replicas:
            raise ValueError(f"{len(self.lengths)} sequences cannot give each of {num_replicas} "
                             "ranks a batch")
        self.batch_size, self.max_tokens, self.shuffle, self.seed = batch_size, max_tokens, shuffle, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.fail_fast = fail_fast
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[np.ndarray]:
        """This epoch's batches for all ranks together, before they are dealt out."""
        if self.shuffle:
            batches = smart_batch_indices(self.lengths, self.batch_size, seed=self.seed + self.epoch,
                                          max_tokens=self.max_tokens)
        else:
            batches = sorted_batch_indices(self.lengths, self.batch_size, self.max_tokens)
        if self.drop_last and self.max_tokens is None:
            batches = [b for b in batches if len(b) == self.batch_size]
        extra = len(batches) % self.num_replicas
        if extra and self.drop_last:
            batches = batches[:len(batches) - extra]
        elif extra:
            batches = _split_largest(batches, self.num_replicas - extra)
        if not batches:
            raise ValueError("drop_last left no batches: fewer sequences than batch_size * num_replicas")
        return batches

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch (cached: len() and iter() agree)."""
        if self._cache is None or self._cache[0] != self.epoch:
            mine = self.all_batches()[self.rank::self.num_replicas]
            if self.fail_fast:
                costliest = max(range(len(mine)),
                                key=lambda i: (self.lengths[mine[i]].max(), len(mine[i])))
                mine.insert(min(1, len(mine) - 1), mine.pop(costliest))
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def __iter__(self):
        for batch in self.batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.batches())


def _split_largest(batches: list[np.ndarray], times: int) -> list[np.ndarray]:
    """Split the largest batches in two, `times` times (a split batch never exceeds a budget)."""
    batches = list(batches)
    for _ in range(times):
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[i]) < 2:
            raise ValueError("too few sequences to give every rank the same number of batches")
        half = len(batches[i]) // 2
        batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


# ----------------------------------------------------------------------------------------------
# Training and evaluation: one loop each, used by every notebook and the benchmark.
# ----------------------------------------------------------------------------------------------

# Attention backends the loops allow for PyTorch's scaled_dot_product_attention, which BERT uses.
# cuDNN attention is left out on purpose. From torch 2.10 on, H100/H200/B200-class GPUs (sm90+)
# prefer it, and it builds an execution plan for every new input shape: on an H100 a training
# step at a batch width seen for the first time took 494 ms against 46 ms at a known width. Smart
# batching meets a new width almost every step (about 390 per IMDB epoch), so it would pay that
# again and again. Flash and memory-efficient attention have no per-shape set-up; the math
# backend is the fallback that always works (and the CPU's choice besides flash).
ATTENTION_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def attention_backends():
    """Context manager: run attention with the ATTENTION_BACKENDS only, read when it is entered
    (set helpers.ATTENTION_BACKENDS = None to let PyTorch choose, as benchmarks/gpu_check.py does
    to compare). Every training and evaluation loop here runs inside it, on every device."""
    backends = ATTENTION_BACKENDS
    return contextlib.nullcontext() if backends is None else sdpa_kernel(list(backends))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where the GPU computes in it, else float16; None on the CPU.

    bfloat16 needs compute capability 8.0 (Ampere: A100, L4, RTX 30xx) or newer. We do not ask
    torch.cuda.is_bf16_supported(): it also says yes on a T4 (7.5, Colab's free GPU), which
    emulates bfloat16 slowly without tensor cores. float16 runs there natively, with a GradScaler
    (see `fine_tune`).
    """
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def model_inputs(batch: Mapping, device: torch.device, labels: bool = True) -> dict:
    """What the model takes from a batch dict, on `device`: everything but the dataset "index"
    (and, with labels=False, the labels). To a GPU the tensors go from pinned (page-locked) host
    memory with non_blocking=True: the copy then runs alongside the GPU's work instead of
    holding up the CPU."""
    skip = {"index"} if labels else {"index", "labels"}
    tensors = {k: v for k, v in batch.items() if k not in skip}
    if device.type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True)
            for k, v in tensors.items()}


def train_epoch(model, batches, optimizer, scheduler, device, max_grad_norm: float = 1.0,
                amp_dtype: torch.dtype | None = None, scaler=None, verbose: bool = True) -> dict:
    """One pass over `batches` (dicts of input_ids / attention_mask / labels, and optionally the
    dataset index, which the model does not see). Returns losses and time.

    Gradient clipping at `max_grad_norm` as in the recipe; with amp_dtype the forward pass runs
    under autocast (pass a GradScaler for float16, which needs loss scaling; bfloat16 does not).
    The losses stay on the device until a progress line or the end of the epoch reads them:
    `loss.item()` in every step would make the CPU wait for the GPU to finish each step before
    queueing the next one, and a fast GPU would then idle while the CPU prepares every step.
    """
    model.train()
    losses = []
    total = len(batches) if hasattr(batches, "__len__") else 0
    progress = Progress(total, "batch", updates=10, enabled=verbose and total > 0)
    with attention_backends():
        for step, batch in enumerate(batches, start=1):
            batch = model_inputs(batch, device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = model(**batch).loss
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
            if progress.due(step):
                progress.update(step, f"  loss {torch.stack(losses[-50:]).float().mean().item():.3f}")
    synchronize(device)
    losses = torch.stack(losses).float().cpu().tolist() if losses else []
    return dict(losses=losses, seconds=progress.elapsed, steps=len(losses))


@torch.inference_mode()
def predict(model, batches, device, amp_dtype: torch.dtype | None = None,
            verbose: bool = True) -> dict:
    """Logits, labels and dataset indices (each None if the batches carry no "labels" or
    "index") for every batch, in batch order (`evaluate` restores the dataset's order), and the time taken.

    The logits stay on the device until the end, for the same reason as the losses in
    `train_epoch`: copying each batch's to the CPU would wait for the GPU at every step.
    """
    model.eval()
    logits, labels, indices = [], [], []
    total = len(batches) if hasattr(batches, "__len__") else 0
    progress = Progress(total, "batch", updates=5, enabled=verbose and total > 0)
    with attention_backends():
        for step, batch in enumerate(batches, start=1):
            inputs = model_inputs(batch, device, labels=False)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits.append(model(**inputs).logits.float())
            labels.append(batch.get("labels"))
            indices.append(batch.get("index"))
            progress.update(step)
    synchronize(device)
    if not logits:
        raise ValueError("no batches to predict")
    labels = None if any(y is None for y in labels) else torch.cat(labels)
    index = None if any(i is None for i in indices) else torch.cat(indices)
    return dict(logits=torch.cat(logits).cpu(), labels=labels, index=index,
                seconds=progress.elapsed)


def fine_tune(model, batches_for_epoch, settings: Settings, device: torch.device,
              amp: bool = True, verbose: bool = True) -> list[dict]:
    """The recipe's training: AdamW, linear schedule, clipping, new batches every epoch.

    batches_for_epoch(epoch) returns that epoch's batches (a list of batch dicts or a DataLoader):
    re-batching each epoch gives new batch compositions and order without re-tokenizing.
    Returns one `train_epoch` result per epoch. Mixed precision on CUDA when amp=True.
    With settings.compile, the steps run through torch.compile(dynamic=True): one graph for
    every batch width, compiled during the first steps (that time counts in the first epoch).
    """
    set_seed(settings.seed)  # dropout masks: same seed, same run, whichever batching feeds it
    model.to(device)
    amp_dtype = autocast_dtype(device) if amp else None
    # float16 needs loss scaling to keep small gradients from flushing to zero; bfloat16 does not.
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    first = batches_for_epoch(0)
    # With a token budget the batch count can differ a little between epochs; the schedule is
    # sized from the first epoch and simply stays at 0 if a later epoch runs a few steps longer.
    optimizer, scheduler = make_optimizer(model, settings, len(first) * settings.epochs)
    step_model = torch.compile(model, dynamic=True) if settings.compile else model
    history = []
    for epoch in range(settings.epochs):
        batches = first if epoch == 0 else batches_for_epoch(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{settings.epochs}: {len(batches):,} batches")
        result = train_epoch(step_model, batches, optimizer, scheduler, device, settings.max_grad_norm,
                             amp_dtype, scaler, verbose)
        if verbose:
            print(f"  mean loss {np.mean(result['losses']):.4f}, took {format_time(result['seconds'])}")
        history.append(result)
    return history


def warm_up(settings: Settings, batches, device: torch.device, steps: int = 2, amp: bool = True) -> None:
    """A few training steps on a throwaway copy of the model, before anything is timed.

    The first steps of a process pay one-off costs (CUDA context and kernel loading, thread
    pools, allocator growth): without this, whichever strategy is timed first pays them.
    """
    if steps < 1:
        return
    first = list(itertools.islice(batches, steps))  # only these: a DataLoader is not run to its end
    model = load_model(settings)
    fine_tune(model, lambda epoch: first, dataclasses.replace(settings, epochs=1), device, amp=amp,
              verbose=False)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def evaluate(model, batches, device, amp: bool = True, verbose: bool = True) -> dict:
    """Accuracy on `batches` (batch dicts, a list or a DataLoader), with the predictions, labels
    and logits put back in the dataset's order: sorted by the "index" each batch carries, which
    for a whole dataset is its original order (`index` says which examples they are).
    Batches without an index keep batch order (index None); without labels (new, unlabelled
    texts) there is no accuracy (labels and accuracy None). Each example counts once: an index
    seen twice is an error, as it would weigh that example twice in the accuracy."""
    result = predict(model, batches, device, autocast_dtype(device) if amp else None, verbose)
    logits, labels, index = result["logits"], result["labels"], result["index"]
    if index is not None:
        index, order = torch.sort(index)
        twice = index[1:][index[1:] == index[:-1]].unique()  # sorted: a repeat sits next to itself
        if len(twice):
            raise ValueError(f"examples {twice[:5].tolist()} were evaluated more than once: each "
                             "index must appear in one batch only")
        logits, index = logits[order], index.numpy()
        labels = None if labels is None else labels[order]
    predictions = logits.argmax(-1)
    accuracy = None if labels is None else float((predictions == labels).float().mean())
    return dict(predictions=predictions.numpy(), labels=None if labels is None else labels.numpy(),
                index=index, accuracy=accuracy, logits=logits, seconds=result["seconds"])


def make_optimizer(model, settings: Settings, num_training_steps: int):
    """torch.optim.AdamW and a linear decay to 0 (no warm-up by default), as in the recipe.

    On a GPU, AdamW's fused kernel: one launch for all parameters instead of several per tensor.
    """
    from transformers import get_linear_schedule_with_warmup

    on_cuda = all(p.is_cuda for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  eps=settings.adam_epsilon, fused=True if on_cuda else None)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, num_training_steps)
    return optimizer, scheduler


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# What the steps above stand on: progress lines, the data, the tokenizer and model, memory.
# The tutorial's subject ends here; read on for how the pieces are fetched and measured.
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Progress: the recipe's two small helpers.
# ----------------------------------------------------------------------------------------------

def good_update_interval(total_iters: int, num_desired_updates: int) -> int:
    """A round interval (1, 2, 5, 10, 20, 50, 100, ...) that prints about `num_desired_updates` lines.

    The recipe rounds to a single significant digit; we round to 1, 2 or 5 times a power of ten,
    and return at least 1 so that tiny or empty totals never divide by zero.
    """
    if total_iters < 0 or num_desired_updates < 1:
        raise ValueError("total_iters must be >= 0 and num_desired_updates >= 1")
    exact = total_iters / num_desired_updates
    if exact <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(exact))
    for step in (1, 2, 5, 10):
        if exact <= step * magnitude * 1.5:
            return int(step * magnitude)
    return int(10 * magnitude)


def format_time(elapsed: float) -> str:
    """Seconds as hh:mm:ss (rounded to the second)."""
    return str(datetime.timedelta(seconds=int(round(max(0.0, float(elapsed))))))


class Progress:
    """Prints `done/total` about `updates` times with elapsed and estimated remaining time."""

    def __init__(self, total: int, what: str = "", updates: int = 10, enabled: bool = True):
        self.total, self.what, self.enabled = total, what, enabled
        self.every = good_update_interval(total, updates)
        self.start = time.perf_counter()

    def due(self, done: int) -> bool:
        """Whether `update(done)` prints (nothing done, nothing to report): callers compute costly
        extras only then."""
        return self.enabled and done >= 1 and (done % self.every == 0 or done == self.total)

    def update(self, done: int, extra: str = "") -> None:
        if not self.due(done):
            return
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / done * (self.total - done) if done else 0.0
        print(f"  {self.what} {done:>{len(str(self.total))},}/{self.total:,}  "
              f"elapsed {format_time(elapsed)}  remaining {format_time(remaining)}{extra}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------------------------------
# IMDB: one loader, four sources.
# ----------------------------------------------------------------------------------------------

SPLITS = ("train", "test")
_ACLIMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def load_imdb(split: str = "train", source: str = "auto", limit: int | None = None, seed: int = 321,
              cache_dir: str | None = None, verbose: bool = True) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels (1 = positive) of an IMDB split.

    source: "tfds" (tensorflow_datasets, as the recipe), "download" (the official archive, cached,
    sha256-checked), a path to an aclImdb folder or .tar.gz, "synthetic" (generated, offline), or
    "auto": the first of tfds / a cached download / download that works, saying which it used.
    limit: a random subset of that many reviews, half of each class (seeded).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    cache_dir = cache_dir or Settings.cache_dir
    if source == "auto":
        texts, labels, source = _load_auto(split, cache_dir)
    elif source == "tfds":
        texts, labels = _load_tfds(split)
    elif source == "download":
        texts, labels = _read_aclimdb(download_imdb(cache_dir), split)
    elif source == "synthetic":
        texts, labels = synthetic_reviews(25_000, seed=seed + (0 if split == "train" else 1))
    elif _looks_like_path(source):
        texts, labels = _read_aclimdb(Path(source).expanduser(), split)
    else:
        raise ValueError(f"unknown data source {source!r}: use 'auto', 'tfds', 'download', "
                         "'synthetic' or a path to an aclImdb folder or .tar.gz archive")
    labels = np.asarray(labels, dtype=np.int64)
    check_texts_and_labels(texts, labels, num_labels=2)  # IMDB: 0 negative, 1 positive
    if limit is not None:
        texts, labels = balanced_subset(texts, labels, limit, seed)
    if verbose:
        print(f"IMDB {split}: {len(texts):,} reviews from {source} "
              f"({int(labels.sum()):,} positive, {int(len(labels) - labels.sum()):,} negative)")
    return texts, labels


def _looks_like_path(source: str) -> bool:
    return os.sep in source or source.endswith((".tar.gz", ".tgz")) or os.path.exists(source)


def _load_auto(split, cache_dir):
    errors = []
    for source in ("tfds", "download"):
        try:
            if source == "tfds":
                return (*_load_tfds(split), "tfds")
            return (*_read_aclimdb(download_imdb(cache_dir), split), "download")
        except Exception as error:  # noqa: BLE001 - we report every failure below
            errors.append(f"{source}: {type(error).__name__}: {error}")
    raise RuntimeError("could not load IMDB from any source:\n  " + "\n  ".join(errors) +
                       "\nOffline? In the settings cell pass profile=\"tiny\", or data_source= a local "
                       "aclImdb folder or aclImdb_v1.tar.gz (headless: SMART_BATCHING_PROFILE / "
                       "SMART_BATCHING_DATA).")


def _load_tfds(split):
    import tensorflow_datasets as tfds  # Colab has it; elsewhere this ImportError is reported
    import tensorflow as tf

    # TensorFlow only reads the data here, but when it starts it reserves nearly all the memory of
    # every GPU it sees, which leaves PyTorch little to train with on the same GPU (issue 12). So
    # hide the GPUs from TensorFlow before tfds.load starts it. If TensorFlow is already running
    # with a GPU (something earlier in this process used it), the list can't change any more
    # (RuntimeError): load anyway, since the data is the same either way.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
    dataset = tfds.load("imdb_reviews/plain_text", split=split, as_supervised=True)
    texts, labels = [], []
    for text, label in tfds.as_numpy(dataset):
        texts.append(text.decode("utf-8"))
        labels.append(int(label))
    return texts, labels


def check_texts_and_labels(texts, labels, num_labels: int | None = None) -> int:
    """Raise ValueError on anything the batching code would otherwise mishandle silently; returns
    the number of classes (see `check_labels`)."""
    check_texts(texts)
    return check_labels(labels, len(texts), num_labels, what="texts")


def check_texts(texts) -> None:
    if len(texts) == 0:
        raise ValueError("no texts: the data is empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is a {type(text).__name__}, not a str")


def check_labels(labels, n: int, num_labels: int | None = None, what: str = "sequences") -> int:
    """Single-label classification: every label an integer class id 0 .. K-1, K >= 2 (IMDB: 0/1).

    K is num_labels when given (every label must be below it), else inferred as the largest
    label + 1. Returns K. Raises ValueError naming the offending values.
    """
    if n == 0:
        raise ValueError(f"no {what}: the data is empty")
    if n != len(labels):
        raise ValueError(f"{n} {what} but {len(labels)} labels: they must pair up one to one")
    values = np.asarray(labels)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        bad = [v for v in dict.fromkeys(values.tolist())
               if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad or values.dtype == bool:
            raise ValueError(f"labels must be integer class ids 0, 1, ...; found {(bad or values.tolist())[:5]}")
    values = values.astype(np.int64)
    negative = sorted(set(values[values < 0].tolist()))
    if negative:
        raise ValueError(f"labels must be class ids >= 0; found {negative[:5]}")
    if num_labels is not None:
        if not isinstance(num_labels, (int, np.integer)) or num_labels < 2:
            raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
        too_big = sorted(set(values[values >= num_labels].tolist()))
        if too_big:
            raise ValueError(f"labels must be in 0..{num_labels - 1} for num_labels={num_labels}; "
                             f"found {too_big[:5]}")
    classes = int(num_labels or values.max() + 1)
    if classes < 2:
        raise ValueError(f"labels must hold at least two classes (0 and 1); found only {sorted(set(values.tolist()))}")
    return classes


def balanced_subset(texts, labels, limit: int, seed: int = 321):
    """`limit` reviews chosen at random, half from each class (the extra one, if odd, positive)."""
    labels = np.asarray(labels)
    if limit < 2:
        raise ValueError(f"limit must be at least 2 to keep both classes, got {limit}")
    if limit > len(texts):
        raise ValueError(f"limit {limit:,} is more than the {len(texts):,} reviews available")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_pos = (limit + 1) // 2
    n_pos = min(max(n_pos, limit - len(neg)), len(pos))
    if n_pos in (0, limit):
        raise ValueError(f"cannot keep both classes: the data has {len(pos):,} positive and "
                         f"{len(neg):,} negative reviews")
    chosen = np.concatenate([rng.choice(pos, n_pos, replace=False),
                             rng.choice(neg, limit - n_pos, replace=False)])
    rng.shuffle(chosen)
    return [texts[i] for i in chosen], labels[chosen]


def download_imdb(cache_dir: str, url: str = IMDB_URL, sha256: str = IMDB_SHA256,
                  filename: str = "aclImdb_v1.tar.gz") -> Path:
    """The official archive in `cache_dir`, downloaded once with a progress bar and sha256-checked."""
    target = Path(cache_dir).expanduser() / filename
    if target.exists():
        if file_sha256(target) == sha256:
            return target
        print(f"{target} has the wrong checksum; downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {filename}") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    actual = file_sha256(partial)
    if actual != sha256:
        partial.unlink()
        raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                         "the download is corrupt or not the official archive")
    partial.replace(target)
    return target


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_aclimdb(path: Path, split: str):
    """Reviews of one split from an aclImdb folder or a .tar.gz in that layout, in file-id order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no aclImdb folder or archive at {path}")
    rows = []  # (label, id, text)
    if path.is_dir():
        root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
        for label_name, label in (("neg", 0), ("pos", 1)):
            for file in (root / split / label_name).glob("*.txt"):
                match = re.fullmatch(r"(\d+)_(\d+)\.txt", file.name)
                if match:
                    rows.append((label, int(match[1]), file.read_text(encoding="utf-8")))
    else:
        try:
            # Stream the archive member by member: no extraction to disk, one pass.
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    match = _ACLIMDB_FILE.search(member.name)
                    if member.isfile() and match and match[1] == split:
                        text = archive.extractfile(member).read().decode("utf-8")
                        rows.append((int(match[2] == "pos"), int(match[3]), text))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path} is not a readable aclImdb archive ({type(error).__name__}: "
                             f"{error}); delete it and download it again") from error
    if not rows:
        raise FileNotFoundError(f"no reviews for split {split!r} in {path}: expected files like "
                                f"aclImdb/{split}/pos/<id>_<rating>.txt")
    rows.sort(key=lambda row: (row[0], row[1]))
    # Interleave the classes reproducibly, as tfds does, so that the first reviews a reader
    # looks at are not all negative.
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i][2] for i in order], [rows[i][0] for i in order]


# -- synthetic reviews: IMDB-like lengths, a learnable label, no network -----------------------

_NEUTRAL = ("the movie film story plot actor actress director scene scenes character characters "
            "cast script camera music score ending beginning time one two first last really just "
            "this that it was is were a an of in on to and but with as for by at about from "
            "watch watched watching saw see seen think thought people audience everyone nothing "
            "something little much more most some very also even still again never ever").split()
_POSITIVE = ("great excellent wonderful brilliant superb moving beautiful funny charming "
             "masterpiece delightful touching enjoyable perfect loved memorable gripping").split()
_NEGATIVE = ("terrible awful boring dull bad worst waste poor stupid horrible mess "
             "disappointing weak pointless annoying forgettable tedious").split()


def synthetic_reviews(n: int, seed: int = 0, median_words: float = 60.0,
                      sentiment_rate: float = 0.12) -> tuple[list[str], np.ndarray]:
    """`n` movie-review-like texts and balanced 0/1 labels, deterministic by seed.

    Word counts are log-normal with a long right tail (a few words to several hundred), shaped like
    IMDB's but about 3x shorter, so that the tiny profile's max_len of 128 truncates a similar
    share (~15 %) as max_len 400 does on IMDB (23 %), and batching behaves as on real reviews. About `sentiment_rate` of the words are sentiment
    words, 85 % of them matching the label: a signal a small model learns within an epoch or two.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    n_words = np.clip(rng.lognormal(math.log(median_words), 0.75, n), 4, 1000).astype(int)
    # dtype=object: a fixed-width str array would cut longer sentiment words to the neutral
    # words' width ("masterpiece" -> "masterpiec").
    neutral, positive, negative = (np.array(w, dtype=object) for w in (_NEUTRAL, _POSITIVE, _NEGATIVE))
    texts = []
    for label, count in zip(labels, n_words):
        words = neutral[rng.integers(0, len(neutral), count)]
        is_sentiment = rng.random(count) < sentiment_rate
        agrees = rng.random(count) < 0.85
        use_positive = is_sentiment & (agrees == bool(label))
        use_negative = is_sentiment & ~use_positive
        words[use_positive] = positive[rng.integers(0, len(positive), use_positive.sum())]
        words[use_negative] = negative[rng.integers(0, len(negative), use_negative.sum())]
        texts.append(" ".join(words) + ".")
    return texts, labels


# ----------------------------------------------------------------------------------------------
# Tokenizer and model.
# ----------------------------------------------------------------------------------------------

# A BERT small enough to train in seconds on a CPU, with the real architecture.
TINY_BERT = dict(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=512)


def load_tokenizer(settings: Settings):
    """The model's fast tokenizer (or tokenizer_name's); for the tiny model, one learned here."""
    name = settings.tokenizer_name or settings.model_name
    if name == TINY_MODEL:
        return train_tiny_tokenizer()
    if name == RANDOM_BERT_BASE:
        raise ValueError(f"{RANDOM_BERT_BASE} has no tokenizer of its own: set tokenizer_name "
                         "(SMART_BATCHING_TOKENIZER) to one with the bert-base-uncased vocabulary")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def train_tiny_tokenizer(vocab_size: int = TINY_BERT["vocab_size"], seed: int = 0):
    """A lowercase WordPiece tokenizer with BERT's special tokens, learned from synthetic reviews.

    The vocabulary: the special tokens, every character seen (alone and as a "##" continuation,
    so any text can be spelled out), then the corpus's words, most frequent first. We count the
    words here rather than use `tokenizers`' WordPieceTrainer because that trainer breaks ties in
    hash order, which gives a different vocabulary in every process: tiny-profile runs would
    not repeat.
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus, _ = synthetic_reviews(500, seed=seed)
    # A little general English too, so that other text (IMDB, say) gets real pieces, not [UNK].
    corpus += ["the quick brown fox jumps over the lazy dog while an excited audience watches",
               "abcdefghijklmnopqrstuvwxyz 0123456789 . , ! ? ' \" ( ) - : ; / < >"]
    words = Counter(word for text in corpus
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in words for c in word})
    vocab = specials + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in sorted(words.items(), key=lambda wc: (-wc[1], wc[0])) if w not in vocab]
    vocab = vocab[:vocab_size]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)},
                                           unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=TINY_BERT["max_position_embeddings"])


def model_config(settings: Settings, num_labels: int = 2):
    """The model's configuration: the tiny one, bert-base's shape, or the pretrained model's."""
    from transformers import AutoConfig, BertConfig

    if settings.model_name == TINY_MODEL:
        return BertConfig(**TINY_BERT, num_labels=num_labels)
    if settings.model_name == RANDOM_BERT_BASE:  # BertConfig()'s defaults are bert-base's shape
        return BertConfig(num_labels=num_labels)
    return AutoConfig.from_pretrained(settings.model_name, num_labels=num_labels)


def load_model(settings: Settings, num_labels: int = 2):
    """BERT with a fresh classification head: pretrained weights, or random ones from a config
    (tiny, random-bert-base), seeded."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(settings.seed)  # the new head's initialisation is part of the experiment
    if settings.model_name in (TINY_MODEL, RANDOM_BERT_BASE):
        return AutoModelForSequenceClassification.from_config(model_config(settings, num_labels))
    return AutoModelForSequenceClassification.from_pretrained(settings.model_name,
                                                              num_labels=num_labels)


def model_max_length(tokenizer) -> int | None:
    """The longest input the tokenizer's model accepts, or None when it does not say."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < 1_000_000 else None


def check_max_len(max_len: int, tokenizer=None) -> None:
    if not isinstance(max_len, (int, np.integer)) or max_len < 2:
        raise ValueError(f"max_len must be an integer >= 2 ([CLS] and [SEP] need two), got {max_len!r}")
    limit = model_max_length(tokenizer) if tokenizer is not None else None
    if limit is not None and max_len > limit:
        raise ValueError(f"max_len {max_len} is above the model's limit of {limit} tokens")


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


# ----------------------------------------------------------------------------------------------
# Memory.
# ----------------------------------------------------------------------------------------------

def reset_peak_memory(device: torch.device | None = None) -> None:
    """Start a new peak-memory measurement (CUDA allocator peak, or the process's peak RSS).

    On Linux, writing 5 to /proc/self/clear_refs resets the kernel's resident-set high-water mark
    (VmHWM), so CPU peaks can be measured per phase inside one process, like CUDA's. Before that,
    glibc's malloc_trim hands freed heap pages back to the OS: otherwise memory an earlier, larger
    step freed stays resident, and a later step reuses it without raising the peak at all.
    """
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the baseline may include freed memory still held by the allocator
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: peak_memory_mb then reports the peak since the process started


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory since the last reset, in MiB: CUDA allocations on a GPU, the process's peak RSS
    (everything resident: Python, the model, activations) on the CPU."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = process_memory_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux KiB; lifetime peak


def process_memory_mb(field: str = "VmRSS") -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: peak
    resident), in MiB; None where there is no /proc (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def step_peak_memory(model, batch: Mapping, device: torch.device, optimizer, amp: bool = True) -> dict:
    """Memory of ONE training step (forward, backward, optimizer step) on `batch`, in MiB.

    baseline_mb: in use right before the step (model, optimizer state; on the CPU the whole
    process); peak_mb: the peak during it; extra_mb = peak - baseline: what the step itself needs
    (activations, gradients). `measures` says which memory: CUDA allocations or the process's RSS.
    A fresh AdamW allocates its state (2x the parameters) in its first step: take one warm-up
    step first to see activations and gradients alone. Autocast on CUDA as in `train_epoch`.
    """
    model.train()
    batch = model_inputs(batch, device)
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    reset_peak_memory(device)
    baseline = peak_memory_mb(device)  # right after a reset, the peak is what is in use now
    amp_dtype = autocast_dtype(device) if amp else None
    with attention_backends(), torch.autocast(device.type, dtype=amp_dtype,
                                              enabled=amp_dtype is not None):
        loss = model(**batch).loss
        loss.backward()
    optimizer.step()
    synchronize(device)
    peak = peak_memory_mb(device)
    optimizer.zero_grad(set_to_none=True)  # free the gradients before the next measurement
    return dict(baseline_mb=baseline, peak_mb=peak, extra_mb=peak - baseline,
                measures="CUDA allocated memory" if device.type == "cuda" else "process peak RSS")


# ----------------------------------------------------------------------------------------------
# Where notebooks put what they make (figures, saved models, results).
# ----------------------------------------------------------------------------------------------

def output_dir(*parts: str) -> Path:
    """outputs/<parts> next to helpers.py (or $SMART_BATCHING_OUTPUT), created on demand."""
    root = Path(os.environ.get(ENV_PREFIX + "OUTPUT") or Path(__file__).resolve().parent / "outputs")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as outputs/figures/<name>.png (150 dpi) and return the path."""
    path = output_dir("figures") / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
