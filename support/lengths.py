"""The token count of every sequence in a dataset, measured once: what a smart-batch sampler sorts.

A `datasets.Dataset` is read column-wise through Arrow (a length column if it has one, else the
lengths of its input_ids lists, computed in one vectorized call), never row by row: reading rows
decodes every column of every row, raw text included. Other datasets either know their lengths
(helpers.TokenizedDataset's ``lengths``) or are measured item by item. Either way the result is
cached per dataset object, so that every loader build, evaluation and prediction reuses it.
"""
from __future__ import annotations

import weakref

import numpy as np

_CACHE: dict[tuple[int, str | None], np.ndarray] = {}


def is_hf_dataset(data) -> bool:
    """Whether `data` is a `datasets.Dataset` (without importing datasets when it is not loaded)."""
    import sys

    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(data, datasets.Dataset)


def sequence_lengths(dataset, length_column: str | None = "length") -> np.ndarray:
    """Token counts of a dataset's sequences as an int64 array, computed once per dataset object.

    A `datasets.Dataset`: its `length_column` if it has one (the Trainer's length_column_name,
    trusted as the Trainer trusts it), else the lengths of its "input_ids" lists. An object with
    a ``lengths`` attribute (helpers.TokenizedDataset): those. Anything else indexable:
    len(dataset[i]["input_ids"]) for every i.
    """
    key = (id(dataset), length_column)
    if key in _CACHE:
        return _CACHE[key]
    if is_hf_dataset(dataset):
        lengths = _arrow_lengths(dataset, length_column)
    elif getattr(dataset, "lengths", None) is not None:
        return np.asarray(dataset.lengths, dtype=np.int64)
    else:
        lengths = np.fromiter((len(dataset[i]["input_ids"]) for i in range(len(dataset))),
                              dtype=np.int64, count=len(dataset))
    try:
        weakref.finalize(dataset, _CACHE.pop, key, None)  # forget it when the dataset goes
    except TypeError:
        return lengths  # not weak-referenceable: nothing to tie a cache entry to
    _CACHE[key] = lengths
    return lengths


def _arrow_lengths(dataset, length_column: str | None) -> np.ndarray:
    """One column read through Arrow (indices from select / shuffle / splits applied)."""
    import pyarrow.compute as pc

    column = length_column if length_column in dataset.column_names else "input_ids"
    if column not in dataset.column_names:
        raise ValueError(f"the dataset has no {column!r} column to measure sequence lengths from "
                         f"(columns: {dataset.column_names}): tokenize it first, e.g. "
                         "dataset.map(lambda batch: tokenizer(batch['text'], truncation=True), batched=True)")
    values = dataset.select_columns([column]).with_format("arrow")[:].column(column)
    if column == "input_ids":
        values = pc.list_value_length(values)
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"row {row} of the dataset has no {column!r}: every row needs one")
    return values.to_numpy().astype(np.int64)
