"""The tokenizer and the model: pretrained from a hub name or a local folder, or built offline.

model_name "tiny" builds a 2-layer BERT from a config and trains a WordPiece tokenizer on the
spot (no network); "random-bert-base" is bert-base's exact shape with random weights, for honest
GPU timings without downloading the weights (give it a tokenizer with tokenizer_name).
Settings come from helpers.get_settings; only their attributes are read here.
"""

from __future__ import annotations

import torch

from support.imdb import synthetic_reviews

TINY_MODEL = "tiny"  # model_name that means "build a small BERT from a config, offline"
# model_name for bert-base's exact shape with random weights: honest GPU timings without the
# weights (give its tokenizer in tokenizer_name, e.g. a local folder with the bert-base vocabulary).
RANDOM_BERT_BASE = "random-bert-base"

# A BERT small enough to train in seconds on a CPU, with the real architecture.
TINY_BERT = dict(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=512)


def load_tokenizer(settings):
    """The model's fast tokenizer (or tokenizer_name's); for the tiny model, one learned here."""
    name = settings.tokenizer_name or settings.model_name
    if name == TINY_MODEL:
        return train_tiny_tokenizer()
    if name == RANDOM_BERT_BASE:
        raise ValueError(f"{RANDOM_BERT_BASE} has no tokenizer of its own: set tokenizer_name "
                         "(SMART_BATCHING_TOKENIZER) to one with the bert-base-uncased vocabulary")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def train_tiny_tokenizer(vocab_size: int = TINY_BERT["vocab_size"], seed: int = 0):
    """A lowercase WordPiece tokenizer with BERT's special tokens, learned from synthetic reviews.

    The vocabulary: the special tokens, every character seen (alone and as a "##" continuation,
    so any text can be spelled out), then the corpus's words, most frequent first. We count the
    words here rather than use `tokenizers`' WordPieceTrainer because that trainer breaks ties in
    hash order, which gives a different vocabulary in every process: tiny-profile runs would
    not repeat.
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus, _ = synthetic_reviews(500, seed=seed)
    # A little general English too, so that other text (IMDB, say) gets real pieces, not [UNK].
    corpus += ["the quick brown fox jumps over the lazy dog while an excited audience watches",
               "abcdefghijklmnopqrstuvwxyz 0123456789 . , ! ? ' \" ( ) - : ; / < >"]
    words = Counter(word for text in corpus
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in words for c in word})
    vocab = specials + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in sorted(words.items(), key=lambda wc: (-wc[1], wc[0])) if w not in vocab]
    vocab = vocab[:vocab_size]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)},
                                           unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=TINY_BERT["max_position_embeddings"],
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])  # BERT's: pairs get types


def model_config(settings, num_labels: int = 2):
    """The model's configuration: the tiny one, bert-base's shape, or the pretrained model's."""
    from transformers import AutoConfig, BertConfig

    if settings.model_name == TINY_MODEL:
        return BertConfig(**TINY_BERT, num_labels=num_labels)
    if settings.model_name == RANDOM_BERT_BASE:  # BertConfig()'s defaults are bert-base's shape
        return BertConfig(num_labels=num_labels)
    return AutoConfig.from_pretrained(settings.model_name, num_labels=num_labels)


def load_model(settings, num_labels: int = 2):
    """BERT with a fresh classification head: pretrained weights, or random ones from a config
    (tiny, random-bert-base), seeded."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(settings.seed)  # the new head's initialisation is part of the experiment
    if settings.model_name in (TINY_MODEL, RANDOM_BERT_BASE):
        return AutoModelForSequenceClassification.from_config(model_config(settings, num_labels))
    return AutoModelForSequenceClassification.from_pretrained(settings.model_name,
                                                              num_labels=num_labels)


def model_max_length(tokenizer) -> int | None:
    """The longest input the tokenizer's model accepts, or None when it does not say."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < 1_000_000 else None
