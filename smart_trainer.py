"""The Hugging Face `Trainer` on smart batches: `SmartBatchingTrainer`.

    trainer = SmartBatchingTrainer(model=model, args=TrainingArguments(...), train_dataset=data.train,
                                   data_collator=helpers.PadCollator(pad_id))   # max_tokens=4064: a budget
    trainer.train()
    predictions = trainer.predict(data.test).predictions    # in the dataset's order

Its data loaders use helpers.SmartBatchSampler and helpers.PadCollator instead of the Trainer's own
sampler. Everything else (optimizer, schedule, clipping, mixed precision, logging, saving, several
processes) is the Trainer's. Its batches follow the `TrainingArguments`: per_device_train_batch_size
(or a `max_tokens` budget given here), seed (data_seed if set), and the Trainer's own world_size and
process_index as the sampler's num_replicas and rank. tests/test_smart_trainer.py checks that the
Trainer trains on exactly the sampler's batches, a new arrangement every epoch, and that its losses
are our own loop's (helpers.fine_tune) step for step.
"""
from __future__ import annotations

import numpy as np
import torch
import transformers

import helpers


class SmartBatchLoader(torch.utils.data.DataLoader):
    """A DataLoader over a SmartBatchSampler that the Trainer can drive epoch by epoch.

    set_epoch: the Trainer calls `train_dataloader.set_epoch(epoch)` at the start of every epoch
    when the loader has that method (transformers 5.0 and 5.24 alike). A plain DataLoader has not,
    so without this every epoch would repeat epoch 0's batches.
    len(): the most batches any epoch has. The Trainer reads the length once, before training, and
    runs that many steps every epoch. With a batch size every epoch has as many batches; with a
    token budget the count moves by a batch or so between epochs. Reporting the most, an epoch
    with fewer batches leaves its last steps empty; reporting fewer would drop batches.
    """

    def __init__(self, dataset, sampler: helpers.SmartBatchSampler, collate_fn, epochs: int = 1,
                 **loader_options):
        super().__init__(dataset, batch_sampler=sampler, collate_fn=collate_fn, **loader_options)
        counts = []
        for epoch in range(max(1, epochs)):
            sampler.set_epoch(epoch)
            counts.append(len(sampler))
        sampler.set_epoch(0)
        self.steps_per_epoch = max(counts)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch


class WithoutIndex:
    """collate_fn: the data collator's batch without its "index" key, so that the model never sees
    it. (The Trainer's remove_unused_columns would drop it too, but only while that stays True.)"""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples) -> dict:
        batch = self.collator(examples)
        batch.pop("index", None)
        return batch


def sequence_lengths(dataset) -> np.ndarray:
    """Token counts of a dataset's items: a TokenizedDataset knows them; otherwise we measure
    len(item["input_ids"]) of every item once, as the Trainer's own LengthGroupedSampler does."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    return np.asarray(lengths)


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
    "linear", warmup_steps, max_grad_norm and seed as in the settings. What differs: the Trainer
    applies weight decay to neither biases nor LayerNorm weights (no matter at the recipe's 0.0);
    on a GPU it runs mixed precision through Accelerate; and with a token budget it sizes the
    schedule from the longest epoch, fine_tune from the first.
    """

    def __init__(self, *args, max_tokens: int | None = None, fail_fast: bool = False, **kwargs):
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = helpers.PadCollator(kwargs["processing_class"].pad_token_id)
        super().__init__(*args, **kwargs)
        if not isinstance(self.data_collator, helpers.PadCollator):
            raise ValueError("SmartBatchingTrainer pads with helpers.PadCollator: pass "
                             "data_collator=helpers.PadCollator(pad_id) or a processing_class")
        if (getattr(self.args, "train_sampling_strategy", None) == "group_by_length"
                or getattr(self.args, "group_by_length", False)):
            raise ValueError("SmartBatchingTrainer batches by length itself: leave the Trainer's "
                             "group_by_length off")
        if max_tokens is not None and self.args.gradient_accumulation_steps != 1:
            # Epochs of a budget differ in their batch count: accumulation would carry an
            # epoch's last, unfinished gradients into the next. The budget sets the batch's size.
            raise ValueError("a max_tokens budget needs gradient_accumulation_steps=1")
        if max_tokens is not None:
            helpers.check_batching([1], None, max_tokens)  # an integer >= 1, said before training
        self.max_tokens, self.fail_fast = max_tokens, fail_fast
        # The Trainer multiplies the loss by the number of processes when the model's forward takes
        # **kwargs, expecting a loss summed over the batch and divided by the count of all
        # processes' labels (average_tokens_across_devices). BERT's classification loss is a mean
        # over the batch whatever it is given: on 2 processes its gradients would double.
        self.model_accepts_loss_kwargs = False

    def _seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def _loader(self, dataset, sampler, epochs: int = 1) -> SmartBatchLoader:
        args, workers = self.args, self.args.dataloader_num_workers
        return SmartBatchLoader(
            dataset, sampler, WithoutIndex(self.data_collator), epochs, num_workers=workers,
            pin_memory=args.dataloader_pin_memory and args.device.type == "cuda",
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            # The loader's own generator: each epoch's draw of a base seed for its workers then
            # leaves the global one, and so the dropout masks, alone (see notebook 05).
            generator=torch.Generator().manual_seed(self._seed()))

    def get_train_dataloader(self) -> SmartBatchLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = self.args
        # Every process builds the same batches and keeps its share: the Trainer's world_size and
        # process_index are the sampler's num_replicas and rank (1 and 0 on one device).
        sampler = helpers.SmartBatchSampler(
            sequence_lengths(self.train_dataset),
            None if self.max_tokens else args.train_batch_size, max_tokens=self.max_tokens,
            seed=self._seed(), num_replicas=max(1, args.world_size), rank=args.process_index,
            fail_fast=self.fail_fast)
        # Not passed through self.accelerator.prepare, unlike the Trainer's own loaders: with
        # several processes it would deal our already-dealt batches out a second time, repeat
        # batches to even out the last round, skip batches shorter than batch_size, and its
        # set_epoch would not reach our sampler (tests/test_accelerate.py measures each). The
        # Trainer moves every batch to its device itself.
        return self._loader(self.train_dataset, sampler, epochs=int(np.ceil(args.num_train_epochs)))

    def _eval_sampler(self, dataset) -> helpers.SmartBatchSampler:
        """Length order (shuffle=False): the least padding. Not sharded by us: see below."""
        return helpers.SmartBatchSampler(sequence_lengths(dataset), self.args.eval_batch_size,
                                         shuffle=False)

    def _eval_loader(self, dataset):
        loader = self._loader(dataset, self._eval_sampler(dataset))
        if self.args.world_size > 1:
            # Here prepare is right: it deals whole batches out in turn, and the Trainer gathers
            # the processes' predictions step by step (gather_for_metrics, which also drops the
            # repeats that even out the last round): the sampler's order again, as on one process.
            loader = self.accelerator.prepare(loader)
        return loader

    def get_eval_dataloader(self, eval_dataset=None):
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        return self._eval_loader(eval_dataset if eval_dataset is not None else self.eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._eval_loader(test_dataset)

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
