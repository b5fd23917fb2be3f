"""Smart batching for fine-tuning and evaluating BERT on IMDB: the one module every notebook imports.

Top to bottom it follows the tutorial: settings -> 1. tokenize without padding -> 2. smart
batches, the fixed-padding baseline, counting tokens -> 3. the PyTorch way (dataset, sampler,
collator) -> training and evaluation loops -> progress lines.

One batch shape runs through it all: a dict of input_ids, attention_mask, labels and index (the
examples' positions in their dataset, from which ``evaluate`` restores their order), built from
lists by ``batches_from_indices`` and by a DataLoader with ``PadCollator`` alike (which also pads
token_type_ids and any other per-token key the examples carry).

What the tutorial stands on lives beside it in ``support/``: profiles and environment variables,
the device (mixed precision, attention kernels), IMDB's sources, the tokenizer and model, memory,
the input checks, a dataset's sequence lengths. The names the notebooks use from there are
re-exported here (``helpers.load_imdb``, ``helpers.check_labels`` work).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import random
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

# Used here, and re-exported for the notebooks (helpers.get_device, helpers.load_imdb, ...).
from support.checks import (check_batch_size, check_batching, check_labels, check_max_len,
                            check_texts)
from support.device import attention_backends, autocast_dtype, get_device, model_inputs, synchronize
from support.environment import environment_overrides, output_dir, profile_values, save_figure
from support.imdb import DEFAULT_CACHE_DIR, SPLITS, load_imdb
from support.lengths import sequence_lengths
from support.remaining import RemainingInOrder
from support.memory import step_peak_memory
from support.models import load_model, load_tokenizer, model_max_length

# ----------------------------------------------------------------------------------------------
# Settings: everything a run depends on, in one place.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """The recipe's values as defaults; `get_settings()` applies the profile and overrides."""

    profile: str = "full"
    data_source: str = "auto"  # auto | tfds | download | synthetic | path to aclImdb folder/.tar.gz
    model_name: str = "bert-base-uncased"
    tokenizer_name: str | None = None  # None: the model's own
    max_len: int = 400
    batch_size: int = 16
    learning_rate: float = 5e-5
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0  # transformers.AdamW's default, the recipe's; torch's AdamW says 0.01
    warmup_steps: int = 0
    epochs: int = 1
    seed: int = 321
    max_grad_norm: float = 1.0
    # How the loops run (not the recipe's; it has neither). Both measured in benchmarks/gpu_check.py.
    pad_to_multiple_of: int | None = None  # round each batch's width up (fewer distinct shapes)
    compile: bool = False  # torch.compile(dynamic=True) for training: one graph for all widths
    train_size: int | None = None  # None: the whole split (25,000 reviews)
    test_size: int | None = None
    # Reviews per split where a notebook trains three or more models (05, 06, 07, the benchmark),
    # at most train_size / test_size; None: train_size / test_size themselves.
    comparison_size: int | None = 2000
    cache_dir: str = DEFAULT_CACHE_DIR

    def describe(self) -> str:
        return "\n".join(f"  {f.name:<15} {getattr(self, f.name)}" for f in dataclasses.fields(self))

    def comparison_sizes(self) -> tuple[int | None, int | None]:
        """(train, test) subset sizes for a notebook that trains several models: comparison_size,
        capped by train_size / test_size (None: the whole split)."""
        def capped(size):
            if self.comparison_size is None:
                return size
            return self.comparison_size if size is None else min(size, self.comparison_size)
        return capped(self.train_size), capped(self.test_size)


def get_settings(profile: str | None = None, trains: bool = True, **overrides) -> Settings:
    """Settings for a profile ("full", "tiny" or "auto"; trains=False: "auto" is "full" on a CPU
    too), then SMART_BATCHING_* variables, then keyword overrides (last wins). support/environment.py"""
    values = {**profile_values(profile, trains), **environment_overrides(), **overrides}
    unknown = set(values) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ValueError(f"unknown setting(s): {sorted(unknown)}")
    settings = Settings(**values)
    for name in ("max_len", "batch_size", "epochs", "train_size", "test_size", "comparison_size"):
        value = getattr(settings, name)
        if value is None and name in ("train_size", "test_size", "comparison_size"):
            continue  # the whole split
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return settings


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# ----------------------------------------------------------------------------------------------
# Step 1: tokenize without padding.
# ----------------------------------------------------------------------------------------------

