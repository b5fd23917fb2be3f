"""SmartBatchingTrainer with what users turn on: checkpoints and resume, evaluation during
training, batch_eval_metrics, gradient accumulation, auto_find_batch_size.

The strongest check: a run resumed from a checkpoint inside an epoch trains on exactly the batches
a run never stopped trains on from there, and ends with its weights bit for bit (CPU), with a
batch size, with a token budget (whose epochs, as drawn, differ in their batch count) and with
gradient accumulation. Tiny model, 96 short reviews, CPU.
"""
import numpy as np
import pytest
import torch

import helpers
from support.imdb import synthetic_reviews

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import smart_trainer  # noqa: E402

SETTINGS = helpers.get_settings("tiny", epochs=3)
BUDGET = 1000  # 96 reviews: 9, 9 and 8 batches as drawn in epochs 1-3, evened out to 9 each


@pytest.fixture(scope="module")
def data(tiny_tokenizer):
    """(train, test) TokenizedDatasets of generated reviews: 96 and 40, up to 128 tokens."""
    def split(n, seed):
        texts, labels = synthetic_reviews(n, seed=seed)
        return helpers.TokenizedDataset(
            helpers.tokenize_without_padding(texts, tiny_tokenizer, SETTINGS.max_len), labels)
    return split(96, 1), split(40, 2)


class Recording(smart_trainer.SmartBatchingTrainer):
    """Keeps the input_ids of every batch the Trainer trains on."""

    def training_step(self, model, inputs, *args, **kwargs):
        self.seen.append(inputs["input_ids"].clone())
        return super().training_step(model, inputs, *args, **kwargs)


def make(data, output_dir, max_tokens=None, cls=Recording, **overrides):
    options = dict(output_dir=str(output_dir), num_train_epochs=SETTINGS.epochs, seed=SETTINGS.seed,
                   per_device_train_batch_size=16, per_device_eval_batch_size=16, optim="adamw_torch",
                   learning_rate=SETTINGS.learning_rate, lr_scheduler_type="linear", use_cpu=True,
                   eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
                   disable_tqdm=True)
    options.update(overrides)
    trainer = cls(model=helpers.load_model(SETTINGS), args=transformers.TrainingArguments(**options),
                  train_dataset=data[0], eval_dataset=data[1], data_collator=helpers.PadCollator(0),
                  max_tokens=max_tokens)
    trainer.seen = []
    return trainer


