"""SmartBatchingTrainer (smart_trainer.py): the Hugging Face Trainer on SmartBatchSampler batches.

The Trainer must train on exactly the sampler's batches, epoch by epoch (a new arrangement each
epoch), and, given our loop's optimizer, schedule and clipping, take the same steps as
helpers.fine_tune on them: the per-step losses agree to the last bit on the CPU. Tiny model, CPU.
"""
import dataclasses
from unittest import mock

import numpy as np
import pytest
import torch

import helpers
from support.imdb import synthetic_reviews

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import smart_trainer  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def settings():
    return helpers.get_settings("tiny", epochs=2, train_size=96, test_size=48)


@pytest.fixture(scope="module")
def data(tiny_tokenizer, settings):
    """(train, test) TokenizedDatasets of generated reviews: 96 and 48, up to 128 tokens."""
    def split(n, seed):
        texts, labels = synthetic_reviews(n, seed=seed)
        return helpers.TokenizedDataset(helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len),
                                        labels)
    return split(96, 1), split(48, 2)


class Recording(smart_trainer.SmartBatchingTrainer):
    """Keeps every batch the Trainer trains on and the loss of its step."""

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        self.steps.append(({key: value.clone() for key, value in inputs.items()}, float(loss)))
        return loss


def trainer_args(settings, tmp_path, **overrides):
    """The Trainer set up as helpers.fine_tune trains: torch's AdamW (not the Trainer's default,
    fused AdamW, which rounds differently), our lr, eps and weight decay, a linear schedule after
    warmup_steps, clipping at max_grad_norm, the same seed."""
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=settings.epochs, seed=settings.seed,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        optim="adamw_torch", learning_rate=settings.learning_rate, adam_epsilon=settings.adam_epsilon,
        weight_decay=settings.weight_decay, lr_scheduler_type="linear", warmup_steps=settings.warmup_steps,
        max_grad_norm=settings.max_grad_norm, use_cpu=True, eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, **overrides)


def train(settings, dataset, tmp_path, max_tokens=None, **overrides):
    trainer = Recording(model=helpers.load_model(settings), args=trainer_args(settings, tmp_path, **overrides),
                        train_dataset=dataset, data_collator=helpers.PadCollator(0), max_tokens=max_tokens)
    trainer.steps = []
    trainer.train()
    return trainer


def sampler_batches(settings, dataset, max_tokens=None):
    """batches_for_epoch for helpers.fine_tune: the sampler's batches of that epoch, as tensors,
    every epoch evened out to the same count as the Trainer's."""
    sampler = helpers.SmartBatchSampler(dataset.lengths, None if max_tokens else settings.batch_size,
                                        max_tokens=max_tokens, seed=settings.seed)
    sampler.even_out(settings.epochs)

    def batches_for_epoch(epoch):
        sampler.set_epoch(epoch)
        return helpers.batches_from_indices(dataset.input_ids, dataset.labels, sampler.batches(), 0)
    return batches_for_epoch


def assert_trained_on(trainer, expected_epochs):
    seen = iter(trainer.steps)
    for epoch, expected in enumerate(expected_epochs):
        for step, want in enumerate(expected):
            got, _ = next(seen)
            assert set(got) == {"input_ids", "attention_mask", "labels"}, "index reached the model"
            for key in got:
                assert torch.equal(got[key], want[key]), f"epoch {epoch} step {step}: {key} differs"
    assert next(seen, None) is None, "the Trainer trained on more batches than the sampler gave"


@pytest.fixture(scope="module")
def batch_size_run(settings, data, tmp_path_factory):
    return train(settings, data[0], tmp_path_factory.mktemp("trainer"))


def test_the_trainer_trains_on_exactly_the_samplers_batches_epoch_by_epoch(batch_size_run, settings, data):
    batches_for_epoch = sampler_batches(settings, data[0])
    epochs = [batches_for_epoch(epoch) for epoch in range(settings.epochs)]
    assert_trained_on(batch_size_run, epochs)
    assert not torch.equal(epochs[0][0]["input_ids"], epochs[1][0]["input_ids"])  # a new epoch, new batches


def test_per_step_losses_match_our_own_loop(batch_size_run, settings, data):
    model = helpers.load_model(settings)  # the same initial weights: load_model seeds them
    history = helpers.fine_tune(model, sampler_batches(settings, data[0]), settings, CPU, amp=False,
                                verbose=False)
    ours = [loss for epoch in history for loss in epoch["losses"]]
    theirs = [loss for _, loss in batch_size_run.steps]
    assert len(ours) == len(theirs) == 12
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)
    theirs_now, ours_now = batch_size_run.model.state_dict(), model.state_dict()
    for name in ours_now:
        torch.testing.assert_close(theirs_now[name], ours_now[name], msg=name)