def tokenize_without_padding(texts: Sequence[str], tokenizer, max_len: int = 400,
                             chunk_size: int = 1000, verbose: bool = True,
                             text_pairs: Sequence[str] | None = None):
    """Token ids of each text: [CLS] ... [SEP], truncated to max_len ([SEP] stays last), no padding.

    text_pairs (a second text per example: NLI, paraphrase, question and passage): each pair
    becomes [CLS] text [SEP] pair [SEP], the longer of the two truncated first, and the result
    is a dict of "input_ids" and "token_type_ids" (0 for the first text, 1 for its pair), which
    TokenizedDataset takes as it takes the ids alone. The fast tokenizer's batched call does the
    work in Rust; we feed it in chunks only to print progress on long inputs.
    """
    check_max_len(max_len, tokenizer)
    check_texts(texts)
    if text_pairs is not None:
        check_texts(text_pairs)
        if len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs: they must pair up")
    progress = Progress(len(texts), "tokenized", updates=5,
                        enabled=verbose and len(texts) >= 5 * chunk_size)
    columns: dict[str, list[list[int]]] = {"input_ids": []}
    if text_pairs is not None:
        columns["token_type_ids"] = []
    for start in range(0, len(texts), chunk_size):
        pairs = None if text_pairs is None else list(text_pairs[start:start + chunk_size])
        encoded = tokenizer(list(texts[start:start + chunk_size]), pairs, add_special_tokens=True,
                            truncation=True, max_length=max_len, padding=False,
                            return_attention_mask=False, return_token_type_ids=pairs is not None)
        for key, values in columns.items():
            values.extend(encoded[key])
        progress.update(len(columns["input_ids"]))
    return columns["input_ids"] if text_pairs is None else columns


# ----------------------------------------------------------------------------------------------
# Step 2: smart batches. Sort by length, take contiguous runs at random, pad each to its longest.
# ----------------------------------------------------------------------------------------------

