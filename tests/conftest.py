"""Fixtures shared by the tests: the tiny tokenizer (trained once per session) and labelled texts
whose content says which review they are and which label they carry, so that a batch can be
checked against its own token ids rather than against the indices the code under test reports."""
import re

import numpy as np
import pytest
import torch

from support import models

# The tests' models and tensors are tiny: one thread is as fast, and on a busy machine it avoids
# OpenMP threads spinning against each other (seconds instead of milliseconds per step).
torch.set_num_threads(1)

FILLER = "the movie was great and the story was awful but the cast really watched it".split()
# Digits one word each: the tiny WordPiece vocabulary spells any digit alone, not every number.
HEADER = re.compile(r"review ((?:\d )+)label (\d)")


def review_text(index: int, label: int, n_filler: int, rng: np.random.Generator) -> str:
    words = rng.choice(FILLER, size=n_filler)
    return f"review {' '.join(str(index))} label {label} " + " ".join(words)


def decode_header(tokenizer, ids) -> tuple[int, int]:
    """(index, label) written at the start of a review, read back from its token ids."""
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    text = ""
    for token in tokens:
        text += token[2:] if token.startswith("##") else " " + token
    match = HEADER.search(text)
    assert match, f"no header in {text!r}"
    return int(match[1].replace(" ", "")), int(match[2])


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return models.train_tiny_tokenizer()


@pytest.fixture(scope="session")
def labelled_reviews():
    """(texts, labels): 203 reviews of 0 to 60 filler words (an odd count: a last short batch)."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 203)
    lengths = np.minimum(rng.lognormal(np.log(12), 0.8, 203).astype(int), 60)
    texts = [review_text(i, int(y), int(k), rng) for i, (y, k) in enumerate(zip(labels, lengths))]
    return texts, labels
