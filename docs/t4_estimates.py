"""How long each notebook's GPU work should take on a T4 (Colab's free GPU): one derivation, one file.

No GPU run of this series has been recorded, so these are estimates, and this is how they are made.
The anchor is the one measured figure we have for bert-base: the primer trained one epoch of smart
batching, 6,381,424 tokens, in 35 min 06 s on a Tesla K80 (fp32): 3,030 tokens a second.

A T4 runs our loops in float16 (autocast). How much faster than that K80 it is depends on how
well it uses its tensor cores, which we have not measured, so we give a range:

* slow end: the T4 gains nothing from float16 and does as well as its float32 peak allows against
  the K80's (8.1 against 4.37 TFLOPS: one GK210 die at boost clock, half of the K80 board's 8.74):
  1.85x the K80's tokens a second;
* fast end: the T4's float16 tensor-core peak (65 TFLOPS) used as well as the K80 used its
  float32 peak: 14.9x.

An evaluation step (forward only) costs about a third of a training step (forward and backward),
so evaluated tokens count a third. A notebook's estimate is its tokens over those two speeds. Token
counts come from the recorded runs (docs/benchmark/2026-12-02_2000/results.json for 2,000-review subsets, notebook
03's run in docs/figures/recorded_runs.json for all 25,000 training reviews) and the test split's
count below. Each notebook's work is counted as the notebook does it: notebook 04 evaluates both of
its models on the same smart (length-sorted) test batches. What it leaves out: loading and
tokenizing (minutes on Colab's CPU, said separately in each notebook), model downloads, and the
per-step overhead that can dominate a fast GPU at batch size 16 (docs/gpu.md).

    python docs/t4_estimates.py                              # writes docs/t4_estimates.json
    python docs/t4_estimates.py --count ARCHIVE TOKENIZER    # recounts the test split's tokens
"""
from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent

K80_SECONDS = 35 * 60 + 6  # the primer: one epoch of smart batching, bert-base, fp32
K80_TOKENS = 6_381_424  # tokens that epoch processed (the primer's count, which we reproduce)
K80_TFLOPS = 8.74 / 2  # one GK210 die of the two on a K80 board, boost clock (fp32)
T4_FP32_TFLOPS = 8.1
T4_FP16_TFLOPS = 65.0  # tensor cores
EVAL_COST = 1 / 3  # forward only, against forward + backward
STEP_MEMORY_STEPS = 11  # notebook 06's single steps: a warm-up, 3 costliest batches, 2 fresh-AdamW, 5 budgets
# Smart batching's evaluation of all 25,000 test reviews in length order, max_len 400, batch 16:
# counted with `python docs/t4_estimates.py --count ARCHIVE TOKENIZER` (the official
# aclImdb archive, the bert-base-uncased tokenizer): 6,281,195 real tokens, 6,284,016 processed.
SORTED_EVAL_TOKENS_ALL_TEST = 6_284_016


def count_sorted_eval_tokens(archive: str, tokenizer_folder: str) -> dict:
    """The tokens of evaluating all 25,000 test reviews in length order (helpers' own counter;
    helpers importable: the project installed, `pip install -e .`)."""
    import helpers
    from transformers import AutoTokenizer

    texts, _ = helpers.load_imdb("test", source=archive, verbose=False)
    ids = helpers.tokenize_without_padding(texts, AutoTokenizer.from_pretrained(tokenizer_folder), 400)
    lengths = [len(s) for s in ids]
    return helpers.count_tokens(lengths, helpers.sorted_batch_indices(lengths, 16))


def tokens_per_second() -> dict:
    k80 = K80_TOKENS / K80_SECONDS
    return dict(k80=k80, t4_slow=k80 * T4_FP32_TFLOPS / K80_TFLOPS, t4_fast=k80 * T4_FP16_TFLOPS / K80_TFLOPS)


def workloads() -> list[dict]:
    """(training tokens, evaluated tokens) of each notebook's GPU work in the full profile."""
    bench = json.loads((DOCS / "benchmark" / "2026-12-02_2000" / "results.json").read_text(encoding="utf-8"))
    by_name = {s["name"]: s for s in bench["strategies"]}
    runs = json.loads((DOCS / "figures" / "recorded_runs.json").read_text(encoding="utf-8"))["runs"]
    all_train = next(run for run in runs if run["name"] == "03")  # notebook 03: all 25,000 reviews
    smart_2000, smart_eval_2000 = by_name["smart"]["processed_tokens"], by_name["smart"]["eval_processed_tokens"]
    return [
        dict(name="04", what="bert-base trained with smart batching and with fixed padding on all 25,000 "
             "reviews, both evaluated on the same smart test batches of 25,000",
             train_tokens=all_train["smart"]["processed_tokens"] + all_train["fixed"]["processed_tokens"],
             eval_tokens=2 * SORTED_EVAL_TOKENS_ALL_TEST),
        dict(name="05", what="four trainings and evaluations on 2,000 + 2,000 reviews (comparison_size)",
             train_tokens=4 * smart_2000, eval_tokens=4 * smart_eval_2000),
        dict(name="06", what=f"one training and one evaluation on 2,000 + 2,000 reviews, {STEP_MEMORY_STEPS} "
             "single steps for memory (each of at most 16 x 400 tokens)",
             train_tokens=smart_2000 + STEP_MEMORY_STEPS * 6_400, eval_tokens=smart_eval_2000),
        dict(name="07", what="five trainings and evaluations on 2,000 + 2,000 reviews",
             train_tokens=sum(s["processed_tokens"] for s in bench["strategies"]),
             eval_tokens=sum(s["eval_processed_tokens"] for s in bench["strategies"])),
    ]


def estimates() -> dict:
    speed = tokens_per_second()
    notebooks = []
    for work in workloads():
        cost = work["train_tokens"] + EVAL_COST * work["eval_tokens"]  # in training tokens
        notebooks.append(dict(work, minutes_low=cost / speed["t4_fast"] / 60,
                              minutes_high=cost / speed["t4_slow"] / 60))
    return dict(
        about="T4 time estimates for each notebook's GPU work (training and evaluation only), derived by "
              "docs/t4_estimates.py from the primer's K80 measurement; no GPU run of this series is recorded.",
        anchor=dict(k80_seconds=K80_SECONDS, k80_tokens=K80_TOKENS, k80_tokens_per_second=speed["k80"]),
        peaks_tflops=dict(k80_one_die_fp32=K80_TFLOPS, t4_fp32=T4_FP32_TFLOPS, t4_fp16=T4_FP16_TFLOPS),
        t4_tokens_per_second=dict(slow=speed["t4_slow"], fast=speed["t4_fast"]),
        eval_cost=EVAL_COST, notebooks=notebooks)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--count"]:
        print(count_sorted_eval_tokens(*sys.argv[2:4]))
        raise SystemExit
    result = estimates()
    (DOCS / "t4_estimates.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for nb in result["notebooks"]:
        print(f"notebook {nb['name']}: {nb['minutes_low']:.1f}-{nb['minutes_high']:.1f} min on a T4 ({nb['what']})")
