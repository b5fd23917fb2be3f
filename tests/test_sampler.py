"""SmartBatchSampler and PadCollator: the DataLoader version of smart batching."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import helpers

FEW = settings(max_examples=40, deadline=None)
# Batches of >= 2 from >= 8 sequences: the ranks can always be given equal batch counts
# (one-sequence batches cannot be split; that case is tested on its own).
lengths_st = st.lists(st.integers(1, 50), min_size=8, max_size=200).map(np.array)


def epoch_batches(lengths, num_replicas, epoch=0, **kwargs):
    """Every rank's batches for one epoch, as lists of lists."""
    ranks = []
    for rank in range(num_replicas):
        sampler = helpers.SmartBatchSampler(lengths, num_replicas=num_replicas, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        assert all(isinstance(b, list) and all(isinstance(i, int) for i in b) for b in batches)
        ranks.append(batches)
    return ranks


@FEW
@given(data=st.data(), lengths=lengths_st, num_replicas=st.integers(1, 4),
       batch_size=st.one_of(st.none(), st.integers(1, 20)), use_budget=st.booleans(),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 5), shuffle=st.booleans(),
       fail_fast=st.booleans())
def test_every_index_once_across_ranks_with_equal_batch_counts(data, lengths, num_replicas,
                                                               batch_size, use_budget, seed, epoch,
                                                               shuffle, fail_fast):
    max_tokens = None
    if use_budget or batch_size is None:
        max_tokens = data.draw(st.integers(int(lengths.max()), int(lengths.max()) * 8))
    try:
        ranks = epoch_batches(lengths, num_replicas, epoch, batch_size=batch_size,
                              max_tokens=max_tokens, seed=seed, shuffle=shuffle,
                              fail_fast=fail_fast)
    except ValueError as error:
        # Only when it is impossible: more batches (rounded up to a multiple of the ranks)
        # than sequences, e.g. 9 one-token sequences, a budget of 1 token and 2 ranks.
        assert "too few sequences to give every rank the same number of batches" in str(error)
        raw = (helpers.smart_batch_indices(lengths, batch_size, seed + epoch, max_tokens) if shuffle
               else helpers.sorted_batch_indices(lengths, batch_size, max_tokens))
        assert -(-len(raw) // num_replicas) * num_replicas > len(lengths)
        return
    per_rank = [sorted(i for b in batches for i in b) for batches in ranks]
    everything = sorted(i for indices in per_rank for i in indices)
    assert everything == list(range(len(lengths)))  # exactly once, across all ranks together
    assert len({len(batches) for batches in ranks}) == 1  # same number of steps on every rank
    for batches in ranks:
        for batch in batches:
            assert len(batch) >= 1
            if batch_size is not None:
                assert len(batch) <= batch_size
            if max_tokens is not None:
                assert len(batch) * lengths[batch].max() <= max_tokens


@FEW
@given(lengths=lengths_st, num_replicas=st.integers(1, 4), batch_size=st.integers(2, 20),
       seed=st.integers(0, 2**31))
def test_same_seed_and_epoch_same_batches_set_epoch_changes_them(lengths, num_replicas, batch_size,
                                                                 seed):
    first = epoch_batches(lengths, num_replicas, 3, batch_size=batch_size, seed=seed)
    assert epoch_batches(lengths, num_replicas, 3, batch_size=batch_size, seed=seed) == first
    sampler = helpers.SmartBatchSampler(lengths, batch_size, seed=seed)
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # iterating twice in one epoch repeats it


def test_set_epoch_changes_the_arrangement():
    lengths = np.random.default_rng(0).integers(1, 300, 500)
    sampler = helpers.SmartBatchSampler(lengths, 16, seed=11)
    epochs = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert all(epochs[i] != epochs[j] for i in range(4) for j in range(i))
    budget = helpers.SmartBatchSampler(lengths, None, max_tokens=2000, seed=11)
    budget.set_epoch(1)
    one = list(budget)
    budget.set_epoch(2)
    assert list(budget) != one


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 20), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 10))
def test_epoch_e_is_smart_batch_indices_with_seed_plus_e(lengths, batch_size, seed, epoch):
    sampler = helpers.SmartBatchSampler(lengths, batch_size, seed=seed)
    sampler.set_epoch(epoch)
    expected = helpers.smart_batch_indices(lengths, batch_size, seed=seed + epoch)
    assert list(sampler) == [b.tolist() for b in expected]