def test_a_token_budget_gives_each_epoch_its_own_batches_and_our_losses(settings, data, tmp_path):
    # 96 reviews at 1,000 tokens: 9, 9 and 8 batches in epochs 1-3 (seed 321) as drawn; evened
    # out, the third epoch's largest batch is split in two, so every epoch has 9.
    settings = helpers.get_settings("tiny", epochs=3)
    budget = 1000
    drawn = helpers.SmartBatchSampler(data[0].lengths, None, max_tokens=budget, seed=settings.seed)
    drawn.set_epoch(2)
    assert len(drawn) == 8
    batches_for_epoch = sampler_batches(settings, data[0], budget)
    epochs = [batches_for_epoch(epoch) for epoch in range(settings.epochs)]
    assert [len(e) for e in epochs] == [9, 9, 9]
    trainer = train(settings, data[0], tmp_path, max_tokens=budget, remove_unused_columns=False)
    assert_trained_on(trainer, epochs)  # the index key stays out without remove_unused_columns too
    for batches in epochs:
        assert sorted(int(i) for b in batches for i in b["index"]) == list(range(len(data[0])))
        assert all(b["input_ids"].numel() <= budget for b in batches)
    history = helpers.fine_tune(helpers.load_model(settings), batches_for_epoch, settings, CPU, amp=False,
                                verbose=False)
    # Both schedules run over 27 steps: same losses.
    assert trainer.state.global_step == trainer.state.max_steps == 27
    np.testing.assert_allclose([loss for _, loss in trainer.steps],
                               [loss for epoch in history for loss in epoch["losses"]], rtol=0, atol=1e-6)


def test_ranks_come_from_the_trainers_own_distributed_set_up(settings, data, tmp_path):
    trainer = smart_trainer.SmartBatchingTrainer(model=helpers.load_model(settings),
                                                 args=trainer_args(settings, tmp_path), train_dataset=data[0],
                                                 data_collator=helpers.PadCollator(0), fail_fast=True)
    seen = []
    for rank in (0, 1):
        with mock.patch.object(type(trainer.args), "world_size", new_callable=mock.PropertyMock, return_value=2), \
                mock.patch.object(type(trainer.args), "process_index", new_callable=mock.PropertyMock,
                                  return_value=rank):
            loader = trainer.get_train_dataloader()
        # our own loader, not accelerate's: nothing deals the batches out a second time
        assert type(loader) is smart_trainer.SmartBatchLoader
        sampler = loader.batch_sampler
        assert (sampler.num_replicas, sampler.rank, sampler.fail_fast) == (2, rank, True)
        loader.set_epoch(1)
        assert sampler.epoch == 1
        batches = [batch["input_ids"].shape[0] for batch in loader]
        assert len(batches) == len(loader) == 3  # 96 reviews: 6 batches of 16, 3 a rank
        seen += [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(len(data[0])))


def test_predict_gives_predictions_in_the_datasets_order(batch_size_run, data):
    test = data[1]
    output = batch_size_run.predict(test)
    loader = torch.utils.data.DataLoader(test, batch_size=7, collate_fn=helpers.PadCollator(0))  # dataset order
    ours = helpers.evaluate(batch_size_run.model, loader, CPU, verbose=False)
    np.testing.assert_array_equal(output.label_ids, test.labels)
    np.testing.assert_array_equal(output.predictions.argmax(-1), ours["predictions"])
    np.testing.assert_allclose(output.predictions, ours["logits"].numpy(), atol=1e-5)


def test_set_ups_it_cannot_honour_are_refused_by_name(settings, data, tmp_path):
    def make(max_tokens=None, collator=helpers.PadCollator(0), **overrides):
        return smart_trainer.SmartBatchingTrainer(
            model=helpers.load_model(settings), args=trainer_args(settings, tmp_path, **overrides),
            train_dataset=data[0], data_collator=collator, max_tokens=max_tokens)

    names = {field.name for field in dataclasses.fields(transformers.TrainingArguments)}
    for strategy in ("group_by_length", "sequential"):  # the 5.x spellings, old and new
        if "train_sampling_strategy" not in names and strategy == "sequential":
            continue
        with pytest.raises(ValueError, match="train_sampling_strategy"):
            make(**(dict(train_sampling_strategy=strategy) if "train_sampling_strategy" in names
                    else dict(group_by_length=True)))
    with pytest.raises(ValueError, match="dataloader_drop_last"):
        make(dataloader_drop_last=True)
    with pytest.raises(ValueError, match="auto_find_batch_size"):
        make(max_tokens=1000, auto_find_batch_size=True)
    with pytest.raises(ValueError, match="collator that pads"):
        make(collator=None)
    with pytest.raises(ValueError, match="max_tokens"):
        make(max_tokens=0)
    with pytest.raises(ValueError, match="more than the max_tokens budget"):
        make(max_tokens=100).get_train_dataloader()  # reviews of up to 128 tokens