RUNS = {  # name: (SmartBatchingTrainer / TrainingArguments options, steps per epoch, save_steps)
    "batch size": (dict(), 6, 8),
    "token budget": (dict(max_tokens=BUDGET), 9, 11),
    "accumulation": (dict(per_device_train_batch_size=8, gradient_accumulation_steps=3), 4, 6),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_a_resumed_run_ends_with_the_weights_of_a_run_never_stopped(data, tmp_path, name):
    options, steps_per_epoch, save_steps = RUNS[name]
    total = steps_per_epoch * SETTINGS.epochs
    full = make(data, tmp_path / "full", save_strategy="steps", save_steps=save_steps, **options)
    full.train()
    # The step count is the real one: the last step is max_steps, the schedule ends at 0 and the
    # final checkpoint is written.
    assert full.state.global_step == full.state.max_steps == total
    assert set(full.lr_scheduler.get_last_lr()) == {0.0}  # one value per parameter group
    assert (tmp_path / "full" / f"checkpoint-{total}").is_dir()
    # A checkpoint inside the second epoch: the resumed run must skip that epoch's first batches
    # and draw the second epoch's arrangement, not the first's.
    checkpoint = tmp_path / "full" / f"checkpoint-{save_steps}"
    assert steps_per_epoch < save_steps < 2 * steps_per_epoch
    resumed = make(data, tmp_path / "resumed", save_strategy="no", **options)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == total
    micro_batches = options.get("gradient_accumulation_steps", 1)
    done = save_steps * micro_batches
    assert len(resumed.seen) == len(full.seen) - done
    for step, (theirs, ours) in enumerate(zip(full.seen[done:], resumed.seen)):
        assert torch.equal(theirs, ours), f"batch {done + step} differs after the resume"
    never_stopped, after_resume = full.model.state_dict(), resumed.model.state_dict()
    for key in never_stopped:
        assert torch.equal(never_stopped[key], after_resume[key]), key


def accuracy(eval_prediction):
    predictions = np.asarray(eval_prediction.predictions).argmax(-1)
    return {"accuracy": float((predictions == np.asarray(eval_prediction.label_ids)).mean())}


def test_evaluation_every_few_steps_reaches_the_last_step_with_a_budget(data, tmp_path):
    trainer = make(data, tmp_path, max_tokens=BUDGET, eval_strategy="steps", eval_steps=10)
    trainer.compute_metrics = accuracy
    trainer.train()
    evaluated = [entry["step"] for entry in trainer.state.log_history if "eval_accuracy" in entry]
    assert evaluated == [10, 20, 27]  # 27: the final evaluation, at the real last step


def test_evaluation_every_epoch(data, tmp_path):
    trainer = make(data, tmp_path, eval_strategy="epoch")
    trainer.compute_metrics = accuracy
    trainer.train()
    evaluated = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    assert [entry["epoch"] for entry in evaluated] == [1.0, 2.0, 3.0]
    assert [entry["step"] for entry in evaluated] == [6, 12, 18]


def test_batch_eval_metrics_gets_its_final_compute_result(data, tmp_path):
    calls = []

    def batch_accuracy(eval_prediction, compute_result):
        predictions = eval_prediction.predictions.argmax(-1)
        calls.append((int((predictions == eval_prediction.label_ids).sum()), len(predictions),
                      compute_result))
        if compute_result:
            return {"accuracy": sum(c[0] for c in calls) / sum(c[1] for c in calls)}
        return {}

    trainer = make(data, tmp_path, batch_eval_metrics=True, per_device_eval_batch_size=16)
    trainer.compute_metrics = batch_accuracy
    metrics = trainer.evaluate()
    assert [c[2] for c in calls] == [False, False, True]  # 40 reviews, batches of 16
    assert sum(c[1] for c in calls) == len(data[1])
    whole = accuracy(trainer.predict(data[1]))["accuracy"]
    assert metrics["eval_accuracy"] == pytest.approx(whole)


class OutOfMemoryAt16(Recording):
    """Fails as CUDA fails when a batch of 16 does not fit, so that auto_find_batch_size retries."""

    def training_step(self, model, inputs, *args, **kwargs):
        if len(inputs["input_ids"]) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(model, inputs, *args, **kwargs)


def test_auto_find_batch_size_trains_on_the_smaller_batches(data, tmp_path):
    trainer = make(data, tmp_path, cls=OutOfMemoryAt16, auto_find_batch_size=True)
    trainer.train()
    assert max(len(batch) for batch in trainer.seen) == 8
    assert trainer.state.global_step == 12 * SETTINGS.epochs  # 96 reviews in batches of 8


def test_the_epoch_a_resumed_run_starts_in_comes_from_the_steps_done(data, tmp_path):
    # Where the Trainer's resumed loader (a copy that skips the first batches) has no set_epoch,
    # the callback alone sets the sampler's epoch: checkpoint-11 of 9 steps an epoch is epoch 1.
    trainer = make(data, tmp_path, max_tokens=BUDGET)
    loader = trainer.get_train_dataloader()
    assert any(isinstance(c, smart_trainer.SamplerEpoch) for c in trainer.callback_handler.callbacks)
    for steps_done, epoch in ((0, 0), (11, 1), (18, 2)):
        state = transformers.TrainerState(global_step=steps_done)
        smart_trainer.SamplerEpoch().on_epoch_begin(trainer.args, state, None, train_dataloader=loader)
        assert loader.batch_sampler.epoch == epoch
