"""Batch indices: smart (the recipe's random contiguous runs), the token-budget mode, sorted and
fixed batches, and the token counts they lead to."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import helpers

lengths_st = st.lists(st.integers(1, 60), min_size=1, max_size=300).map(np.array)
seed_st = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=60, deadline=None)


def assert_exactly_once(batches, n):
    everything = np.concatenate(batches)
    assert len(everything) == n
    assert np.array_equal(np.sort(everything), np.arange(n))


def assert_runs_of_the_remaining_sorted_order(lengths, batches):
    """Independent of any random draw: batch k must be a contiguous slice of what batches
    0..k-1 left of the stable length order."""
    remaining = list(np.argsort(lengths, kind="stable"))
    for batch in batches:
        start = remaining.index(batch[0])
        assert remaining[start:start + len(batch)] == list(batch)
        del remaining[start:start + len(batch)]
    assert remaining == []


# -- smart_batch_indices (batch_size mode) ---------------------------------------------------------

@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st)
def test_every_index_once_and_only_the_last_batch_short(lengths, batch_size, seed):
    batches = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    assert_exactly_once(batches, len(lengths))
    assert len(batches) == -(-len(lengths) // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert len(batches[-1]) == len(lengths) - batch_size * (len(batches) - 1)


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st)
def test_identical_to_the_recipe_reference(lengths, batch_size, seed):
    fast = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    reference = helpers.recipe_batch_indices(lengths, batch_size, seed=seed)
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference):
        assert np.array_equal(a, b)


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st)
def test_each_batch_is_a_run_of_the_remaining_sorted_order(lengths, batch_size, seed):
    batches = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    assert_runs_of_the_remaining_sorted_order(lengths, [list(b) for b in batches])


def test_identical_to_the_reference_across_many_chunks():
    # more sequences than one internal chunk (4,096) so that runs straddle chunk boundaries
    lengths = np.random.default_rng(0).integers(1, 500, 20_000)
    for batch_size in (16, 1000):
        fast = helpers.smart_batch_indices(lengths, batch_size, seed=5)
        reference = helpers.recipe_batch_indices(lengths, batch_size, seed=5)
        assert all(np.array_equal(a, b) for a, b in zip(fast, reference))
        assert len(fast) == len(reference)


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st)
def test_same_seed_same_batches(lengths, batch_size, seed):
    first = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    second = helpers.smart_batch_indices(list(lengths), batch_size, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=200, max_size=400).map(np.array),
       batch_size=st.integers(1, 10), seed=st.integers(0, 2**31), epoch=st.integers(1, 50))
def test_another_seed_or_epoch_gives_another_arrangement(lengths, batch_size, seed, epoch):
    # >= 20 batches: two seeds agreeing on every draw is astronomically unlikely
    base = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    other = helpers.smart_batch_indices(lengths, batch_size, seed=seed + epoch)
    assert not all(np.array_equal(a, b) for a, b in zip(base, other))


def test_unseeded_calls_are_random():
    lengths = np.arange(1, 1001)
    a, b = (helpers.smart_batch_indices(lengths, 8) for _ in range(2))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


# -- the token-budget mode -------------------------------------------------------------------------

@FEW
@given(data=st.data(), lengths=lengths_st, seed=seed_st,
       cap=st.one_of(st.none(), st.integers(1, 50)))
def test_budget_mode_respects_budget_and_cap_and_covers_everything(data, lengths, seed, cap):
    max_tokens = data.draw(st.integers(int(lengths.max()), int(lengths.max()) * 30))
    batches = helpers.smart_batch_indices(lengths, cap, seed=seed, max_tokens=max_tokens)
    assert_exactly_once(batches, len(lengths))
    position = np.empty(len(lengths), dtype=int)
    position[np.argsort(lengths, kind="stable")] = np.arange(len(lengths))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= max_tokens
        if cap is not None:
            assert len(batch) <= cap
        # a run of the sorted order: sequences of neighbouring lengths travel together
        assert np.array_equal(np.sort(position[batch]), np.arange(position[batch].min(),
                                                                  position[batch].max() + 1))
    again = helpers.smart_batch_indices(lengths, cap, seed=seed, max_tokens=max_tokens)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_budget_mode_packs_short_sequences_into_bigger_batches():
    lengths = np.r_[np.full(500, 10), np.full(500, 400)]
    batches = helpers.smart_batch_indices(lengths, None, seed=0, max_tokens=4000)
    sizes = {int(lengths[b].max()): len(b) for b in batches if len(set(lengths[b])) == 1}
    assert sizes[10] > sizes[400]


def test_budget_mode_seeds_move_the_batches():
    lengths = np.random.default_rng(1).integers(5, 300, 2000)
    a = helpers.smart_batch_indices(lengths, None, seed=1, max_tokens=3000)
    b = helpers.smart_batch_indices(lengths, None, seed=2, max_tokens=3000)
    assert {tuple(x) for x in a} != {tuple(x) for x in b}


# -- sorted and fixed batches ----------------------------------------------------------------------

@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40),
       budget_factor=st.one_of(st.none(), st.integers(1, 20)))
def test_sorted_batches_follow_the_length_order(lengths, batch_size, budget_factor):
    max_tokens = None if budget_factor is None else int(lengths.max()) * budget_factor
    batches = helpers.sorted_batch_indices(lengths, batch_size, max_tokens=max_tokens)
    assert np.array_equal(np.concatenate(batches), np.argsort(lengths, kind="stable"))
    for batch in batches:
        assert len(batch) <= batch_size
        if max_tokens is not None:
            assert len(batch) * lengths[batch].max() <= max_tokens


@FEW
@given(n=st.integers(1, 300), batch_size=st.integers(1, 40), seed=seed_st)
def test_fixed_batches_cover_everything(n, batch_size, seed):
    batches = helpers.fixed_batch_indices(n, batch_size, seed=seed)
    assert_exactly_once(batches, n)
    assert all(len(b) == batch_size for b in batches[:-1])
    in_order = helpers.fixed_batch_indices(n, batch_size, shuffle=False)
    assert np.array_equal(np.concatenate(in_order), np.arange(n))


# -- token counts ----------------------------------------------------------------------------------

@FEW
@given(data=st.data(), lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st)
def test_smart_never_processes_more_tokens_than_fixed_padding(data, lengths, batch_size, seed):
    max_len = data.draw(st.integers(int(lengths.max()), 80))
    smart = helpers.count_tokens(lengths, helpers.smart_batch_indices(lengths, batch_size, seed))
    fixed = helpers.count_tokens(lengths, helpers.fixed_batch_indices(len(lengths), batch_size, seed),
                                     pad_to=max_len)
    assert smart["real_tokens"] == fixed["real_tokens"] == lengths.sum()
    assert smart["processed_tokens"] <= fixed["processed_tokens"]
    assert fixed["processed_tokens"] == len(lengths) * max_len
    assert smart["pad_tokens"] == smart["processed_tokens"] - smart["real_tokens"] >= 0


def realistic_lengths(n, seed, max_len=400):
    """Token counts shaped like IMDB's under bert-base-uncased at max_len 400 (median ~230,
    about a fifth truncated): a log-normal with a long right tail, clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(232), 0.65, n), 20, max_len).astype(int)


