"""How long does building smart batches take? helpers.smart_batch_indices next to the recipe's method.

The recipe removes each batch from a Python list of the remaining indices (`del samples[a:b]`),
which shifts the rest of the list every time: O(n^2 / batch_size). helpers.smart_batch_indices
makes the same random draws with a structure that removes a run in O(log n), so both give
identical batches. This script times the two on

1. the IMDB training reviews' token counts, when --data (an aclImdb folder or .tar.gz) and
   --model (a tokenizer: hub name or local folder) are given, and
2. synthetic long-tailed lengths (log-normal, shaped like IMDB's, clipped to 1..max_len) at
   100,000, 250,000 and --n (1,000,000 by default),

prints the time of each (best of --repeats; the recipe once above 250,000 because it is slow, and
not at all above --max-recipe-n), checks that both give identical batches, and on IMDB prints the
tokens processed with fixed padding and with smart batching. It asserts nothing: it is a
measurement. Target: 1,000,000 lengths in under a second.

    python benchmarks/batching_speed.py
    python benchmarks/batching_speed.py --data aclImdb_v1.tar.gz --model bert-base-uncased
    python benchmarks/batching_speed.py --n 20000          # small and quick (the tests run this)

compare_strategies.py imports `construction_table` from here for its own batch-construction rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers.py lives one level up
import helpers  # noqa: E402

# Token counts of the 25,000 IMDB training reviews with the bert-base-uncased vocabulary, before
# truncation, are close to log-normal: log-mean 5.53 (about 250 tokens), log-sd 0.65; 23 % are
# longer than 400 tokens. Synthetic lengths drawn this way batch like IMDB's.
IMDB_LOG_MEAN, IMDB_LOG_SD = 5.53, 0.65
TARGET_N, TARGET_SECONDS = 1_000_000, 1.0
RECIPE_REPEAT_LIMIT = 250_000  # above this the recipe is timed once: a repeat would cost seconds


def synthetic_lengths(n: int, max_len: int = 400, seed: int = 0) -> np.ndarray:
    """`n` IMDB-like sequence lengths: log-normal, rounded, clipped to 1..max_len (truncation)."""
    rng = np.random.default_rng(seed)
    lengths = np.rint(rng.lognormal(IMDB_LOG_MEAN, IMDB_LOG_SD, n))
    return np.clip(lengths, 1, max_len).astype(np.int64)


def imdb_lengths(data: str, model: str, max_len: int = 400) -> np.ndarray:
    """Token counts of the IMDB training reviews, truncated at max_len, as the notebooks make them."""
    texts, _ = helpers.load_imdb("train", source=data)
    tokenizer = helpers.load_tokenizer(helpers.get_settings("full", model_name=model))
    start = time.perf_counter()
    input_ids = helpers.tokenize_without_padding(texts, tokenizer, max_len)
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


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


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
                   identical=same_batches(smart, recipe))
    return row


def construction_table(sizes, batch_size: int = 16, max_len: int = 400, max_recipe_n: int | None = None,
                       repeats: int = 3, seed: int = 0, verbose: bool = True) -> list[dict]:
    """`time_construction` on synthetic IMDB-like lengths at each size; the recipe only up to max_recipe_n."""
    rows = []
    for n in sizes:
        run_recipe = max_recipe_n is None or n <= max_recipe_n
        row = dict(lengths="synthetic", **time_construction(synthetic_lengths(n, max_len, seed),
                                                            batch_size, seed, repeats, run_recipe))
        rows.append(row)
        if verbose:
            print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    smart = f"ours {row['smart_seconds']:8.3f} s (best of {row['smart_repeats']})"
    if row["recipe_seconds"] is None:
        recipe = "recipe: not run (above --max-recipe-n)"
    else:
        runs = "once" if row["recipe_repeats"] == 1 else f"best of {row['recipe_repeats']}"
        recipe = (f"recipe {row['recipe_seconds']:8.3f} s ({runs}), "
                  f"{row['recipe_seconds'] / row['smart_seconds']:6.1f}x ours, "
                  f"identical batches: {'yes' if row['identical'] else 'NO'}")
    return f"  {row['lengths']:>9} {row['n']:>10,} lengths: {smart}   {recipe}"


def token_comparison(lengths, batch_size: int, max_len: int, seed: int = 0) -> dict:
    """Tokens one epoch processes with fixed padding to max_len, with smart batches, and with
    SmartBatchSampler's token budget of batch_size * max_len (the fixed batches' own size)."""
    fixed = helpers.count_tokens(
        lengths, helpers.fixed_batch_indices(len(lengths), batch_size, seed), pad_to=max_len)
    smart = helpers.count_tokens(lengths, helpers.smart_batch_indices(lengths, batch_size, seed))
    max_tokens = batch_size * max_len
    budget_batches = helpers.SmartBatchSampler(lengths, None, max_tokens=max_tokens,
                                               seed=seed).all_batches()
    budget = helpers.count_tokens(lengths, budget_batches)
    budget.update(max_tokens=max_tokens, batches=len(budget_batches),
                  largest_batch_tokens=max(len(b) * int(lengths[b].max()) for b in budget_batches))
    return dict(fixed=fixed, smart=smart, budget=budget)


def print_tokens(tokens: dict) -> None:
    fixed, smart, budget = tokens["fixed"], tokens["smart"], tokens["budget"]
    for name, counts in (("fixed padding", fixed), ("smart batches", smart),
                         (f"token budget {budget['max_tokens']:,}", budget)):
        print(f"  {name}: {counts['processed_tokens']:>12,} tokens processed, "
              f"{counts['real_tokens']:>12,} real, efficiency {counts['efficiency']:.1%}")
    print(f"  token budget: {budget['batches']:,} batches, the largest {budget['largest_batch_tokens']:,} "
          f"tokens (len * longest), within the budget: {budget['largest_batch_tokens'] <= budget['max_tokens']}")
    print(f"  smart batches process {smart['processed_tokens'] / fixed['processed_tokens']:.1%} of the tokens "
          f"of fixed padding ({fixed['processed_tokens'] / smart['processed_tokens']:.2f}x fewer)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="aclImdb folder or .tar.gz: also time the IMDB training lengths")
    parser.add_argument("--model", help="tokenizer for --data (hub name or local folder)")
    parser.add_argument("--max-len", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n", type=int, default=TARGET_N,
                        help="largest number of synthetic lengths (smaller sizes: 100k and 250k below it)")
    parser.add_argument("--max-recipe-n", type=int, default=TARGET_N,
                        help="time the recipe's list deletion only up to this many lengths")
    parser.add_argument("--repeats", type=int, default=3, help="keep the best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.data is None) != (args.model is None):
        parser.error("--data and --model go together (the IMDB lengths need a tokenizer)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = dict(imdb=None, tokens=None)
    print(f"Batch construction, batch_size {args.batch_size}: helpers.smart_batch_indices ('ours') "
          "and the recipe's list deletion (helpers.recipe_batch_indices)")
    if args.data:
        lengths = imdb_lengths(args.data, args.model, args.max_len)
        print(f"IMDB train: {len(lengths):,} reviews, mean {lengths.mean():.0f} tokens, "
              f"{(lengths == args.max_len).mean():.1%} truncated at {args.max_len}")
        report["imdb"] = dict(lengths="IMDB", **time_construction(lengths, args.batch_size, args.seed,
                                                                  args.repeats))
        print(format_row(report["imdb"]))
        print(f"Tokens for one epoch of IMDB train (max_len {args.max_len}, batch {args.batch_size}):")
        report["tokens"] = token_comparison(lengths, args.batch_size, args.max_len, args.seed)
        print_tokens(report["tokens"])

    sizes = sorted({n for n in (100_000, 250_000) if n < args.n} | {args.n})
    print(f"Synthetic IMDB-like lengths (log-normal, clipped to 1..{args.max_len}):")
    report["synthetic"] = construction_table(sizes, args.batch_size, args.max_len, args.max_recipe_n,
                                             args.repeats, args.seed)
    capped = [row["n"] for row in report["synthetic"] if row["recipe_seconds"] is None]
    if capped:
        print(f"  (recipe not timed at {', '.join(f'{n:,}' for n in capped)}: above --max-recipe-n "
              f"{args.max_recipe_n:,})")
    at_target = next((row for row in report["synthetic"] if row["n"] == TARGET_N), None)
    if at_target:
        verdict = "met" if at_target["smart_seconds"] < TARGET_SECONDS else "MISSED"
        print(f"Target: {TARGET_N:,} lengths batched in under {TARGET_SECONDS:.0f} s: {verdict} "
              f"({at_target['smart_seconds']:.3f} s, best of {at_target['smart_repeats']})")
    return report


if __name__ == "__main__":
    main()
