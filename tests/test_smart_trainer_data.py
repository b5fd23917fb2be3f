"""The data an HF user brings to SmartBatchingTrainer: a `datasets.Dataset` (lengths read once,
column-wise; columns the model does not take dropped), sentence pairs (token_type_ids padded and
passed on), regression and multi-label targets (kept as floats), DataCollatorWithPadding as the
collator. Tiny model, CPU, a few hundred short rows.
"""
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

import helpers
from support import lengths as lengths_module
from support.imdb import synthetic_reviews

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import smart_trainer  # noqa: E402

SETTINGS = helpers.get_settings("tiny", epochs=1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reviews(tiny_tokenizer):
    """A datasets.Dataset as an HF user builds it: text and label columns, tokenized with map."""
    texts, labels = synthetic_reviews(120, seed=3)
    raw = datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()})
    return raw.map(lambda batch: tiny_tokenizer(batch["text"], truncation=True, max_length=SETTINGS.max_len),
                   batched=True)


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    """Sentence pairs: (first texts, second texts, labels)."""
    first, labels = synthetic_reviews(80, seed=4)
    second, _ = synthetic_reviews(80, seed=5)
    return first, [text[: 20 + 3 * i] for i, text in enumerate(second)], labels


class Recording(smart_trainer.SmartBatchingTrainer):
    """Keeps every batch the model is given."""

    def training_step(self, model, inputs, *args, **kwargs):
        self.seen.append({key: value.clone() for key, value in inputs.items()})
        return super().training_step(model, inputs, *args, **kwargs)


def make(train, tmp_path, num_labels=2, eval_dataset=None, **options):
    collator = options.pop("data_collator", helpers.PadCollator(0))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=16,
        per_device_eval_batch_size=16, use_cpu=True, save_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, seed=SETTINGS.seed, **options)
    trainer = Recording(model=helpers.load_model(SETTINGS, num_labels=num_labels), args=args,
                        train_dataset=train, eval_dataset=eval_dataset, data_collator=collator)
    trainer.seen = []
    return trainer


def test_lengths_of_a_dataset_are_read_column_wise_after_select_and_shuffle(reviews):
    view = reviews.shuffle(seed=0).select(range(50))  # an indices mapping over the Arrow table
    expected = [len(view[i]["input_ids"]) for i in range(len(view))]
    assert helpers.sequence_lengths(view).tolist() == expected
    sampler = helpers.SmartBatchSampler(view, 8, seed=1)  # a dataset where lengths go
    assert sampler.lengths.tolist() == expected
    # A length column wins, as in the Trainer (length_column_name): these are not the ids' lengths.
    with_column = view.add_column("length", [n + 1 for n in expected])
    assert helpers.sequence_lengths(with_column).tolist() == [n + 1 for n in expected]
    assert helpers.sequence_lengths(with_column, length_column=None).tolist() == expected
    with pytest.raises(ValueError, match="no 'input_ids' column"):
        helpers.sequence_lengths(reviews.remove_columns("input_ids"))


def test_lengths_are_computed_once_per_dataset_for_training_evaluation_and_prediction(reviews, tmp_path):
    train, test = reviews.select(range(80)), reviews.select(range(80, 120))
    trainer = make(train, tmp_path, eval_dataset=test, eval_strategy="epoch")
    with mock.patch.object(lengths_module, "_arrow_lengths", wraps=lengths_module._arrow_lengths) as read:
        trainer.train()  # builds the training loader, evaluates once
        trainer.evaluate()
        output = trainer.predict(test)
    assert read.call_count == 2  # the training set once, the test set once
    np.testing.assert_array_equal(output.label_ids, test["label"])  # the dataset's order


def test_columns_the_model_does_not_take_are_dropped_before_collation(reviews, tmp_path):
    train = reviews.select(range(48))
    collator = mock.Mock(wraps=helpers.PadCollator(0))
    trainer = make(train, tmp_path, data_collator=collator)
    trainer.train()
    keys = {key for call in collator.call_args_list for example in call.args[0] for key in example}
    assert "text" not in keys and {"input_ids", "label"} <= keys
    assert all(set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
               for batch in trainer.seen)
    # Kept (remove_unused_columns=False), a text column is an error naming it, not dropped.
    with pytest.raises(ValueError, match="'text'"):
        make(train, tmp_path, remove_unused_columns=False).train()