def smart_batch_indices(lengths, batch_size: int | None, seed: int | None = None,
                        max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches of indices, each a contiguous run of the length-sorted order, in random order.

    The recipe's method, step for step: sort by length; while sequences remain, pick a random
    start among them, take the next `batch_size` as a batch and remove them. Every index lands in
    exactly one batch (the last one holds what is left); the same seed gives the same batches.

    With `max_tokens`, a batch is as many sequences as fit in len(batch) * longest <= max_tokens
    (at most batch_size unless None): we cut the sorted order into such runs from the longest end,
    the first run of random size so that the seed moves every cut, and shuffle the runs. Random
    removal would leave gaps that big batches of short reviews span: more tokens processed.
    """
    lengths = check_batching(lengths, batch_size, max_tokens)
    rng = np.random.default_rng(seed)
    order = length_order(lengths)
    batches = []
    if max_tokens is None:
        remaining = RemainingInOrder(order)
        # One uniform draw per batch, made up front: same stream as drawing in the loop, faster.
        for u in rng.random(-(-len(order) // batch_size)):
            take = min(batch_size, remaining.size)
            start = int(u * (remaining.size - take + 1))
            batches.append(np.array(remaining.pop_run(start, take)))
        return batches
    runs = _budget_runs(order, lengths[order], batch_size, max_tokens, rng)
    return [runs[i] for i in rng.permutation(len(runs))]


def _budget_runs(order, sorted_lengths, cap, max_tokens, rng=None) -> list[np.ndarray]:
    """Cut the length-sorted `order` into runs with len(run) * longest <= max_tokens, longest first.

    With `rng`, the first run gets a random size, which shifts every later cut.
    """
    cap = cap or len(order)
    runs = []
    end = len(order)
    while end > 0:
        take = min(cap, max_tokens // int(sorted_lengths[end - 1]), end)
        if rng is not None and not runs:
            take = int(rng.integers(1, take + 1))
        runs.append(order[end - take:end])
        end -= take
    return runs


def token_budget(lengths, batch_size: int) -> int:
    """A max_tokens budget that keeps about batch_size's number of optimizer steps: batch_size x
    the mean length, rounded up (and at least the longest sequence, which must fit). A larger
    budget gives fewer, fuller steps but fewer updates per epoch, which the recipe's learning
    rate and schedule were not tuned for.
    """
    lengths = check_batching(lengths, batch_size)
    return max(int(math.ceil(batch_size * lengths.mean())), int(lengths.max()))


def sorted_batch_indices(lengths, batch_size: int | None, max_tokens: int | None = None):
    """Deterministic batches in pure length order, shortest first: least padding, for evaluation."""
    lengths = check_batching(lengths, batch_size, max_tokens)
    order = length_order(lengths)
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return _budget_runs(order, lengths[order], batch_size, max_tokens)[::-1]


def recipe_batch_indices(lengths, batch_size: int, seed: int | None = None) -> list[np.ndarray]:
    """The recipe's own list-deletion method, kept as a reference: the same draws as
    `smart_batch_indices`, the same batches, but O(n^2 / batch_size): `del samples[a:b]` shifts
    the rest of the list every time."""
    lengths = check_batching(lengths, batch_size)
    rng = np.random.default_rng(seed)
    samples = length_order(lengths).tolist()
    batches = []
    for u in rng.random(-(-len(samples) // batch_size)):
        to_take = min(batch_size, len(samples))
        select = int(u * (len(samples) - to_take + 1))
        batches.append(np.array(samples[select:select + to_take]))
        del samples[select:select + to_take]
    return batches


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Indices in ascending length, ties in input order. Token lengths fit in int16, which NumPy
    sorts stably with a radix sort: the same order as for int64, faster."""
    if lengths.max() < 2**15:
        lengths = lengths.astype(np.int16)
    return np.argsort(lengths, kind="stable")


def padded_width(longest: int, pad_to: int | None = None, pad_to_multiple_of: int | None = None) -> int:
    """The width a batch is padded to: pad_to if given, else its longest sequence, rounded up to
    a multiple of pad_to_multiple_of if given: fewer distinct widths (for set-ups paid per shape)
    for some extra [PAD] tokens, which `count_tokens` counts."""
    width = pad_to or longest
    if pad_to_multiple_of is None:
        return width
    if not isinstance(pad_to_multiple_of, (int, np.integer)) or pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be an integer >= 1 or None, got {pad_to_multiple_of!r}")
    return -(-width // pad_to_multiple_of) * pad_to_multiple_of


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None,
              pad_to_multiple_of: int | None = None):
    """(input_ids, attention_mask) as LongTensors, padded on the right to the longest (or pad_to),
    rounded up to a multiple of pad_to_multiple_of if given (see `padded_width`)."""
    width = padded_width(max(len(s) for s in sequences), pad_to, pad_to_multiple_of)
    input_ids = pad_sequences(sequences, pad_id, width)
    attention_mask = pad_sequences([[1] * len(s) for s in sequences], 0, width)
    return input_ids, attention_mask


def pad_sequences(sequences, value, width: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """One row per sequence, padded on the right with `value` to `width`."""
    padded = torch.full((len(sequences), width), value, dtype=dtype)
    for row, seq in enumerate(sequences):
        if len(seq) > width:
            raise ValueError(f"sequence of {len(seq)} tokens does not fit in {width}")
        padded[row, :len(seq)] = torch.as_tensor(seq, dtype=dtype)
    return padded


def batches_from_indices(input_ids, labels, batch_indices, pad_id: int, pad_to: int | None = None,
                         pad_to_multiple_of: int | None = None) -> list[dict]:
    """One dict per batch, the shape every loop here takes (and a DataLoader with `PadCollator`
    yields): input_ids and attention_mask padded as `pad_batch` pads them, labels, and index,
    the batch's positions in the dataset, with which `evaluate` puts predictions back in order."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    batches = []
    for idx in batch_indices:
        index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        ids, mask = pad_batch([input_ids[i] for i in index.tolist()], pad_id, pad_to, pad_to_multiple_of)
        batches.append(dict(input_ids=ids, attention_mask=mask, labels=labels[index], index=index))
    return batches


def smart_batches_from_ids(input_ids, labels, batch_size: int, pad_id: int, seed: int | None = None,
                           pad_to_multiple_of: int | None = None,
                           num_labels: int | None = None) -> list[dict]:
    """Smart batches (dicts, see `batches_from_indices`) of already-tokenized sequences: call it
    again each epoch, no re-tokenizing. Labels are class ids 0..K-1 (see `check_labels`)."""
    check_labels(labels, len(input_ids), num_labels)
    indices = smart_batch_indices([len(s) for s in input_ids], batch_size, seed)
    return batches_from_indices(input_ids, labels, indices, pad_id,
                                pad_to_multiple_of=pad_to_multiple_of)


def make_smart_batches(text_samples, labels, batch_size: int, tokenizer, max_len: int = 400,
                       seed: int | None = None, pad_to_multiple_of: int | None = None,
                       num_labels: int | None = None):
    """The recipe's function: tokenize without padding, then smart batches, returned as the
    recipe's three lists (py_inputs, py_attn_masks, py_labels), one tensor per batch. Labels are
    class ids 0..K-1 (see `check_labels`). The loops take batch dicts: tokenize once and call
    `smart_batches_from_ids` each epoch, which gives the same batches."""
    check_labels(labels, len(text_samples), num_labels, what="texts")  # before the slow part
    input_ids = tokenize_without_padding(text_samples, tokenizer, max_len)
    indices = smart_batch_indices([len(s) for s in input_ids], batch_size, seed)
    batches = batches_from_indices(input_ids, labels, indices, tokenizer.pad_token_id,
                                   pad_to_multiple_of=pad_to_multiple_of)
    return tuple([batch[key] for batch in batches] for key in ("input_ids", "attention_mask", "labels"))


def fixed_batch_indices(n: int, batch_size: int, seed: int | None = None,
                        shuffle: bool = True) -> list[np.ndarray]:
    """The old way's batches: a random permutation (or input order) cut into runs of batch_size."""
    check_batch_size(batch_size)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def make_fixed_batches(input_ids, labels, batch_size: int, pad_id: int, max_len: int,
                       seed: int | None = None, shuffle: bool = True) -> list[dict]:
    """The recipe's "old approach": every sequence padded to max_len, batches in random order
    (dicts, see `batches_from_indices`)."""
    check_max_len(max_len)
    check_labels(labels, len(input_ids))
    indices = fixed_batch_indices(len(input_ids), batch_size, seed, shuffle)
    return batches_from_indices(input_ids, labels, indices, pad_id, pad_to=max_len)


def count_tokens(lengths, batch_indices, pad_to: int | None = None,
                 pad_to_multiple_of: int | None = None) -> dict:
    """The tokens of these batches, from the sequences' lengths (no tensors needed): real_tokens,
    the sequences' own; processed_tokens, every position the model computes ([PAD] included), with
    each batch padded to its longest (or pad_to, rounded up to pad_to_multiple_of as `pad_batch`
    does); pad_tokens, the difference; efficiency, real / processed."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for idx in batch_indices:
        batch = lengths[np.asarray(idx)]
        real += int(batch.sum())
        padded += len(batch) * padded_width(int(batch.max()), pad_to, pad_to_multiple_of)
    return dict(real_tokens=real, processed_tokens=padded, pad_tokens=padded - real,
                efficiency=real / padded if padded else float("nan"))


# ----------------------------------------------------------------------------------------------
# Step 3: the same, the PyTorch way: a Dataset, a batch Sampler and a collate function.
# ----------------------------------------------------------------------------------------------

class TokenizedDataset(torch.utils.data.Dataset):
    """Unpadded token ids and labels; item i is {"input_ids": [...], "labels": label, "index": i}.
    The index travels into the batch (`PadCollator`), so that `evaluate` can restore the order.
    input_ids: the ids, or `tokenize_without_padding`'s dict for text pairs, whose token_type_ids
    then travel in every item too."""

    def __init__(self, input_ids, labels, num_labels: int | None = None,
                 texts: Sequence[str] | None = None):
        self.columns = dict(input_ids) if isinstance(input_ids, Mapping) else {"input_ids": input_ids}
        self.input_ids = self.columns["input_ids"]
        self.num_labels = check_labels(labels, len(self.input_ids), num_labels)
        for key, values in self.columns.items():
            if len(values) != len(self.input_ids):
                raise ValueError(f"{len(values)} {key} for {len(self.input_ids)} input_ids")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.texts = texts  # the texts they came from, if given (prepare_data keeps them)
        # What every sampler and token counter needs, computed once.
        self.lengths = np.fromiter((len(s) for s in self.input_ids), dtype=np.int64,
                                   count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.columns.items()}
        item["labels"] = int(self.labels[i])
        item["index"] = int(i)
        return item


@dataclasses.dataclass
class PreparedData:
    """What `prepare_data` returns: the tokenizer, its [PAD] id and the tokenized splits."""

    tokenizer: object
    pad_id: int
    train: TokenizedDataset | None
    test: TokenizedDataset | None


def prepare_data(settings: Settings, comparison: bool = False, splits=("train", "test"),
                 verbose: bool = True) -> PreparedData:
    """Steps 0 and 1 in one call: the tokenizer, and each split loaded and tokenized without
    padding. Subset sizes come from the settings: train_size / test_size, or with comparison=True
    (a notebook that trains several models) settings.comparison_sizes()."""
    tokenizer = load_tokenizer(settings)
    sizes = dict(zip(SPLITS, settings.comparison_sizes() if comparison else
                     (settings.train_size, settings.test_size)))
    data = {}
    for split in splits:
        texts, labels = load_imdb(split, settings.data_source, sizes[split], settings.seed,
                                  cache_dir=settings.cache_dir, verbose=verbose)
        input_ids = tokenize_without_padding(texts, tokenizer, settings.max_len, verbose=verbose)
        data[split] = TokenizedDataset(input_ids, labels, texts=texts)
    return PreparedData(tokenizer, tokenizer.pad_token_id, data.get("train"), data.get("test"))


class PadCollator:
    """collate_fn: pad a list of examples to the batch's longest and build the attention mask.

    It keeps what the examples hold. Every per-token list (input_ids, attention_mask,
    token_type_ids, ...: any key whose values are lists) is padded on the right to one width:
    input_ids with pad_id, special_tokens_mask with 1, the others with 0; the attention mask is
    built when the examples have none. Labels ("labels", or "label" / "label_ids", renamed
    "labels" as DataCollatorWithPadding renames them) keep the kind they came in: floats as
    float32 (a regression target, a multi-hot multi-label vector), integers as int64 (class ids).
    "index" and other numbers become int64 / float32 tensors; anything else (a text) is an error
    naming its key. For a TokenizedDataset's items it gives DataCollatorWithPadding's keys and
    dtypes, so either drops into a Trainer. A class, not a closure, so that DataLoader workers
    (num_workers > 0) can pickle it.
    """

    LABEL_KEYS = ("labels", "label", "label_ids")
    PAD_VALUES = {"special_tokens_mask": 1}  # input_ids: pad_id; any other per-token key: 0

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        padded_width(1, pad_to_multiple_of=pad_to_multiple_of)  # checks it
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        sizes = [len(e["input_ids"]) for e in examples]
        width = padded_width(max(sizes), pad_to_multiple_of=self.pad_to_multiple_of)
        batch = {"input_ids": pad_sequences([e["input_ids"] for e in examples], self.pad_id, width),
                 "attention_mask": pad_sequences([[1] * n for n in sizes], 0, width)}
        for key in examples[0]:
            values = [e[key] for e in examples]
            if key in self.LABEL_KEYS:
                batch["labels"] = _number_tensor(values, "labels")
            elif key != "input_ids" and _is_token_list(values[0]):
                for i, (value, size) in enumerate(zip(values, sizes)):
                    if len(value) != size:
                        raise ValueError(f"example {i}: {key!r} has {len(value)} values for "
                                         f"{size} input_ids; a per-token key needs one per token")
                dtype = _number_tensor(values[0], key).dtype
                batch[key] = pad_sequences(values, self.PAD_VALUES.get(key, 0), width, dtype)
            elif key != "input_ids":
                batch[key] = _number_tensor(values, key)
        return batch


def _is_token_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or (torch.is_tensor(value) and value.dim() == 1)


def _number_tensor(values, key: str) -> torch.Tensor:
    """Numbers (or equal-length vectors of them) as a tensor: floats float32, integers int64."""
    try:
        array = np.asarray(values)
    except ValueError:
        array = np.asarray(values, dtype=object)
    if array.dtype.kind == "f":
        return torch.as_tensor(array, dtype=torch.float32)
    if array.dtype.kind in "iub":
        return torch.as_tensor(array.astype(np.int64))
    raise ValueError(f"{key!r} holds {str(values[:3])[:80]}...: PadCollator makes tensors of numbers "
                     "(one number or one equal-length vector per example); remove that key or column")


class SmartBatchSampler(torch.utils.data.Sampler):
    """A batch sampler that yields lists of indices, smart-batched: use it as
    `DataLoader(dataset, batch_sampler=SmartBatchSampler(lengths, 16), collate_fn=PadCollator(pad_id))`.

    lengths: the sequences' token counts, or the dataset itself (a `datasets.Dataset`, a
    TokenizedDataset, ...), measured once by `sequence_lengths` (its `length_column` if it has one).
    shuffle=True: `smart_batch_indices`, re-drawn each epoch with seed + epoch (call `set_epoch`,
    as with DistributedSampler): epoch e gives the batches of smart_batches_from_ids(seed=seed + e).
    shuffle=False: `sorted_batch_indices`, pure length order, for evaluation.
    max_tokens: len(batch) * longest <= max_tokens (see `token_budget`); a sequence longer than
    the budget is an error here, not an out-of-memory error hours later. With a budget the batch
    count moves a little from epoch to epoch; `even_out(epochs)` gives every epoch the same count.
    fail_fast: each rank's costliest batch comes second, so that a run that will run out of memory
    fails at step 2. Not first: a fresh AdamW allocates its state during step 1, so the same batch
    peaks higher at step 2.
    num_replicas / rank: every rank builds the same batches and keeps every num_replicas-th one;
    the largest batches are split in two until all ranks get the same number (drop_last=True
    drops the short last batch and the remainder instead).
    """

    def __init__(self, lengths, batch_size: int | None = 16, *, max_tokens: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0, fail_fast: bool = False,
                 length_column: str = "length"):
        if not isinstance(lengths, (np.ndarray, list, tuple, range, torch.Tensor)):
            lengths = sequence_lengths(lengths, length_column)
        self.lengths = check_batching(lengths, batch_size, max_tokens)
        if not (isinstance(num_replicas, int) and num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, "
                             f"got num_replicas={num_replicas}, rank={rank}")
        if len(self.lengths) < num_replicas:
            raise ValueError(f"{len(self.lengths)} sequences cannot give each of {num_replicas} "
                             "ranks a batch")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.fail_fast = fail_fast
        self.epoch = 0
        self.batches_per_rank: int | None = None  # set by even_out: every epoch's count
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def even_out(self, epochs: int) -> int:
        """Give epochs 0 .. epochs-1 (and every later epoch that has no more) the same number of
        batches per rank: the most any of them has, reached by splitting the largest batches in
        two (a split batch stays within the budget). A loop that reads len() once then runs every
        epoch to its end. Returns that number."""
        self.batches_per_rank = None
        counts = []
        for epoch in range(max(1, epochs)):
            self._cache = None
            self.set_epoch(epoch)
            counts.append(len(self))
        self.set_epoch(0)
        self._cache = None
        self.batches_per_rank = max(counts)
        return self.batches_per_rank

    def all_batches(self) -> list[np.ndarray]:
        """This epoch's batches for all ranks together, before they are dealt out."""
        if self.shuffle:
            batches = smart_batch_indices(self.lengths, self.batch_size, seed=self.seed + self.epoch,
                                          max_tokens=self.max_tokens)
        else:
            batches = sorted_batch_indices(self.lengths, self.batch_size, self.max_tokens)
        if self.drop_last and self.max_tokens is None:
            batches = [b for b in batches if len(b) == self.batch_size]
        extra = len(batches) % self.num_replicas
        if extra and self.drop_last:
            batches = batches[:len(batches) - extra]
        elif extra:
            batches = _split_largest(batches, self.num_replicas - extra)
        if self.batches_per_rank is not None:
            missing = self.batches_per_rank * self.num_replicas - len(batches)
            batches = _split_largest(batches, max(0, missing))
        if not batches:
            raise ValueError("drop_last left no batches: fewer sequences than batch_size * num_replicas")
        return batches

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch (cached: len() and iter() agree)."""
        if self._cache is None or self._cache[0] != self.epoch:
            mine = self.all_batches()[self.rank::self.num_replicas]
            if self.fail_fast:
                costliest = max(range(len(mine)),
                                key=lambda i: (self.lengths[mine[i]].max(), len(mine[i])))
                mine.insert(min(1, len(mine) - 1), mine.pop(costliest))
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def __iter__(self):
        for batch in self.batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.batches())


def _split_largest(batches: list[np.ndarray], times: int) -> list[np.ndarray]:
    """Split the largest batches in two, `times` times (a split batch never exceeds a budget)."""
    batches = list(batches)
    for _ in range(times):
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[i]) < 2:
            raise ValueError("too few sequences to give every rank the same number of batches")
        half = len(batches[i]) // 2
        batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


# ----------------------------------------------------------------------------------------------
# Training and evaluation: one loop each, used by every notebook and the benchmark.
# ----------------------------------------------------------------------------------------------

def train_epoch(model, batches, optimizer, scheduler, device, max_grad_norm: float = 1.0,
                amp_dtype: torch.dtype | None = None, scaler=None, verbose: bool = True) -> dict:
    """One pass over `batches` (batch dicts; the model never sees their index): losses and time.

    Clipping at `max_grad_norm` as in the recipe; with amp_dtype the forward pass runs under
    autocast (float16 also wants an enabled GradScaler). The losses stay on the device until a
    progress line reads them: `loss.item()` every step would make the CPU wait for the GPU.
    """
    model.train()
    # float16 needs loss scaling; off float16 a disabled scaler passes everything straight through.
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    losses = []
    total = len(batches) if hasattr(batches, "__len__") else 0
    progress = Progress(total, "batch", updates=10, enabled=verbose and total > 0)
    with attention_backends():
        for step, batch in enumerate(batches, start=1):
            batch = model_inputs(batch, device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.detach())
            if progress.due(step):
                progress.update(step, f"  loss {torch.stack(losses[-50:]).float().mean().item():.3f}")
    synchronize(device)
    losses = torch.stack(losses).float().cpu().tolist() if losses else []
    return dict(losses=losses, seconds=progress.elapsed, steps=len(losses))


@torch.inference_mode()
def predict(model, batches, device, amp_dtype: torch.dtype | None = None,
            verbose: bool = True) -> dict:
    """Logits, labels and indices (None where the batches have no "labels" / "index") in batch
    order, and the time. The logits stay on the device to the end, as the losses in `train_epoch`.
    """
    model.eval()
    logits, labels, indices = [], [], []
    total = len(batches) if hasattr(batches, "__len__") else 0
    progress = Progress(total, "batch", updates=5, enabled=verbose and total > 0)
    with attention_backends():
        for step, batch in enumerate(batches, start=1):
            inputs = model_inputs(batch, device, labels=False)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits.append(model(**inputs).logits.float())
            labels.append(batch.get("labels"))
            indices.append(batch.get("index"))
            progress.update(step)
    synchronize(device)
    if not logits:
        raise ValueError("no batches to predict")
    labels = None if any(y is None for y in labels) else torch.cat(labels)
    index = None if any(i is None for i in indices) else torch.cat(indices)
    return dict(logits=torch.cat(logits).cpu(), labels=labels, index=index,
                seconds=progress.elapsed)


def fine_tune(model, batches_for_epoch, settings: Settings, device: torch.device,
              amp: bool = True, verbose: bool = True) -> list[dict]:
    """The recipe's training: AdamW, linear schedule, clipping, new batches every epoch.

    batches_for_epoch(epoch) gives that epoch's batches (a list of batch dicts or a DataLoader).
    Returns one `train_epoch` result per epoch. Mixed precision on CUDA when amp=True; with
    settings.compile, torch.compile(dynamic=True): one graph for every width (compile time counts).
    """
    set_seed(settings.seed)  # dropout masks: same seed, same run, whichever batching feeds it
    model.to(device)
    amp_dtype = autocast_dtype(device) if amp else None
    # float16 needs loss scaling to keep small gradients from flushing to zero; bfloat16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    first = batches_for_epoch(0)
    # With a token budget the batch count can differ a little between epochs; the schedule is
    # sized from the first epoch and simply stays at 0 if a later epoch runs a few steps longer.
    optimizer, scheduler = make_optimizer(model, settings, len(first) * settings.epochs)
    step_model = torch.compile(model, dynamic=True) if settings.compile else model
    history = []
    for epoch in range(settings.epochs):
        batches = first if epoch == 0 else batches_for_epoch(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{settings.epochs}: {len(batches):,} batches")
        result = train_epoch(step_model, batches, optimizer, scheduler, device, settings.max_grad_norm,
                             amp_dtype, scaler, verbose)
        if verbose:
            print(f"  mean loss {np.mean(result['losses']):.4f}, took {format_time(result['seconds'])}")
        history.append(result)
    return history


def warm_up(settings: Settings, batches, device: torch.device, steps: int = 2, amp: bool = True) -> None:
    """A few training steps on a throwaway model before anything is timed: the one-off costs of a
    process's first steps (CUDA context, kernels, thread pools) then count for no strategy."""
    if steps < 1:
        return
    first = list(itertools.islice(batches, steps))  # only these: a DataLoader is not run to its end
    model = load_model(settings)
    fine_tune(model, lambda epoch: first, dataclasses.replace(settings, epochs=1), device, amp=amp,
              verbose=False)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def evaluate(model, batches, device, amp: bool = True, verbose: bool = True) -> dict:
    """Accuracy on `batches` (a list of batch dicts or a DataLoader), with predictions, labels and
    logits sorted by the "index" the batches carry: the dataset's order. Without an index, batch
    order (index None); without labels, no accuracy (None). An index seen twice is an error: it
    would count that example twice."""
    result = predict(model, batches, device, autocast_dtype(device) if amp else None, verbose)
    logits, labels, index = result["logits"], result["labels"], result["index"]
    if index is not None:
        index, order = torch.sort(index)
        twice = index[1:][index[1:] == index[:-1]].unique()  # sorted: a repeat sits next to itself
        if len(twice):
            raise ValueError(f"examples {twice[:5].tolist()} were evaluated more than once: each "
                             "index must appear in one batch only")
        logits, index = logits[order], index.numpy()
        labels = None if labels is None else labels[order]
    predictions = logits.argmax(-1)
    accuracy = None if labels is None else float((predictions == labels).float().mean())
    return dict(predictions=predictions.numpy(), labels=None if labels is None else labels.numpy(),
                index=index, accuracy=accuracy, logits=logits, seconds=result["seconds"])


def make_optimizer(model, settings: Settings, num_training_steps: int):
    """AdamW (weight decay 0.0 by default, as the recipe's) and a linear decay to 0 after
    warmup_steps (0 in the recipe). On a GPU, fused AdamW: one kernel launch for all parameters."""
    from transformers import get_linear_schedule_with_warmup

    on_cuda = all(p.is_cuda for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, eps=settings.adam_epsilon,
                                  weight_decay=settings.weight_decay, fused=True if on_cuda else None)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, num_training_steps)
    return optimizer, scheduler


