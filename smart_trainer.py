"""The Hugging Face `Trainer` on smart batches: `SmartBatchingTrainer`.

    trainer = SmartBatchingTrainer(model=model, args=TrainingArguments(...),
                                   train_dataset=train, eval_dataset=validation,
                                   data_collator=helpers.PadCollator(pad_id),  # or processing_class=tokenizer
                                   max_tokens=None,            # or a token budget per batch
                                   compute_metrics=compute_metrics)
    trainer.train()                                            # resume_from_checkpoint=... works
    predictions = trainer.predict(test).predictions            # in the dataset's order

The datasets: a `datasets.Dataset` with an "input_ids" column (tokenized with `map`, unpadded),
a helpers.TokenizedDataset, or any dataset whose items are dicts with "input_ids". The lengths the
batches are built from come from the dataset's length column (TrainingArguments.length_column_name)
if it has one, else from its input_ids, read once per dataset object (support/lengths.py). Columns
the model's forward does not take are dropped as the Trainer drops them (remove_unused_columns);
an "index" key never reaches the model.

The collator: helpers.PadCollator (the default, with processing_class's [PAD] id) or any collator
that pads, such as transformers.DataCollatorWithPadding.

Its data loaders use helpers.SmartBatchSampler instead of the Trainer's own sampler. Everything
else (optimizer, schedule, clipping, mixed precision, evaluation, logging, checkpoints and resume,
several processes) is the Trainer's. Its batches follow the `TrainingArguments`:
per_device_train_batch_size (or the size auto_find_batch_size retries with, or a `max_tokens`
budget given here), seed (data_seed if set), and the Trainer's own world_size and process_index as
the sampler's num_replicas and rank. Every epoch has the same number of batches (with a budget the
sampler evens them out), so the Trainer's step count, schedule, final save and evaluation, and the
batches it skips when it resumes inside an epoch are those of the real epochs. Options it cannot
honour are refused by name with a ValueError.

tests/test_smart_trainer*.py check that the Trainer trains on exactly the sampler's batches, a new
arrangement every epoch, with our own loop's (helpers.fine_tune) losses step for step; that a run
resumed from a checkpoint inside an epoch ends with the weights of a run never stopped; and the
datasets, collators, evaluation and options above.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import transformers

import helpers
from support.lengths import is_hf_dataset


class SmartBatchLoader(torch.utils.data.DataLoader):
    """A DataLoader over a SmartBatchSampler that the Trainer can drive epoch by epoch.

    set_epoch: the Trainer calls it at the start of every epoch when the loader has it; a plain
    DataLoader has not, so every epoch would repeat epoch 0's batches. It also reseeds the
    loader's own generator (the base seed of its workers), so an epoch draws the same whether or
    not the run was resumed. len(): the sampler's, the same in every epoch.
    """

    def __init__(self, dataset, sampler: helpers.SmartBatchSampler, collate_fn, seed: int = 0,
                 **loader_options):
        # The loader's own generator: each epoch's draw of a base seed for its workers then leaves
        # the global one, and so the dropout masks, alone (see notebook 05).
        super().__init__(dataset, batch_sampler=sampler, collate_fn=collate_fn,
                         generator=torch.Generator().manual_seed(seed), **loader_options)
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed + epoch)


class SamplerEpoch(transformers.TrainerCallback):
    """Sets the training loader's epoch when an epoch begins, from the steps done.

    The Trainer calls set_epoch itself, but when it resumes inside an epoch it iterates a copy of
    the loader that skips the batches already trained on (accelerate's skip_first_batches), and
    that copy has no set_epoch: the sampler would give epoch 0's batches. Every epoch having the
    same number of steps, the steps done say which epoch this is, as the Trainer itself counts.
    """

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if isinstance(train_dataloader, SmartBatchLoader):
            steps_per_epoch = max(1, math.ceil(len(train_dataloader) / args.gradient_accumulation_steps))
            train_dataloader.set_epoch(state.global_step // steps_per_epoch)


class WithoutIndex:
    """collate_fn: the data collator's batch without its "index" key, so that the model never sees
    it (also with remove_unused_columns=False)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples) -> dict:
        batch = self.collator(examples)
        batch.pop("index", None)
        return batch


