"""make_smart_batches / smart_batches_from_ids / make_fixed_batches on real token ids: labels stay
with their texts, padding is where it belongs, and re-batching never re-tokenizes.

Each text starts with "review <index> label <label>", so a batch row can be read back through
the tokenizer and checked against the label tensor beside it."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

import helpers
from conftest import decode_header


def check_batches(tokenizer, texts, labels, batches, max_len, pad_to=None):
    """batches: dicts; where they carry an "index", it must name the text in each row."""
    pad, cls, sep = tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    seen = []
    for batch in batches:
        ids, mask, y = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == mask.shape and ids.dtype == mask.dtype == y.dtype == torch.long
        if "index" in batch:
            assert batch["index"].dtype == torch.long and batch["index"].shape == y.shape
        assert ids.shape[0] == len(y)
        row_lengths = mask.sum(1)
        # each batch padded to its own longest (or to pad_to for the fixed baseline)
        assert ids.shape[1] == (pad_to or int(row_lengths.max()))
        assert int(row_lengths.max()) <= max_len
        for row in range(len(y)):
            n = int(row_lengths[row])
            # the mask is ones then zeros: padding only after the real tokens
            assert mask[row, :n].eq(1).all() and mask[row, n:].eq(0).all()
            assert ids[row, n:].eq(pad).all() and not ids[row, :n].eq(pad).any()
            assert ids[row, 0] == cls and ids[row, n - 1] == sep
            index, label = decode_header(tokenizer, ids[row, 1:n - 1])
            if "index" in batch:
                assert index == int(batch["index"][row])
            assert label == int(y[row]) == labels[index]
            seen.append(index)
    assert sorted(seen) == list(range(len(texts)))


@settings(max_examples=8, deadline=None)
@given(batch_size=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), max_len=st.integers(20, 80))
def test_make_smart_batches_keeps_labels_with_texts(tiny_tokenizer, labelled_reviews, batch_size,
                                                    seed, max_len):
    texts, labels = labelled_reviews
    py_inputs, py_attn_masks, py_labels = helpers.make_smart_batches(
        texts, labels, batch_size, tiny_tokenizer, max_len=max_len, seed=seed)
    batches = [dict(input_ids=i, attention_mask=m, labels=y)  # the recipe's lists carry no index
               for i, m, y in zip(py_inputs, py_attn_masks, py_labels)]
    check_batches(tiny_tokenizer, texts, labels, batches, max_len)


def test_make_smart_batches_are_smart_batches_from_ids(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    lists = helpers.make_smart_batches(texts, labels, 16, tiny_tokenizer, max_len=40, seed=3)
    dicts = helpers.smart_batches_from_ids(helpers.tokenize_without_padding(texts, tiny_tokenizer, 40),
                                           labels, 16, tiny_tokenizer.pad_token_id, seed=3)
    for key, tensors in zip(("input_ids", "attention_mask", "labels"), lists):
        assert len(tensors) == len(dicts)
        assert all(torch.equal(t, batch[key]) for t, batch in zip(tensors, dicts))


def test_smart_batches_are_smart_batch_indices_of_the_token_lengths(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 40)
    batches = helpers.smart_batches_from_ids(input_ids, labels, 16, tiny_tokenizer.pad_token_id, seed=3)
    expected = helpers.smart_batch_indices([len(s) for s in input_ids], 16, seed=3)
    assert len(batches) == len(expected)
    assert all(np.array_equal(b["index"].numpy(), e) for b, e in zip(batches, expected))


@settings(max_examples=5, deadline=None)
@given(batch_size=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_make_fixed_batches_keeps_labels_with_texts(tiny_tokenizer, labelled_reviews, batch_size, seed):
    texts, labels = labelled_reviews
    max_len = 48
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, max_len)
    batches = helpers.make_fixed_batches(input_ids, labels, batch_size, tiny_tokenizer.pad_token_id,
                                         max_len, seed=seed)
    check_batches(tiny_tokenizer, texts, labels, batches, max_len, pad_to=max_len)


def test_truncation_keeps_cls_first_and_sep_last(tiny_tokenizer, labelled_reviews):
    texts, _ = labelled_reviews
    untruncated = helpers.tokenize_without_padding(texts, tiny_tokenizer, 512)
    for max_len in (2, 3, 8, 17):
        truncated = helpers.tokenize_without_padding(texts, tiny_tokenizer, max_len)
        for full, short in zip(untruncated, truncated):
            assert len(short) == min(len(full), max_len)
            assert short[0] == tiny_tokenizer.cls_token_id
            assert short[-1] == tiny_tokenizer.sep_token_id
            assert short[1:-1] == full[1:len(short) - 1]  # the start of the text is kept
    assert max(len(s) for s in untruncated) > 17  # so truncation was exercised


class CountingTokenizer:
    """Wraps a tokenizer and counts how often it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_rebatching_for_a_new_epoch_does_not_tokenize_again(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    counting = CountingTokenizer(tiny_tokenizer)
    input_ids = helpers.tokenize_without_padding(texts, counting, 64)
    calls_after_tokenizing = counting.calls
    assert calls_after_tokenizing >= 1
    epochs = [helpers.smart_batches_from_ids(input_ids, labels, 16, counting.pad_token_id, seed=100 + epoch)
              for epoch in range(3)]
    assert counting.calls == calls_after_tokenizing
    # new epoch, new arrangement, same content
    assert any(not torch.equal(a["index"], b["index"]) for a, b in zip(epochs[0], epochs[1]))
    for batches in epochs:
        check_batches(tiny_tokenizer, texts, labels, batches, 64)


def test_make_smart_batches_tokenizes_in_one_pass(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    counting = CountingTokenizer(tiny_tokenizer)
    helpers.make_smart_batches(texts, labels, 16, counting, max_len=64, seed=0)
    assert counting.calls == 1  # 203 texts fit in one chunk


def test_tokenize_without_padding_matches_the_tokenizer(tiny_tokenizer, labelled_reviews):
    texts, _ = labelled_reviews
    ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 64, chunk_size=50)
    expected = tiny_tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    assert ids == expected


def test_labels_may_be_a_list_or_an_array(tiny_tokenizer, labelled_reviews):
    texts, labels = labelled_reviews
    a = helpers.make_smart_batches(texts, list(labels), 16, tiny_tokenizer, max_len=64, seed=1)
    b = helpers.make_smart_batches(texts, np.asarray(labels), 16, tiny_tokenizer, max_len=64, seed=1)
    for x, y in zip(a, b):
        assert all(torch.equal(p, q) for p, q in zip(x, y))


def test_batch_index_undoes_the_batching(tiny_tokenizer, labelled_reviews):
    """Sorting by the index the batches carry gives back the dataset's order (what `evaluate` does)."""
    texts, labels = labelled_reviews
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 64)
    batches = helpers.smart_batches_from_ids(input_ids, labels, 16, tiny_tokenizer.pad_token_id, seed=9)
    index = torch.cat([b["index"] for b in batches])
    assert not torch.equal(index, torch.arange(len(texts)))  # the batching did shuffle
    order = torch.argsort(index)
    assert index[order].tolist() == list(range(len(texts)))
    assert torch.cat([b["labels"] for b in batches])[order].tolist() == list(labels)
