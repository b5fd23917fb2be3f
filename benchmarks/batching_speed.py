"""How long does building smart batches take? helpers.smart_batch_indices next to the recipe's method.

The recipe removes each batch from a Python list of the remaining indices (`del samples[a:b]`),
which shifts the rest of the list every time: O(n^2 / batch_size). helpers.smart_batch_indices
makes the same random draws on the order cut into chunks with a Fenwick tree of their sizes
(finding a run: O(log n); removing it: a short deletion inside one or two chunks), so both give
identical batches. This times the two (best of --repeats; the recipe once above 250,000, not at
all above --max-recipe-n) on synthetic IMDB-like lengths up to --n, and with --data and --model
on the IMDB training reviews' own lengths, with the tokens each batching processes. It asserts
nothing: it is a measurement. Target: 1,000,000 lengths in under a second.

    python -m benchmarks.batching_speed --n 20000          # small and quick (the tests run this)
    python -m benchmarks.batching_speed --data aclImdb_v1.tar.gz --model bert-base-uncased

max_len, batch size and seed not given: the profile's (support/arguments.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import helpers
from support.arguments import add_settings_options, given_settings, whole_number

# The token counts of IMDB's training reviews with the bert-base-uncased vocabulary, before
# truncation, are close to log-normal with these parameters (IMDB's own lengths: `--data`).
# Synthetic lengths drawn this way batch like IMDB's.
IMDB_LOG_MEAN, IMDB_LOG_SD = 5.53, 0.65
TARGET_N, TARGET_SECONDS = 1_000_000, 1.0
RECIPE_REPEAT_LIMIT = 250_000  # above this the recipe is timed once: a repeat would cost seconds


def synthetic_lengths(n: int, max_len: int = 400, seed: int = 0) -> np.ndarray:
    """`n` IMDB-like sequence lengths: log-normal, rounded, clipped to 1..max_len (truncation)."""
    rng = np.random.default_rng(seed)
    lengths = np.rint(rng.lognormal(IMDB_LOG_MEAN, IMDB_LOG_SD, n))
    return np.clip(lengths, 1, max_len).astype(np.int64)


def imdb_lengths(settings) -> np.ndarray:
    """Token counts of the IMDB training reviews, truncated at max_len, as the notebooks make them."""
    texts, _ = helpers.load_imdb("train", source=settings.data_source)
    tokenizer = helpers.load_tokenizer(settings)
    start = time.perf_counter()
    input_ids = helpers.tokenize_without_padding(texts, tokenizer, settings.max_len)
    print(f"tokenized {len(texts):,} reviews in {time.perf_counter() - start:.1f} s")
    return np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))


def best_time(function, repeats: int):
    """(fastest wall time of `repeats` calls, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def time_construction(lengths, batch_size: int = 16, seed: int = 0, repeats: int = 3,
                      run_recipe: bool = True) -> dict:
    """Seconds to build one epoch of smart batches, ours and (unless run_recipe=False) the recipe's."""
    lengths = np.asarray(lengths)
    n = len(lengths)
    smart_seconds, smart = best_time(lambda: helpers.smart_batch_indices(lengths, batch_size, seed),
                                     repeats)
    row = dict(n=n, batch_size=batch_size, batches=len(smart), smart_seconds=smart_seconds,
               smart_repeats=max(1, repeats), recipe_seconds=None, recipe_repeats=0, identical=None)
    if run_recipe:
        recipe_repeats = max(1, repeats) if n <= RECIPE_REPEAT_LIMIT else 1
        recipe_seconds, recipe = best_time(
            lambda: helpers.recipe_batch_indices(lengths, batch_size, seed), recipe_repeats)
        row.update(recipe_seconds=recipe_seconds, recipe_repeats=recipe_repeats,
                   identical=len(smart) == len(recipe) and all(map(np.array_equal, smart, recipe)))
    return row


def construction_table(sizes, batch_size: int, max_len: int, max_recipe_n: int, repeats: int, seed: int) -> list[dict]:
    """`time_construction` on synthetic IMDB-like lengths at each size; the recipe only up to max_recipe_n."""
    rows = []
    for n in sizes:
        rows.append(dict(lengths="synthetic", **time_construction(synthetic_lengths(n, max_len, seed),
                                                                  batch_size, seed, repeats, n <= max_recipe_n)))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    smart = f"ours {row['smart_seconds']:8.3f} s (best of {row['smart_repeats']})"
    runs = "once" if row["recipe_repeats"] == 1 else f"best of {row['recipe_repeats']}"
    recipe = ("recipe: not run (above --max-recipe-n)" if row["recipe_seconds"] is None else
              f"recipe {row['recipe_seconds']:8.3f} s ({runs}), {row['recipe_seconds'] / row['smart_seconds']:6.1f}x "
              f"ours, identical batches: {'yes' if row['identical'] else 'NO'}")
    return f"  {row['lengths']:>9} {row['n']:>10,} lengths: {smart}   {recipe}"


def token_comparison(lengths, batch_size: int, max_len: int, seed: int = 0) -> dict:
    """Tokens one epoch processes with fixed padding to max_len, with smart batches, and with
    SmartBatchSampler's token budget of batch_size * max_len (the fixed batches' own size)."""
    budget_batches = helpers.SmartBatchSampler(lengths, None, max_tokens=batch_size * max_len, seed=seed).all_batches()
    tokens = dict(fixed=helpers.count_tokens(lengths, helpers.fixed_batch_indices(len(lengths), batch_size, seed),
                                             pad_to=max_len),
                  smart=helpers.count_tokens(lengths, helpers.smart_batch_indices(lengths, batch_size, seed)),
                  budget=helpers.count_tokens(lengths, budget_batches))
    tokens["budget"].update(max_tokens=batch_size * max_len, batches=len(budget_batches),
                            largest_batch_tokens=max(len(b) * int(lengths[b].max()) for b in budget_batches))
    for name, counts in tokens.items():
        print(f"  {name:>6}: {counts['processed_tokens']:>12,} tokens processed, {counts['real_tokens']:>12,} real, "
              f"efficiency {counts['efficiency']:.1%}" + (f", {counts['batches']:,} batches of at most "
                                                         f"{counts['max_tokens']:,} tokens, the largest "
                                                         f"{counts['largest_batch_tokens']:,}" if name == "budget" else ""))
    return tokens


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_options(parser, "profile", "data_source", "model_name", "tokenizer_name", "max_len",
                         "batch_size", "seed")
    parser.add_argument("--n", type=whole_number(), default=TARGET_N,
                        help="largest number of synthetic lengths (smaller sizes: 100k and 250k below it)")
    parser.add_argument("--max-recipe-n", type=whole_number(), default=TARGET_N,
                        help="time the recipe's list deletion only up to this many lengths")
    parser.add_argument("--repeats", type=whole_number(), default=3, help="keep the best of this many runs")
    args = parser.parse_args(argv)
    if hasattr(args, "data_source") != hasattr(args, "model_name"):
        parser.error("--data and --model go together (the IMDB lengths need a tokenizer)")
    return args


def time_imdb(settings, repeats: int) -> dict:
    """Batch construction and one epoch's tokens on the IMDB training reviews' own lengths."""
    lengths = imdb_lengths(settings)
    print(f"IMDB train: {len(lengths):,} reviews, mean {lengths.mean():.0f} tokens, "
          f"{(lengths == settings.max_len).mean():.1%} truncated at {settings.max_len}")
    row = dict(lengths="IMDB", **time_construction(lengths, settings.batch_size, settings.seed, repeats))
    print(format_row(row))
    print(f"Tokens for one epoch of IMDB train (max_len {settings.max_len}, batch {settings.batch_size}):")
    return dict(imdb=row, tokens=token_comparison(lengths, settings.batch_size, settings.max_len, settings.seed))


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = helpers.get_settings(**given_settings(args))
    print(f"Batch construction, batch_size {settings.batch_size}: helpers.smart_batch_indices ('ours') "
          "and the recipe's list deletion (helpers.recipe_batch_indices)")
    report = time_imdb(settings, args.repeats) if hasattr(args, "data_source") else dict(imdb=None, tokens=None)
    sizes = sorted({n for n in (100_000, 250_000) if n < args.n} | {args.n})
    print(f"Synthetic IMDB-like lengths (log-normal, clipped to 1..{settings.max_len}):")
    report["synthetic"] = construction_table(sizes, settings.batch_size, settings.max_len, args.max_recipe_n,
                                             args.repeats, settings.seed)
    at_target = next((row for row in report["synthetic"] if row["n"] == TARGET_N), None)
    if at_target:
        verdict = "met" if at_target["smart_seconds"] < TARGET_SECONDS else "MISSED"
        print(f"Target: {TARGET_N:,} lengths batched in under {TARGET_SECONDS:.0f} s: {verdict} "
              f"({at_target['smart_seconds']:.3f} s, best of {at_target['smart_repeats']})")
    return report


if __name__ == "__main__":
    main()
