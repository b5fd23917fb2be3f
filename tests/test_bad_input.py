"""Bad input fails early, with a ValueError or FileNotFoundError that names the problem."""
import numpy as np
import pytest

import helpers
from support import imdb

TEXTS = ["a good film", "a bad film", "fine"]
LABELS = [1, 0, 1]


# -- texts and labels ------------------------------------------------------------------------------

@pytest.mark.parametrize("texts, labels, message", [
    ([], [], "no texts: the data is empty"),
    (TEXTS, [1, 0], "3 texts but 2 labels"),
    (TEXTS, [1, 0, 1, 0], "3 texts but 4 labels"),
    (["fine", 42, "ok"], LABELS, "text 1 is a int, not a str"),
    (["fine", None, "ok"], LABELS, "text 1 is a NoneType, not a str"),
    (TEXTS, [-1, 0, 1], r"labels must be class ids >= 0; found \[-1\]"),
    (TEXTS, [0.5, 0, 1], r"labels must be integer class ids 0, 1, ...; found \[0.5, 0.0, 1.0\]"),
    (TEXTS, ["pos", "neg", "pos"], r"integer class ids.*found \['pos', 'neg'\]"),
    (TEXTS, [True, False, True], r"integer class ids"),
    (TEXTS, [0, 0, 0], r"at least two classes"),
])
def test_make_smart_batches_rejects_bad_data(tiny_tokenizer, texts, labels, message):
    with pytest.raises(ValueError, match=message):
        helpers.make_smart_batches(texts, labels, 2, tiny_tokenizer, max_len=16)


@pytest.mark.parametrize("input_ids, labels, message", [
    ([], [], "the data is empty"),
    ([[2, 3], [2, 5, 3]], [1], "2 sequences but 1 labels"),
    ([[2, 3], [2, 5, 3]], [1, -3], r"found \[-3\]"),
])
def test_batching_from_ids_rejects_bad_data(input_ids, labels, message):
    with pytest.raises(ValueError, match=message):
        helpers.smart_batches_from_ids(input_ids, labels, 2, pad_id=0, seed=0)
    with pytest.raises(ValueError, match=message):
        helpers.make_fixed_batches(input_ids, labels, 2, pad_id=0, max_len=8, seed=0)


def test_labels_above_num_labels_are_named(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"labels must be in 0..2 for num_labels=3; found \[3, 7\]"):
        helpers.make_smart_batches(TEXTS * 2, [0, 3, 7, 1, 2, 3], 2, tiny_tokenizer, max_len=16,
                                   num_labels=3)
    with pytest.raises(ValueError, match="num_labels must be an integer >= 2"):
        helpers.TokenizedDataset([[2, 3], [2, 3]], [0, 1], num_labels=1)
    assert helpers.check_labels([0, 3, 1], 3) == 4  # inferred: the largest + 1
    assert helpers.check_labels(np.array([0, 1]), 2, num_labels=5) == 5


def test_imdb_keeps_its_two_classes(tmp_path):
    for label, name in ((0, "neg"), (1, "pos")):
        folder = tmp_path / "aclImdb" / "train" / name
        folder.mkdir(parents=True)
        (folder / "0_1.txt").write_text("fine")
    texts, labels = helpers.load_imdb("train", str(tmp_path), verbose=False)
    assert sorted(labels.tolist()) == [0, 1]


def test_tokenize_without_padding_rejects_bad_texts(tiny_tokenizer):
    with pytest.raises(ValueError, match="the data is empty"):
        helpers.tokenize_without_padding([], tiny_tokenizer, 16)
    with pytest.raises(ValueError, match="text 0 is a bytes, not a str"):
        helpers.tokenize_without_padding([b"bytes"], tiny_tokenizer, 16)


def test_dataset_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="2 sequences but 3 labels"):
        helpers.TokenizedDataset([[2, 3], [2, 3]], [0, 1, 1])


# -- batch_size, max_len, max_tokens ---------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "16"])
def test_batch_size_must_be_a_positive_integer(tiny_tokenizer, batch_size):
    message = "batch_size must be an integer >= 1"
    with pytest.raises(ValueError, match=message):
        helpers.make_smart_batches(TEXTS, LABELS, batch_size, tiny_tokenizer, max_len=16)
    with pytest.raises(ValueError, match=message):
        helpers.smart_batch_indices([3, 4, 5], batch_size)
    with pytest.raises(ValueError, match=message):
        helpers.recipe_batch_indices([3, 4, 5], batch_size)
    with pytest.raises(ValueError, match=message):
        helpers.fixed_batch_indices(3, batch_size)
    with pytest.raises(ValueError, match=message):
        helpers.SmartBatchSampler([3, 4, 5], batch_size)


@pytest.mark.parametrize("max_len", [1, 0, -5, 2.0])
def test_max_len_below_two_is_rejected(tiny_tokenizer, max_len):
    with pytest.raises(ValueError, match=r"max_len must be an integer >= 2 \(\[CLS\] and \[SEP\]"):
        helpers.make_smart_batches(TEXTS, LABELS, 2, tiny_tokenizer, max_len=max_len)
    with pytest.raises(ValueError, match="max_len must be an integer >= 2"):
        helpers.make_fixed_batches([[2, 3]], [0], 1, pad_id=0, max_len=max_len)


def test_max_len_above_the_models_limit_is_rejected(tiny_tokenizer):
    limit = tiny_tokenizer.model_max_length
    helpers.tokenize_without_padding(TEXTS, tiny_tokenizer, limit)  # the limit itself is fine
    with pytest.raises(ValueError, match=f"max_len {limit + 1} is above the model's limit of {limit}"):
        helpers.make_smart_batches(TEXTS, LABELS, 2, tiny_tokenizer, max_len=limit + 1)
    with pytest.raises(ValueError, match="above the model's limit"):
        helpers.tokenize_without_padding(TEXTS, tiny_tokenizer, 10_000)