@FEW
@given(lengths=lengths_st, num_replicas=st.integers(1, 4), batch_size=st.integers(2, 20),
       seed=st.integers(0, 2**31))
def test_ranks_deal_out_one_shared_arrangement(lengths, num_replicas, batch_size, seed):
    ranks = epoch_batches(lengths, num_replicas, batch_size=batch_size, seed=seed)
    shared = helpers.SmartBatchSampler(lengths, batch_size, seed=seed, num_replicas=num_replicas)
    all_batches = [b.tolist() for b in shared.all_batches()]
    for rank, batches in enumerate(ranks):
        assert batches == all_batches[rank::num_replicas]
    # ranks are disjoint
    sets = [set(i for b in batches for i in b) for batches in ranks]
    assert all(not (sets[a] & sets[b]) for a in range(num_replicas) for b in range(a))


@FEW
@given(lengths=lengths_st, batch_size=st.integers(1, 20),
       budget_factor=st.one_of(st.none(), st.integers(1, 8)))
def test_shuffle_false_gives_sorted_order(lengths, batch_size, budget_factor):
    max_tokens = None if budget_factor is None else int(lengths.max()) * budget_factor
    sampler = helpers.SmartBatchSampler(lengths, batch_size, max_tokens=max_tokens, shuffle=False,
                                        seed=5)
    flat = [i for b in sampler for i in b]
    assert flat == np.argsort(lengths, kind="stable").tolist()
    sampler.set_epoch(7)  # no shuffling: the epoch changes nothing
    assert [i for b in sampler for i in b] == flat


@FEW
@given(lengths=lengths_st, num_replicas=st.integers(1, 4), batch_size=st.integers(1, 10),
       seed=st.integers(0, 2**31))
def test_drop_last_keeps_only_full_batches_in_equal_numbers(lengths, num_replicas, batch_size, seed):
    full_batches = len(lengths) // batch_size
    expected_count = full_batches - full_batches % num_replicas
    if expected_count == 0:
        with pytest.raises(ValueError, match="drop_last left no batches"):
            epoch_batches(lengths, num_replicas, batch_size=batch_size, seed=seed, drop_last=True)
        return
    ranks = epoch_batches(lengths, num_replicas, batch_size=batch_size, seed=seed, drop_last=True)
    assert all(len(batches) == expected_count // num_replicas for batches in ranks)
    flat = [i for batches in ranks for b in batches for i in b]
    assert all(len(b) == batch_size for batches in ranks for b in batches)
    assert len(flat) == len(set(flat)) == expected_count * batch_size  # nothing repeated


@FEW
@given(lengths=lengths_st, num_replicas=st.integers(1, 4),
       batch_size=st.one_of(st.none(), st.integers(2, 20)), seed=st.integers(0, 2**31))
def test_fail_fast_puts_the_costliest_batch_second(lengths, num_replicas, batch_size, seed):
    """Second: the first step with the optimizer's state in memory (see SmartBatchSampler)."""
    max_tokens = int(lengths.max()) * 4
    for rank, batches in enumerate(epoch_batches(lengths, num_replicas, batch_size=batch_size,
                                                 max_tokens=max_tokens, seed=seed,
                                                 fail_fast=True)):
        longest = max(lengths[i] for b in batches for i in b)
        position = min(1, len(batches) - 1)
        assert lengths[batches[position]].max() == longest
        costliest = [b for b in batches if lengths[b].max() == longest]
        assert len(batches[position]) == max(len(b) for b in costliest)
        plain = epoch_batches(lengths, num_replicas, batch_size=batch_size, max_tokens=max_tokens,
                              seed=seed)[rank]
        assert sorted(map(tuple, plain)) == sorted(map(tuple, batches))  # only the order moved


def test_over_long_sequence_is_rejected_at_construction():
    with pytest.raises(ValueError, match="sequence 2 has 500 tokens, more than the max_tokens "
                                         "budget of 400"):
        helpers.SmartBatchSampler([10, 20, 500, 30], 16, max_tokens=400)


# -- through a DataLoader --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenized(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 64)
    return helpers.TokenizedDataset(input_ids, labels), tiny_tokenizer.pad_token_id


def loader_batches(dataset, sampler, pad_id, num_workers):
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         collate_fn=helpers.PadCollator(pad_id))
    return list(loader)


