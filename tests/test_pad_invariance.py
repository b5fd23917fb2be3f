"""[PAD] does not leak: with the attention mask, a review scores the same alone as it does
padded inside a batch next to a much longer one (tiny model, eval mode, float32)."""
import numpy as np
import pytest
import torch

import helpers
from support import imdb


@pytest.fixture(scope="module")
def tiny_model():
    model = helpers.load_model(helpers.get_settings("tiny"))
    return model.float().eval()


@pytest.fixture(scope="module")
def reviews_and_ids(tiny_tokenizer):
    texts, _ = imdb.synthetic_reviews(40, seed=12)
    input_ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 256)
    return input_ids, tiny_tokenizer.pad_token_id


@torch.inference_mode()
def logits_of(model, sequences, pad_id):
    ids, mask = helpers.pad_batch(sequences, pad_id)
    return model(input_ids=ids, attention_mask=mask).logits


def test_padding_does_not_change_the_logits(tiny_model, reviews_and_ids):
    input_ids, pad_id = reviews_and_ids
    order = np.argsort([len(s) for s in input_ids])
    short = [input_ids[i] for i in order[:6]]
    longest = input_ids[order[-1]]
    assert len(longest) >= 3 * max(len(s) for s in short)  # most of each short row is [PAD]
    alone = torch.cat([logits_of(tiny_model, [s], pad_id) for s in short])
    padded = logits_of(tiny_model, short + [longest], pad_id)[:len(short)]
    assert alone.dtype == torch.float32
    difference = (alone - padded).abs().max().item()
    assert difference < 1e-5, difference
    # and the logits are not trivially equal for every input (the model is sensitive to content)
    assert (alone - alone[0]).abs().max().item() > 1e-4


def test_pad_tokens_without_the_mask_would_change_the_logits(tiny_model, reviews_and_ids):
    # the control: the invariance above comes from the mask, not from a model that ignores input
    input_ids, pad_id = reviews_and_ids
    order = np.argsort([len(s) for s in input_ids])
    short, longest = input_ids[order[0]], input_ids[order[-1]]
    ids, _ = helpers.pad_batch([short, longest], pad_id)
    with torch.inference_mode():
        unmasked = tiny_model(input_ids=ids[:1]).logits
        alone = logits_of(tiny_model, [short], pad_id)
    assert (unmasked - alone).abs().max().item() > 1e-5


def test_smart_and_fixed_batches_predict_the_same(tiny_model, reviews_and_ids):
    input_ids, pad_id = reviews_and_ids
    labels = np.arange(len(input_ids)) % 2
    device = torch.device("cpu")
    smart = helpers.smart_batches_from_ids(input_ids, labels, 8, pad_id, seed=0)
    fixed = helpers.make_fixed_batches(input_ids, labels, 8, pad_id, 256, seed=0)
    assert not torch.equal(smart[0]["index"], fixed[0]["index"])  # different batches...
    a = helpers.evaluate(tiny_model, smart, device, verbose=False)
    b = helpers.evaluate(tiny_model, fixed, device, verbose=False)
    assert np.array_equal(a["index"], np.arange(len(input_ids)))  # ...both back in the dataset's order
    assert np.array_equal(b["index"], a["index"]) and np.array_equal(a["labels"], labels)
    assert (a["logits"] - b["logits"]).abs().max().item() < 1e-5
    assert np.array_equal(a["predictions"], b["predictions"])
