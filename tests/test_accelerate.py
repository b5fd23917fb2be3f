"""What accelerator.prepare(loader) does to a SmartBatchSampler (accelerate 1.x), as notebook 05
warns. `prepare` calls accelerate.data_loader.prepare_data_loader with the number of processes
and the process index, so we can ask it what two processes would load, in one process. If a
release changes any of this, a test here fails: update notebook 05's warning with it."""
import numpy as np
import pytest
import torch

import helpers

accelerate_data_loader = pytest.importorskip("accelerate.data_loader")

LENGTHS = np.random.default_rng(0).integers(5, 60, 203)  # 203 sequences: 13 batches of 16, the last short


def loaded_by_each_process(num_processes=2, own_sharding=False, **sampler_options):
    """(the index lists each process would load in epoch 1, the sampler's epoch in each)."""
    dataset = helpers.TokenizedDataset([[5] * int(n) for n in LENGTHS], np.zeros(len(LENGTHS), int),
                                       num_labels=2)
    loaded, epochs = [], []
    for process in range(num_processes):
        sharding = dict(num_replicas=num_processes, rank=process) if own_sharding else {}
        sampler = helpers.SmartBatchSampler(LENGTHS, seed=0, **sampler_options, **sharding)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
                                             collate_fn=helpers.PadCollator(0))
        prepared = accelerate_data_loader.prepare_data_loader(
            loader, num_processes=num_processes, process_index=process, put_on_device=False)
        prepared.set_epoch(1)
        loaded.append([list(batch) for batch in prepared.batch_sampler])
        epochs.append(sampler.epoch)
    return loaded, epochs


def all_indices(loaded):
    return [i for process in loaded for batch in process for i in batch]


def test_prepare_repeats_batches_to_even_out_and_does_not_set_the_samplers_epoch():
    loaded, epochs = loaded_by_each_process(batch_size=16)
    seen = all_indices(loaded)
    assert set(seen) == set(range(len(LENGTHS)))  # everything once...
    assert len(seen) > len(LENGTHS)  # ...and some twice: 13 batches do not split evenly in two
    assert epochs == [0, 0]  # prepared.set_epoch(1) did not reach our sampler


def test_prepare_shards_a_sampler_that_shards_itself_a_second_time():
    loaded, _ = loaded_by_each_process(batch_size=16, own_sharding=True)
    seen = all_indices(loaded)
    assert len(set(seen)) < 0.6 * len(LENGTHS)  # about one batch in num_processes**2 per process


def test_prepare_skips_rounds_when_a_budget_has_a_batch_size_cap():
    loaded, _ = loaded_by_each_process(batch_size=64, max_tokens=16 * 60)
    # a round of batches is handed out only if its last batch has exactly batch_size sequences
    assert len(set(all_indices(loaded))) < len(LENGTHS)


def test_our_own_sharding_without_prepare_gives_every_sequence_once():
    """The safe recipe notebook 05 gives: shard with num_replicas/rank, keep the loader out of prepare."""
    seen = []
    for rank in range(2):
        sampler = helpers.SmartBatchSampler(LENGTHS, 16, seed=0, num_replicas=2, rank=rank)
        sampler.set_epoch(1)
        seen += [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(len(LENGTHS)))