def test_sequences_longer_than_fixed_max_len_are_rejected():
    with pytest.raises(ValueError, match="sequence of 5 tokens does not fit in 4"):
        helpers.make_fixed_batches([[2, 7, 7, 7, 3]], [1], 1, pad_id=0, max_len=4)


@pytest.mark.parametrize("max_tokens", [5, 1])
def test_max_tokens_below_the_longest_sequence_is_rejected(max_tokens):
    lengths = [3, 6, 2]
    message = "sequence 1 has 6 tokens, more than the max_tokens budget of"
    with pytest.raises(ValueError, match=message):
        helpers.smart_batch_indices(lengths, None, seed=0, max_tokens=max_tokens)
    with pytest.raises(ValueError, match=message):
        helpers.sorted_batch_indices(lengths, None, max_tokens=max_tokens)
    with pytest.raises(ValueError, match=message):
        helpers.SmartBatchSampler(lengths, None, max_tokens=max_tokens)


@pytest.mark.parametrize("max_tokens", [0, -1, 10.5])
def test_max_tokens_must_be_a_positive_integer(max_tokens):
    with pytest.raises(ValueError, match="max_tokens must be an integer >= 1"):
        helpers.smart_batch_indices([3, 4], None, max_tokens=max_tokens)


def test_neither_batch_size_nor_max_tokens():
    with pytest.raises(ValueError, match="give batch_size, max_tokens or both"):
        helpers.smart_batch_indices([3, 4], None)
    with pytest.raises(ValueError, match="give batch_size, max_tokens or both"):
        helpers.SmartBatchSampler([3, 4], None)


@pytest.mark.parametrize("lengths, message", [
    ([], "non-empty"),
    ([[1, 2], [3, 4]], "1-D"),
    ([3, 0, 2], "positive integers"),
    ([3.5, 2.0], "positive integers"),
])
def test_bad_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        helpers.smart_batch_indices(lengths, 2)


# -- data sources ----------------------------------------------------------------------------------

def test_missing_archive(tmp_path):
    missing = tmp_path / "nowhere" / "aclImdb_v1.tar.gz"
    with pytest.raises(FileNotFoundError, match="no aclImdb folder or archive at .*nowhere"):
        helpers.load_imdb("train", source=str(missing), verbose=False)


def test_corrupt_archive(tmp_path):
    corrupt = tmp_path / "aclImdb_v1.tar.gz"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="is not a readable aclImdb archive"):
        helpers.load_imdb("train", source=str(corrupt), verbose=False)


def test_truncated_archive(tmp_path):
    from test_data_sources import tarball_bytes

    truncated = tmp_path / "aclImdb_v1.tar.gz"
    truncated.write_bytes(tarball_bytes()[:200])
    with pytest.raises(ValueError, match="is not a readable aclImdb archive"):
        helpers.load_imdb("train", source=str(truncated), verbose=False)


def test_folder_without_reviews(tmp_path):
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no reviews for split 'train'"):
        helpers.load_imdb("train", source=str(tmp_path), verbose=False)


@pytest.mark.parametrize("source", ["imbd", "tfds ", "huggingface"])
def test_unknown_source(source):
    with pytest.raises(ValueError, match=f"unknown data source {source!r}"):
        helpers.load_imdb("train", source=source, verbose=False)


@pytest.mark.parametrize("split", ["validation", "unsup", "Train"])
def test_unknown_split(split):
    with pytest.raises(ValueError, match=f"unknown split {split!r}"):
        helpers.load_imdb(split, source="synthetic", verbose=False)


@pytest.mark.parametrize("limit, message", [
    (1, "limit must be at least 2 to keep both classes, got 1"),
    (0, "limit must be at least 2"),
    (11, "limit 11 is more than the 10 reviews available"),
])
def test_limit_out_of_range(limit, message):
    texts, labels = imdb.synthetic_reviews(10, seed=0)
    with pytest.raises(ValueError, match=message):
        imdb.balanced_subset(texts, labels, limit)


def test_limit_too_large_through_load_imdb():
    with pytest.raises(ValueError, match="limit 25,001 is more than the 25,000 reviews"):
        helpers.load_imdb("train", source="synthetic", limit=25_001, verbose=False)


def test_synthetic_reviews_need_at_least_one():
    with pytest.raises(ValueError, match="n must be >= 1"):
        imdb.synthetic_reviews(0)


# -- the sampler -----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_replicas, rank", [(0, 0), (2, 2), (2, -1), (1.5, 0)])
def test_sampler_rejects_bad_ranks(num_replicas, rank):
    with pytest.raises(ValueError, match="need num_replicas >= 1 and 0 <= rank < num_replicas"):
        helpers.SmartBatchSampler([3, 4, 5], 2, num_replicas=num_replicas, rank=rank)


def test_sampler_needs_a_sequence_per_rank():
    with pytest.raises(ValueError, match="2 sequences cannot give each of 3 ranks a batch"):
        helpers.SmartBatchSampler([3, 4], 2, num_replicas=3, rank=0)


def test_sampler_drop_last_that_leaves_nothing():
    sampler = helpers.SmartBatchSampler([3, 4, 5], 4, drop_last=True)
    with pytest.raises(ValueError, match="drop_last left no batches"):
        len(sampler)


def test_subset_of_one_class_data_is_refused():
    with pytest.raises(ValueError, match="cannot keep both classes"):
        imdb.balanced_subset(["a", "b", "c"], [1, 1, 1], 2)
