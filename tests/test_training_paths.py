"""Training through the DataLoader path (TokenizedDataset + SmartBatchSampler + PadCollator) is
the same computation as the tensor-list path (smart_batches_from_ids); evaluate puts results back
in the dataset's order from the index each batch carries; the Trainer drops that index."""
import numpy as np
import pytest
import torch

import helpers


def test_dataloader_and_tensor_lists_train_identically(tiny_tokenizer):
    settings = helpers.get_settings("tiny", epochs=2, batch_size=16)
    texts, labels = helpers.load_imdb("train", source="synthetic", limit=120, seed=settings.seed,
                                      verbose=False)
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len)
    pad_id, device = tiny_tokenizer.pad_token_id, torch.device("cpu")

    def tensor_lists(epoch):
        return helpers.smart_batches_from_ids(
            input_ids, labels, settings.batch_size, pad_id, seed=settings.seed + epoch)

    dataset = helpers.TokenizedDataset(input_ids, labels)
    sampler = helpers.SmartBatchSampler(dataset.lengths, settings.batch_size, seed=settings.seed)
    # A DataLoader draws a base seed for its workers each time it is iterated, from the global
    # torch RNG unless given a generator of its own; that draw would shift every dropout mask.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
                                         collate_fn=helpers.PadCollator(pad_id),
                                         generator=torch.Generator())

    def data_loader(epoch):
        sampler.set_epoch(epoch)
        return loader

    runs = []
    for batches_for_epoch in (tensor_lists, data_loader):
        model = helpers.load_model(settings)
        history = helpers.fine_tune(model, batches_for_epoch, settings, device, verbose=False)
        runs.append((np.concatenate([h["losses"] for h in history]), model))

    (list_losses, list_model), (loader_losses, loader_model) = runs
    assert len(list_losses) == len(loader_losses) == 2 * 8  # 120 reviews in batches of 16, 2 epochs
    np.testing.assert_allclose(loader_losses, list_losses, rtol=1e-6, atol=1e-7)
    assert not np.allclose(list_losses[0], list_losses[-1])  # it did train
    for a, b in zip(list_model.parameters(), loader_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_evaluate_restores_the_dataset_order_from_the_batch_index(tiny_tokenizer):
    settings = helpers.get_settings("tiny")
    texts, labels = helpers.load_imdb("test", source="synthetic", limit=40, seed=3, verbose=False)
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len)
    pad_id, device = tiny_tokenizer.pad_token_id, torch.device("cpu")
    model = helpers.load_model(settings)
    one_by_one = [helpers.evaluate(model, helpers.batches_from_indices(input_ids, labels, [[i]], pad_id),
                                   device, verbose=False)["logits"][0] for i in range(len(input_ids))]
    batches = helpers.make_fixed_batches(input_ids, labels, 8, pad_id, settings.max_len, seed=5)
    result = helpers.evaluate(model, batches, device, verbose=False)
    assert result["index"].tolist() == list(range(len(input_ids)))
    assert result["labels"].tolist() == list(labels)
    torch.testing.assert_close(result["logits"], torch.stack(one_by_one), rtol=1e-4, atol=1e-5)
    # without an index the results stay in batch order, and say so
    unindexed = [{k: v for k, v in b.items() if k != "index"} for b in batches]
    in_batch_order = helpers.evaluate(model, unindexed, device, verbose=False)
    assert in_batch_order["index"] is None
    batch_order = np.concatenate([b["index"].numpy() for b in batches])
    np.testing.assert_array_equal(in_batch_order["predictions"], result["predictions"][batch_order])
    assert in_batch_order["accuracy"] == result["accuracy"]
    # unlabelled texts: predictions in the dataset's order, no accuracy
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    predicted = helpers.evaluate(model, unlabelled, device, verbose=False)
    assert predicted["labels"] is None and predicted["accuracy"] is None
    np.testing.assert_array_equal(predicted["predictions"], result["predictions"])


def test_evaluate_refuses_an_example_seen_twice(tiny_tokenizer):
    settings = helpers.get_settings("tiny")
    input_ids = helpers.tokenize_without_padding(["a good film", "a bad film", "fine"], tiny_tokenizer, 16)
    batches = helpers.batches_from_indices(input_ids, [1, 0, 1], [[0, 1], [1, 2]], tiny_tokenizer.pad_token_id)
    with pytest.raises(ValueError, match=r"examples \[1\] were evaluated more than once"):
        helpers.evaluate(helpers.load_model(settings), batches, torch.device("cpu"), verbose=False)
    with pytest.raises(ValueError, match="no batches"):
        helpers.evaluate(helpers.load_model(settings), [], torch.device("cpu"), verbose=False)


def test_the_trainer_drops_the_index_before_collating(tiny_tokenizer, tmp_path):
    """TokenizedDataset items carry "index"; the Trainer's RemoveColumnsCollator must take it out
    (the model's forward has no such argument) for non-`datasets` datasets like ours."""
    from transformers import Trainer, TrainingArguments

    settings = helpers.get_settings("tiny")
    input_ids = helpers.tokenize_without_padding(["a good film"] * 3 + ["bad"] * 3, tiny_tokenizer, 16)
    dataset = helpers.TokenizedDataset(input_ids, [1, 1, 1, 0, 0, 0])
    assert "index" in dataset[0]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True,
                             report_to="none", max_steps=1, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=helpers.load_model(settings), args=args, train_dataset=dataset,
                      data_collator=helpers.PadCollator(tiny_tokenizer.pad_token_id))
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert trainer.train().global_step == 1
