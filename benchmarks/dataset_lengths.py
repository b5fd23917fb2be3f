"""How long do the lengths of a tokenized `datasets.Dataset` take? What every smart batch needs.

Offline: --rows generated reviews, tokenized with `map(batched=True)` by the tiny profile's
tokenizer, then shuffled (an indices mapping, as after a split). It prints the time of
helpers.sequence_lengths (column-wise through Arrow, the first call; a second call is the cache)
next to reading every row's input_ids, as a sampler that measures row by row would. A measurement,
not a test; target: 25,000 rows in under a second.

    python -m benchmarks.dataset_lengths            # 25,000 rows
    python -m benchmarks.dataset_lengths --rows 500 # quick (the tests run this)
"""
from __future__ import annotations

import argparse
import time

import datasets

import helpers
from support.imdb import synthetic_reviews
from support.models import train_tiny_tokenizer


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000)
    rows = parser.parse_args(argv).rows
    tokenizer = train_tiny_tokenizer()
    texts, labels = synthetic_reviews(rows, seed=0)
    raw = datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()})
    tokenized, seconds = timed(lambda: raw.map(lambda batch: tokenizer(batch["text"], truncation=True),
                                               batched=True).shuffle(seed=0))
    print(f"{rows:,} rows tokenized with map(batched=True) in {seconds:.2f} s")
    lengths, first = timed(lambda: helpers.sequence_lengths(tokenized))
    _, again = timed(lambda: helpers.sequence_lengths(tokenized))
    row_by_row, slow = timed(lambda: [len(tokenized[i]["input_ids"]) for i in range(len(tokenized))])
    assert lengths.tolist() == row_by_row
    print(f"{rows:,} rows: lengths in {first:.3f} s column-wise (cached: {again:.4f} s), "
          f"{slow:.2f} s row by row; mean {lengths.mean():.1f} tokens")


if __name__ == "__main__":
    main()