def refused_options(args, max_tokens: int | None) -> list[str]:
    """What in `args` SmartBatchingTrainer cannot honour, each said with its reason."""
    problems = []
    strategy = getattr(args, "train_sampling_strategy", "random")
    if strategy != "random" or getattr(args, "group_by_length", False):
        problems.append(f"train_sampling_strategy={strategy!r} / group_by_length: the smart batch "
                        "sampler decides the order (leave the default, 'random')")
    if args.dataloader_drop_last:
        problems.append("dataloader_drop_last=True: every sequence is trained on and predicted")
    if max_tokens is not None and args.auto_find_batch_size:
        problems.append("auto_find_batch_size=True with max_tokens: it halves a batch size, not a "
                        "token budget (lower max_tokens instead)")
    accelerator_config = getattr(args, "accelerator_config", None)
    if getattr(accelerator_config, "split_batches", False):
        problems.append("accelerator_config.split_batches=True: each process builds its own batches")
    return problems


class SmartBatchingTrainer(transformers.Trainer):
    """A `Trainer` whose data loaders give smart batches (see the module's docstring).

    max_tokens: a token budget per batch (len(batch) x longest <= max_tokens, see
    helpers.token_budget) instead of per_device_train_batch_size. fail_fast: each rank's costliest
    batch comes second, so that a run that will run out of memory fails at step 2.
    data_collator defaults to helpers.PadCollator with processing_class's [PAD] id.

    Against helpers.fine_tune with the same settings (tests/test_smart_trainer.py): the same
    batches and, on a CPU, the same losses step for step, given the same optimizer: optim=
    "adamw_torch" (the Trainer's default is fused AdamW, which rounds differently; fine_tune uses
    fused AdamW on a GPU only), learning_rate, adam_epsilon, weight_decay, lr_scheduler_type=
    "linear", warmup_steps, max_grad_norm and seed as in the settings; with a budget, fine_tune's
    sampler evened out over the epochs too (SmartBatchSampler.even_out). What differs: the Trainer
    applies weight decay to neither biases nor LayerNorm weights (no matter at the recipe's 0.0),
    and on a GPU it runs mixed precision through Accelerate.
    """

    def __init__(self, *args, max_tokens: int | None = None, fail_fast: bool = False, **kwargs):
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = helpers.PadCollator(kwargs["processing_class"].pad_token_id)
        super().__init__(*args, **kwargs)
        if self.data_collator is transformers.default_data_collator:
            raise ValueError("SmartBatchingTrainer needs a collator that pads: pass data_collator="
                             "helpers.PadCollator(pad_id) (or DataCollatorWithPadding) or a processing_class")
        problems = refused_options(self.args, max_tokens)
        if problems:
            raise ValueError("SmartBatchingTrainer cannot honour " + "; ".join(problems))
        if max_tokens is not None:
            helpers.check_batching([1], None, max_tokens)  # an integer >= 1, said before training
        self.max_tokens = max_tokens
        self.fail_fast = fail_fast
        self.add_callback(SamplerEpoch)
        # The Trainer multiplies the loss by the number of processes when the model's forward takes
        # **kwargs, expecting a loss summed over the batch and divided by the count of all
        # processes' labels (average_tokens_across_devices). BERT's classification loss is a mean
        # over the batch whatever it is given: on 2 processes its gradients would double.
        self.model_accepts_loss_kwargs = False

    def _seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def _lengths(self, dataset) -> np.ndarray:
        return helpers.sequence_lengths(dataset, self.args.length_column_name)

    def _loader(self, dataset, sampler, description: str) -> SmartBatchLoader:
        """Columns the model does not take removed as the Trainer removes them: from a
        datasets.Dataset itself, from any other dataset's examples in the collator."""
        args = self.args
        workers = args.dataloader_num_workers
        collator = self.data_collator
        if is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description=description)
        else:
            collator = self._get_collator_with_removed_columns(collator, description=description)
        return SmartBatchLoader(
            dataset, sampler, WithoutIndex(collator), self._seed(), num_workers=workers,
            pin_memory=args.dataloader_pin_memory and args.device.type == "cuda",
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None)

    def _epochs(self, batches_in_first_epoch: int) -> int:
        """The epochs the Trainer will run: num_train_epochs, or enough for max_steps (evening the
        epochs out only adds batches, so at least as many as it needs)."""
        args = self.args
        if args.max_steps > 0:
            return math.ceil(args.max_steps * args.gradient_accumulation_steps / batches_in_first_epoch)
        return math.ceil(args.num_train_epochs)

    def get_train_dataloader(self) -> SmartBatchLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = self.args
        # Every process builds the same batches and keeps its share: the Trainer's world_size and
        # process_index are the sampler's num_replicas and rank (1 and 0 on one device).
        # _train_batch_size: per_device_train_batch_size, or what auto_find_batch_size retries with.
        sampler = helpers.SmartBatchSampler(
            self._lengths(self.train_dataset), None if self.max_tokens else self._train_batch_size,
            max_tokens=self.max_tokens, seed=self._seed(), num_replicas=max(1, args.world_size),
            rank=args.process_index, fail_fast=self.fail_fast)
        sampler.even_out(self._epochs(len(sampler)))
        # Not passed through self.accelerator.prepare, unlike the Trainer's own loaders: with
        # several processes it would deal our already-dealt batches out a second time, repeat
        # batches to even out the last round, skip batches shorter than batch_size, and its
        # set_epoch would not reach our sampler (tests/test_accelerate.py measures each). The
        # Trainer moves every batch to its device itself.
        return self._loader(self.train_dataset, sampler, "training")

    def _eval_sampler(self, dataset) -> helpers.SmartBatchSampler:
        """Length order (shuffle=False): the least padding. Not sharded by us: see below."""
        return helpers.SmartBatchSampler(self._lengths(dataset), self.args.eval_batch_size,
                                         shuffle=False)

    def _eval_loader(self, dataset, description: str):
        # Through prepare, as the Trainer's own loaders: with several processes it deals whole
        # batches out in turn and the Trainer gathers the processes' predictions step by step
        # (gather_for_metrics, which also drops the repeats that even out the last round): the
        # sampler's order again. On one process too it marks the last batch, which
        # batch_eval_metrics needs for its final compute_result=True.
        return self.accelerator.prepare(self._loader(dataset, self._eval_sampler(dataset), description))

    def get_eval_dataloader(self, eval_dataset=None):
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        return self._eval_loader(eval_dataset if eval_dataset is not None else self.eval_dataset,
                                 "evaluation")

    def get_test_dataloader(self, test_dataset):
        return self._eval_loader(test_dataset, "test")

    def predict(self, test_dataset, *args, **kwargs):
        """The Trainer's predict, with predictions and labels put back in the dataset's order
        (the batches ran in length order)."""
        output = super().predict(test_dataset, *args, **kwargs)
        order = np.concatenate(self._eval_sampler(test_dataset).all_batches())

        def restore(values):
            if isinstance(values, (tuple, list)):
                return type(values)(restore(v) for v in values)
            if values is None or len(values) != len(order):
                return values
            restored = np.empty_like(values)
            restored[order] = values
            return restored

        return output._replace(predictions=restore(output.predictions),
                               label_ids=restore(output.label_ids))

    # Every forward pass the Trainer makes runs with the attention backends of the series' own
    # loops (helpers.attention_backends: no cuDNN attention, which sets itself up anew for each new
    # batch width; notebook 04).
    def training_step(self, *args, **kwargs):
        with helpers.attention_backends():
            return super().training_step(*args, **kwargs)

    def prediction_step(self, *args, **kwargs):
        with helpers.attention_backends():
            return super().prediction_step(*args, **kwargs)