def test_dataloader_workers_yield_the_same_batches(tokenized):
    dataset, pad_id = tokenized
    sampler = helpers.SmartBatchSampler(dataset.lengths, 16, seed=4)
    sampler.set_epoch(2)
    in_process = loader_batches(dataset, sampler, pad_id, 0)
    with_workers = loader_batches(dataset, sampler, pad_id, 2)
    assert len(in_process) == len(with_workers) == len(sampler)
    for a, b in zip(in_process, with_workers):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataloader_batches_match_the_tensor_lists(tokenized):
    dataset, pad_id = tokenized
    sampler = helpers.SmartBatchSampler(dataset.lengths, 16, seed=4)
    sampler.set_epoch(1)
    from_loader = loader_batches(dataset, sampler, pad_id, 0)
    from_lists = helpers.smart_batches_from_ids(dataset.input_ids, dataset.labels, 16, pad_id, seed=4 + 1)
    assert len(from_loader) == len(from_lists)
    for a, b in zip(from_loader, from_lists):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_pad_collator_matches_data_collator_with_padding(tokenized, tiny_tokenizer):
    from transformers import DataCollatorWithPadding

    dataset, pad_id = tokenized
    examples = [dataset[i] for i in (0, 5, 17, 40, 41)]
    assert len({len(e["input_ids"]) for e in examples}) > 1  # padding is exercised
    ours = helpers.PadCollator(pad_id)(examples)
    theirs = DataCollatorWithPadding(tiny_tokenizer, return_tensors="pt")(examples)
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key


def test_pad_collator_accepts_label_and_no_label():
    with_label = helpers.PadCollator(0)([{"input_ids": [2, 3], "label": 1}])
    assert with_label["labels"].tolist() == [1]
    without = helpers.PadCollator(0)([{"input_ids": [2, 3]}, {"input_ids": [2, 9, 3]}])
    assert set(without) == {"input_ids", "attention_mask"}
    assert without["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]


def test_dataset_items_and_lengths(tokenized):
    dataset, _ = tokenized
    assert dataset.lengths.tolist() == [len(s) for s in dataset.input_ids]
    item = dataset[3]
    assert set(item) == {"input_ids", "labels", "index"} and isinstance(item["labels"], int)
    assert item["index"] == 3  # it travels into the batch, for evaluate


def test_one_sequence_batches_that_cannot_be_dealt_evenly_are_an_error():
    # 9 batches of one sequence each cannot become an even count without repeating one
    sampler = helpers.SmartBatchSampler([4] * 9, 1, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="too few sequences to give every rank the same number"):
        list(sampler)
    # the same with drop_last drops the odd batch instead
    dropping = helpers.SmartBatchSampler([4] * 9, 1, num_replicas=2, rank=0, drop_last=True)
    assert len(dropping) == 4


@FEW
@given(lengths=st.lists(st.integers(1, 50), min_size=40, max_size=200).map(np.array),
       num_replicas=st.integers(1, 3), budget_factor=st.integers(2, 8), seed=st.integers(0, 2**31),
       epochs=st.integers(1, 5))
def test_even_out_gives_every_epoch_the_most_batches_within_the_budget(lengths, num_replicas,
                                                                      budget_factor, seed, epochs):
    max_tokens = int(lengths.max()) * budget_factor
    samplers = [helpers.SmartBatchSampler(lengths, None, max_tokens=max_tokens, seed=seed,
                                          num_replicas=num_replicas, rank=rank)
                for rank in range(num_replicas)]
    drawn = []
    for epoch in range(epochs):
        samplers[0].set_epoch(epoch)
        drawn.append(len(samplers[0]))
    counts = {sampler.even_out(epochs) for sampler in samplers}
    assert counts == {max(drawn)}  # the most any epoch drew, the same on every rank
    for epoch in range(epochs):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        ranks = [list(sampler) for sampler in samplers]
        assert all(len(batches) == max(drawn) for batches in ranks)
        assert sorted(i for batches in ranks for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) * lengths[b].max() <= max_tokens for batches in ranks for b in batches)