@pytest.mark.parametrize("seed", [0, 1])
def test_smart_batches_come_within_one_percent_of_the_real_tokens_at_imdb_scale(seed):
    # 25,000 reviews (an IMDB split) in batches of 16, input in random or sorted order
    lengths = realistic_lengths(25_000, seed)
    for order in (lengths, np.sort(lengths)):
        counts = helpers.count_tokens(order, helpers.smart_batch_indices(order, 16, seed=seed))
        assert counts["processed_tokens"] <= 1.01 * counts["real_tokens"]
        fixed = helpers.count_tokens(order, helpers.fixed_batch_indices(len(order), 16, seed),
                                         pad_to=400)
        assert counts["processed_tokens"] < 0.7 * fixed["processed_tokens"]


@pytest.mark.parametrize("seed", [0, 1])
def test_5000_realistic_lengths(seed):
    # With 5,000 sequences the random runs leave wider gaps (fewer sequences per length), so the
    # recipe's method pads a little more; pure length order stays within 1 %.
    lengths = realistic_lengths(5_000, seed)
    smart = helpers.count_tokens(lengths, helpers.smart_batch_indices(lengths, 16, seed=seed))
    assert smart["processed_tokens"] <= 1.02 * smart["real_tokens"]
    ordered = helpers.count_tokens(lengths, helpers.sorted_batch_indices(lengths, 16))
    assert ordered["processed_tokens"] <= 1.01 * ordered["real_tokens"]


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 40), seed=seed_st,
       pad_to=st.one_of(st.none(), st.just(60), st.just(64)))
def test_count_tokens_from_masks_equals_count_from_lengths(lengths, batch_size, seed, pad_to):
    input_ids = [[7] * int(k) for k in lengths]
    batches = helpers.smart_batch_indices(lengths, batch_size, seed=seed)
    masks = [b["attention_mask"] for b in helpers.batches_from_indices(
        input_ids, np.zeros(len(lengths), int), batches, pad_id=0, pad_to=pad_to)]
    counts = helpers.count_tokens(lengths, batches, pad_to=pad_to)
    assert counts["real_tokens"] == sum(int(m.sum()) for m in masks)  # the masks' ones
    assert counts["processed_tokens"] == sum(m.numel() for m in masks)  # every cell
    assert counts["pad_tokens"] == counts["processed_tokens"] - counts["real_tokens"]


def test_pad_batch_pads_on_the_right():
    ids, mask = helpers.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="does not fit"):
        helpers.pad_batch([[1, 2, 3]], pad_id=0, pad_to=2)


def test_token_budget_keeps_about_batch_size_steps_and_lowers_the_peak():
    """helpers.token_budget: batch_size x the mean length gives about as many batches as
    batch_size does (the recipe's number of optimizer steps), each within the budget."""
    rng = np.random.default_rng(3)
    lengths = np.clip(rng.lognormal(np.log(230), 0.6, 25_000).astype(int), 13, 400)
    budget = helpers.token_budget(lengths, 16)
    assert budget == int(np.ceil(16 * lengths.mean())) < 16 * 400
    batches = helpers.smart_batch_indices(lengths, None, seed=0, max_tokens=budget)
    assert abs(len(batches) / (len(lengths) / 16) - 1) < 0.1
    assert max(len(b) * lengths[b].max() for b in batches) <= budget
    short = np.full(10, 3)
    short[0] = 50  # one long sequence: the budget must still hold it
    assert helpers.token_budget(short, 2) == 50
