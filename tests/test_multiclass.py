"""Any single-label classification task, not only IMDB's two classes: four classes of short texts
go through both batching paths, training and evaluation, and the tiny model learns them."""
import numpy as np
import pytest
import torch

import helpers

FILLER = "the movie film story plot was is a an of in on and but it this that".split()
KEYWORDS = [  # words the tiny tokenizer knows whole; each class has its own
    "great excellent wonderful brilliant superb".split(),
    "terrible awful boring dull horrible".split(),
    "actor actress director cast character".split(),
    "music score camera script ending".split(),
]


def four_class_texts(n: int, seed: int):
    """`n` texts of 3 to 55 words, about a fifth of them keywords of the text's class (0..3)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    texts = []
    for label in labels:
        words = rng.choice(FILLER, size=int(rng.integers(3, 56))).astype(object)
        is_key = rng.random(len(words)) < 0.2
        is_key[rng.integers(len(words))] = True  # at least one
        words[is_key] = rng.choice(KEYWORDS[label], size=int(is_key.sum()))
        texts.append(" ".join(words))
    return texts, labels


@pytest.fixture(scope="module")
def four_classes(tiny_tokenizer):
    (train_texts, train_labels), (test_texts, test_labels) = four_class_texts(640, 0), four_class_texts(320, 1)
    settings = helpers.get_settings("tiny", max_len=64, epochs=3)
    return settings, train_texts, train_labels, test_texts, test_labels


def test_four_classes_end_to_end_with_tensor_lists(tiny_tokenizer, four_classes):
    settings, train_texts, train_labels, test_texts, test_labels = four_classes
    pad_id, device = tiny_tokenizer.pad_token_id, torch.device("cpu")
    train_ids = helpers.tokenize_without_padding(train_texts, tiny_tokenizer, settings.max_len, verbose=False)

    def batches_for_epoch(epoch):
        return helpers.smart_batches_from_ids(
            train_ids, train_labels, settings.batch_size, pad_id, seed=settings.seed + epoch, num_labels=4)

    model = helpers.load_model(settings, num_labels=4)
    helpers.fine_tune(model, batches_for_epoch, settings, device, verbose=False)
    test_ids = helpers.tokenize_without_padding(test_texts, tiny_tokenizer, settings.max_len, verbose=False)
    test_batches = helpers.smart_batches_from_ids(test_ids, test_labels, settings.batch_size, pad_id, seed=0)
    assert {int(y) for batch in test_batches for y in batch["labels"]} == {0, 1, 2, 3}
    result = helpers.evaluate(model, test_batches, device, verbose=False)
    assert result["logits"].shape == (len(test_labels), 4)
    assert result["accuracy"] > 0.7, result["accuracy"]  # chance is 0.25
    assert set(result["predictions"].tolist()) == {0, 1, 2, 3}
    # back in the original order: index 0..n-1, the labels line up with the test set's
    assert result["index"].tolist() == list(range(len(test_labels)))
    assert result["labels"].tolist() == list(test_labels)


def test_four_classes_end_to_end_with_the_dataloader(tiny_tokenizer, four_classes):
    settings, train_texts, train_labels, test_texts, test_labels = four_classes
    pad_id, device = tiny_tokenizer.pad_token_id, torch.device("cpu")
    tokenize = lambda texts: helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len,  # noqa: E731
                                                              verbose=False)
    train = helpers.TokenizedDataset(tokenize(train_texts), train_labels)
    test = helpers.TokenizedDataset(tokenize(test_texts), test_labels)
    assert train.num_labels == 4
    sampler = helpers.SmartBatchSampler(train.lengths, settings.batch_size, seed=settings.seed)
    loader = torch.utils.data.DataLoader(train, batch_sampler=sampler, collate_fn=helpers.PadCollator(pad_id),
                                         generator=torch.Generator())

    def loader_for_epoch(epoch):
        sampler.set_epoch(epoch)
        return loader

    model = helpers.load_model(settings, num_labels=train.num_labels)
    helpers.fine_tune(model, loader_for_epoch, settings, device, verbose=False)
    test_sampler = helpers.SmartBatchSampler(test.lengths, settings.batch_size, shuffle=False)
    test_loader = torch.utils.data.DataLoader(test, batch_sampler=test_sampler,
                                              collate_fn=helpers.PadCollator(pad_id))
    result = helpers.evaluate(model, test_loader, device, verbose=False)
    assert result["accuracy"] > 0.7, result["accuracy"]
    # predictions come back in the original order: they line up with the labels
    assert (result["predictions"] == test_labels).mean() == pytest.approx(result["accuracy"])
