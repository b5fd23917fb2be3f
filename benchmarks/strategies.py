"""The ways to batch the same data that the benchmark compares, and the batches each builds.

fixed (every sequence padded to max_len, random order: the recipe's "old approach"), dynamic (the
same random batches, each padded to its longest), smart (the recipe's smart batching:
helpers.smart_batch_indices), length_grouped (Hugging Face's LengthGroupedSampler, as Trainer's
group_by_length, cut into batches of batch_size) and token_budget (helpers.SmartBatchSampler with
max_tokens: as many sequences as fit in len(batch) * longest <= max_tokens). Any of them with
`_x<N>` after its name (smart_x8, smart_x16) rounds every batch's width up to a multiple of N:
fewer distinct shapes for more padding.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import torch

import helpers


@dataclasses.dataclass(frozen=True)
class Batching:
    """What a strategy's batches are built from: the split's lengths and the run's settings."""

    lengths: np.ndarray
    batch_size: int
    max_len: int
    max_tokens: int
    seed: int


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way to batch: its label, how it batches for training and evaluation (in words and as a
    function giving batch indices), and how its batches are padded."""

    name: str
    label: str
    train_batching: str
    eval_batching: str
    train_indices: Callable[[Batching, int], list]  # (data, epoch) -> that epoch's batches
    eval_indices: Callable[[Batching], list]
    pad_to_max_len: bool = False
    pad_to_multiple_of: int | None = None  # this strategy's own width rounding

    def padding(self, max_len: int, pad_to_multiple_of: int | None) -> tuple[int | None, int | None]:
        """(pad_to, pad_to_multiple_of) of this strategy's batches, given the loop's rounding."""
        return (max_len if self.pad_to_max_len else None), (self.pad_to_multiple_of or pad_to_multiple_of)


def length_grouped_batches(lengths, batch_size: int, seed: int) -> list[np.ndarray]:
    """LengthGroupedSampler's index order cut into consecutive batches, as a DataLoader would."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(batch_size, lengths=[int(n) for n in lengths],
                                   generator=torch.Generator().manual_seed(seed))
    order = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def budget_batches(d: Batching, epoch: int | None) -> list[np.ndarray]:
    """SmartBatchSampler with a token budget: shuffled for training (epoch given), sorted for eval."""
    sampler = helpers.SmartBatchSampler(d.lengths, None, max_tokens=d.max_tokens, seed=d.seed, shuffle=epoch is not None)
    sampler.set_epoch(epoch or 0)
    return sampler.batches()


def random_batches(d: Batching, epoch: int) -> list[np.ndarray]:
    return helpers.fixed_batch_indices(len(d.lengths), d.batch_size, d.seed + epoch)


def input_order_batches(d: Batching) -> list[np.ndarray]:
    return helpers.fixed_batch_indices(len(d.lengths), d.batch_size, shuffle=False)


STRATEGY_LIST = [
    Strategy("fixed", "Fixed padding to max_len",
             "random order, every sequence padded to max_len", "input order, padded to max_len",
             random_batches, input_order_batches, pad_to_max_len=True),
    Strategy("dynamic", "Dynamic padding, random order",
             "the same random batches as fixed, each padded to its longest",
             "input order (unsorted), each batch padded to its longest",
             random_batches, input_order_batches),
    Strategy("smart", "Smart batching (recipe)",
             "random contiguous runs of the length-sorted order, each padded to its longest",
             "sorted by length (sorted_batch_indices), each batch padded to its longest",
             lambda d, epoch: helpers.smart_batch_indices(d.lengths, d.batch_size, seed=d.seed + epoch),
             lambda d: helpers.sorted_batch_indices(d.lengths, d.batch_size)),
    Strategy("length_grouped", "HF LengthGroupedSampler",
             "LengthGroupedSampler indices (random mega-batches of up to 50 batches, sorted within), "
             "cut into batch_size, each padded to its longest",
             "LengthGroupedSampler, seeded (as Trainer evaluates with group_by_length)",
             lambda d, epoch: length_grouped_batches(d.lengths, d.batch_size, d.seed + epoch),
             lambda d: length_grouped_batches(d.lengths, d.batch_size, d.seed)),
    Strategy("token_budget", "SmartBatchSampler, token budget",
             "runs of the length-sorted order with len(batch) * longest <= max_tokens, in random "
             "order, each padded to its longest",
             "sorted by length with the token budget (SmartBatchSampler, shuffle=False)",
             budget_batches, lambda d: budget_batches(d, None)),
]
STRATEGIES = {s.name: s for s in STRATEGY_LIST}
DEFAULT_STRATEGIES = ("fixed", "dynamic", "smart", "length_grouped", "token_budget")
ROUNDED = re.compile(r"(\w+?)_x(\d+)")


def get_strategy(name: str) -> Strategy:
    """A strategy by name: one of STRATEGIES, or one of them + `_x<N>`, its widths rounded up to
    a multiple of N. A KeyError names the choices."""
    match = ROUNDED.fullmatch(name)
    if match and match[1] in STRATEGIES and int(match[2]) >= 1:
        base, multiple = STRATEGIES[match[1]], int(match[2])
        words = f", rounded up to a multiple of {multiple}"
        return dataclasses.replace(base, name=name, label=f"{base.label}, widths rounded to x{multiple}",
                                   train_batching=base.train_batching + words,
                                   eval_batching=base.eval_batching + words, pad_to_multiple_of=multiple)
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}, or one of "
                       "them + _x<N> (widths rounded up to a multiple of N, e.g. smart_x16)")
    return STRATEGIES[name]


def build_batches(strategy: Strategy, split: helpers.TokenizedDataset, indices, pad_id: int,
                  max_len: int, pad_to_multiple_of: int | None):
    """(batch dicts, token counts) for these batch indices, padded the strategy's way."""
    pad_to, multiple = strategy.padding(max_len, pad_to_multiple_of)
    batches = helpers.batches_from_indices(split.input_ids, split.labels, indices, pad_id, pad_to, multiple)
    return batches, helpers.count_tokens(split.lengths, indices, pad_to, multiple)


def step_shapes(batches: list[dict]) -> dict:
    """Sequences per step and batch widths: why strategies differ in steps, memory and speed."""
    rows = np.array([b["input_ids"].shape[0] for b in batches])
    widths = np.array([b["input_ids"].shape[1] for b in batches])
    return dict(steps=len(batches), sequences_per_step_mean=float(rows.mean()),
                sequences_per_step_max=int(rows.max()), largest_batch_tokens=int((rows * widths).max()),
                distinct_widths=len(set(widths.tolist())))