# ----------------------------------------------------------------------------------------------
# Progress lines: the recipe's two small helpers (update interval, time format), and a counter.
# ----------------------------------------------------------------------------------------------

def good_update_interval(total_iters: int, num_desired_updates: int) -> int:
    """A round interval (1, 2, 5, 10, 20, 50, 100, ...) that prints about `num_desired_updates` lines.

    The recipe rounds to a single significant digit; we round to 1, 2 or 5 times a power of ten,
    and return at least 1 so that tiny or empty totals never divide by zero.
    """
    if total_iters < 0 or num_desired_updates < 1:
        raise ValueError("total_iters must be >= 0 and num_desired_updates >= 1")
    exact = total_iters / num_desired_updates
    if exact <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(exact))
    for step in (1, 2, 5, 10):
        if exact <= step * magnitude * 1.5:
            return int(step * magnitude)
    return int(10 * magnitude)


def format_time(elapsed: float) -> str:
    """Seconds as hh:mm:ss (rounded to the second)."""
    return str(datetime.timedelta(seconds=int(round(max(0.0, float(elapsed))))))


class Progress:
    """Prints `done/total` about `updates` times with elapsed and estimated remaining time."""

    def __init__(self, total: int, what: str = "", updates: int = 10, enabled: bool = True):
        self.total = total
        self.what = what
        self.enabled = enabled
        self.every = good_update_interval(total, updates)
        self.start = time.perf_counter()

    def due(self, done: int) -> bool:
        """Whether `update(done)` prints: callers compute costly extras only then."""
        return self.enabled and done >= 1 and (done % self.every == 0 or done == self.total)

    def update(self, done: int, extra: str = "") -> None:
        if not self.due(done):
            return
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / done * (self.total - done) if done else 0.0
        print(f"  {self.what} {done:>{len(str(self.total))},}/{self.total:,}  "
              f"elapsed {format_time(elapsed)}  remaining {format_time(remaining)}{extra}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