def test_text_pairs_tokenize_with_their_token_type_ids(tiny_tokenizer, pairs):
    first, second, _ = pairs
    encoded = helpers.tokenize_without_padding(first, tiny_tokenizer, 40, text_pairs=second)
    theirs = tiny_tokenizer(first, second, truncation=True, max_length=40)
    assert encoded["input_ids"] == theirs["input_ids"]
    assert encoded["token_type_ids"] == theirs["token_type_ids"]
    sep = tiny_tokenizer.sep_token_id
    for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"]):
        assert len(ids) <= 40 and ids[-1] == sep and ids.count(sep) == 2
        first_sep = ids.index(sep)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    with pytest.raises(ValueError, match="text_pairs"):
        helpers.tokenize_without_padding(first, tiny_tokenizer, 40, text_pairs=second[:-1])


@pytest.mark.parametrize("collator", ["PadCollator", "DataCollatorWithPadding"])
def test_a_sentence_pair_task_gives_the_model_padded_token_type_ids(tiny_tokenizer, pairs, tmp_path,
                                                                   collator):
    first, second, labels = pairs
    encoded = helpers.tokenize_without_padding(first, tiny_tokenizer, 60, text_pairs=second)
    train = helpers.TokenizedDataset(encoded, labels)
    data_collator = (helpers.PadCollator(tiny_tokenizer.pad_token_id) if collator == "PadCollator"
                     else transformers.DataCollatorWithPadding(tiny_tokenizer))
    trainer = make(train, tmp_path, data_collator=data_collator)
    trainer.train()
    assert len(trainer.seen) == 5  # 80 pairs in batches of 16
    for batch in trainer.seen:
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        for row, mask, types in zip(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]):
            n = int(mask.sum())
            i = next(i for i, ids in enumerate(encoded["input_ids"]) if ids == row[:n].tolist())
            assert types[:n].tolist() == encoded["token_type_ids"][i]
            assert not types[n:].any() and not row[n:].any()  # padded with 0 and [PAD]


def test_a_regression_label_stays_a_float_and_the_loss_is_mse(reviews, tmp_path):
    scores = np.linspace(0.0, 1.0, len(reviews)).round(3)
    train = reviews.remove_columns("label").add_column("label", scores.tolist()).select(range(64))
    trainer = make(train, tmp_path, num_labels=1)
    trainer.train()
    batch = trainer.seen[0]
    assert batch["labels"].dtype == torch.float32
    assert trainer.model.config.problem_type == "regression"
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        trainer.model.eval()
        logits = trainer.model(**inputs).logits.squeeze(-1)
        loss = trainer.model(**batch).loss
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(logits, batch["labels"]))
    assert not torch.equal(batch["labels"], batch["labels"].round())  # nothing truncated to int


def test_pad_collator_keeps_multi_hot_labels_extra_per_token_keys_and_the_index():
    examples = [{"input_ids": [2, 7, 3], "special_tokens_mask": [1, 0, 1], "labels": [0.0, 1.0, 1.0],
                 "index": 4},
                {"input_ids": [2, 3], "special_tokens_mask": [1, 1], "labels": [1.0, 0.0, 0.0], "index": 9}]
    batch = helpers.PadCollator(0)(examples)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1], [1, 1, 1]]  # padded with 1
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["index"].tolist() == [4, 9]
    with pytest.raises(ValueError, match="'token_type_ids' has 1 values for 2"):
        helpers.PadCollator(0)([{"input_ids": [2, 3], "token_type_ids": [0]}])


def test_the_lengths_benchmark_runs_and_prints_its_time():
    run = subprocess.run([sys.executable, "-m", "benchmarks.dataset_lengths", "--rows", "500"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "500 rows" in run.stdout and "lengths in" in run.stdout
