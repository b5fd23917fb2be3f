"""Training through the DataLoader path (TokenizedDataset + SmartBatchSampler + PadCollator) is
the same computation as the tensor-list path (smart_batches_from_ids + as_batch_dicts)."""
import numpy as np
import torch

import helpers


def test_dataloader_and_tensor_lists_train_identically(tiny_tokenizer):
    settings = helpers.get_settings("tiny", epochs=2, batch_size=16)
    texts, labels = helpers.load_imdb("train", source="synthetic", limit=120, seed=settings.seed,
                                      verbose=False)
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len)
    pad_id, device = tiny_tokenizer.pad_token_id, torch.device("cpu")

    def tensor_lists(epoch):
        return helpers.as_batch_dicts(*helpers.smart_batches_from_ids(
            input_ids, labels, settings.batch_size, pad_id, seed=settings.seed + epoch))

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
