"""The input checks every step of the tutorial starts with: bad input is a clear error naming what
was wrong (which text, which label, which sequence, which option) before any slow work starts.

helpers.py re-exports them (helpers.check_labels works); they live here so that helpers.py reads
as the tutorial.
"""
from __future__ import annotations

import numpy as np

from support.models import model_max_length


def check_texts(texts) -> None:
    """Texts to tokenize: at least one, each a str."""
    if len(texts) == 0:
        raise ValueError("no texts: the data is empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is a {type(text).__name__}, not a str")


def check_max_len(max_len: int, tokenizer=None) -> None:
    """Room for [CLS] and [SEP], and no more than the model takes."""
    if not isinstance(max_len, (int, np.integer)) or max_len < 2:
        raise ValueError(f"max_len must be an integer >= 2 ([CLS] and [SEP] need two), got {max_len!r}")
    limit = model_max_length(tokenizer) if tokenizer is not None else None
    if limit is not None and max_len > limit:
        raise ValueError(f"max_len {max_len} is above the model's limit of {limit} tokens")


def check_batching(lengths, batch_size: int | None, max_tokens: int | None = None) -> np.ndarray:
    """The lengths as an array, once batch_size and / or max_tokens are known to fit them: every
    batching function and the sampler start here."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or len(lengths) == 0:
        raise ValueError("lengths must be a non-empty 1-D sequence of sequence lengths")
    if not np.issubdtype(lengths.dtype, np.integer) or (lengths < 1).any():
        raise ValueError("lengths must be positive integers")
    if batch_size is None and max_tokens is None:
        raise ValueError("give batch_size, max_tokens or both")
    if batch_size is not None:
        check_batch_size(batch_size)
    if max_tokens is None:
        return lengths
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    longest = int(lengths.max())
    if longest > max_tokens:
        raise ValueError(f"sequence {int(lengths.argmax())} has {longest} tokens, more than the "
                         f"max_tokens budget of {max_tokens}: raise the budget or lower max_len")
    return lengths


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def check_labels(labels, n: int, num_labels: int | None = None, what: str = "sequences") -> int:
    """K, the number of classes, once every label is a class id 0 .. K-1 (IMDB: 0/1), K >= 2:
    num_labels if given, else the largest label + 1. A ValueError names the offending values."""
    if n == 0:
        raise ValueError(f"no {what}: the data is empty")
    if n != len(labels):
        raise ValueError(f"{n} {what} but {len(labels)} labels: they must pair up one to one")
    values = np.asarray(labels)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        bad = [v for v in dict.fromkeys(values.tolist())
               if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad or values.dtype == bool:
            raise ValueError("labels must be integer class ids 0, 1, ...; "
                             f"found {(bad or values.tolist())[:5]}")
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
        raise ValueError("labels must hold at least two classes (0 and 1); "
                         f"found only {sorted(set(values.tolist()))}")
    return classes
