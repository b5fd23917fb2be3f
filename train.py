"""Fine-tune BERT on IMDB with smart batching, on one process or many: the series' recipe as a script.

    python train.py --profile tiny --out outputs/train                          # one device
    torchrun --nproc-per-node 2 train.py --profile tiny --out outputs/train     # 2 processes

Settings come as in the notebooks (helpers.get_settings: the profile, SMART_BATCHING_* variables),
then these options. Under torchrun every process runs this file: it joins the process group
(nccl on GPUs, gloo on CPUs, from the same code), wraps the model in DistributedDataParallel
(which averages the gradients after every backward pass), and trains on its share of the smart
batches (SmartBatchSampler with num_replicas / rank: every process builds the same batches and keeps
every num_replicas-th). The loops are the notebooks' (helpers.fine_tune, helpers.evaluate). Each process
evaluates its share of the test set; rank 0 gathers the predictions, puts them back in the
dataset's order, prints, and writes the model, its tokenizer and results.json to --out.

Bad values and impossible set-ups (more processes than batches, a budget below the longest
review) stop before any training with a message naming the option. tests/test_train_script.py
runs it with 2 processes on gloo.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

RANK = int(os.environ.get("RANK", "0"))  # torchrun (and accelerate launch) set these
WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))


class SetupError(Exception):
    """An option that cannot work with this data or this many processes: (option, message)."""


def count(text: str, allow_all: bool = False, minimum: int = 1):
    """An argparse type: a whole number >= minimum (or 'all': the whole split)."""
    if allow_all and text.lower() == "all":
        return "all"
    if not text.isdigit() or int(text) < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}"
                                         + (" or 'all'" if allow_all else "") + f", got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):  # under torchrun: one message, from rank 0, and every rank stops
        if RANK == 0:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    from support.imdb import DATA_SOURCES, looks_like_path  # light: no torch

    def data_source(text):
        if text in DATA_SOURCES or looks_like_path(text):
            return text
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATA_SOURCES)} or the path of an "
                                         f"aclImdb folder or .tar.gz archive, got {text!r}")

    p = Parser(prog="train.py", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=("full", "tiny", "auto"),
                   help="the series' profile (default: $SMART_BATCHING_PROFILE, else auto: full with a GPU)")
    p.add_argument("--data", type=data_source, help="auto, tfds, download, synthetic or a path to aclImdb")
    p.add_argument("--model", help="a hub name or a local folder (tiny: the offline 2-layer BERT)")
    p.add_argument("--tokenizer", help="when not the model's own (e.g. for random-bert-base)")
    p.add_argument("--train-size", type=lambda t: count(t, allow_all=True), help="reviews, or 'all'")
    p.add_argument("--test-size", type=lambda t: count(t, allow_all=True), help="reviews, or 'all'")
    p.add_argument("--epochs", type=count)
    p.add_argument("--batch-size", type=count, help="reviews per batch and process (a cap with --max-tokens)")
    p.add_argument("--max-tokens", type=lambda t: "auto" if t == "auto" else count(t),
                   help="a token budget per batch instead of a batch size; auto: helpers.token_budget")
    p.add_argument("--max-len", type=lambda t: count(t, minimum=2), help="tokens per review, [CLS] and [SEP] included")
    p.add_argument("--lr", type=positive_float, help="learning rate")
    p.add_argument("--seed", type=lambda t: count(t, minimum=0))
    p.add_argument("--pad-to-multiple-of", type=count)
    p.add_argument("--fail-fast", action="store_true", help="each process's costliest batch at step 2")
    p.add_argument("--workers", type=lambda t: count(t, minimum=0), default=0,
                   help="DataLoader worker processes per training process (default 0)")
    p.add_argument("--fp32", action="store_true", help="no mixed precision on a GPU")
    p.add_argument("--out", type=Path, help="where the model and results.json go (default outputs/train)")
    p.add_argument("--save-batches", action="store_true",
                   help="each process writes the indices of the batches it trained on to OUT/batches/")
    return p.parse_args(argv)


def settings_from(args):
    import helpers

    given = dict(data_source=args.data, model_name=args.model, tokenizer_name=args.tokenizer,
                 train_size=args.train_size, test_size=args.test_size, epochs=args.epochs,
                 batch_size=args.batch_size, max_len=args.max_len, learning_rate=args.lr, seed=args.seed,
                 pad_to_multiple_of=args.pad_to_multiple_of)
    # An option not given (None) leaves the profile's value, or SMART_BATCHING_*'s; 'all': no subset.
    overrides = {k: None if v == "all" else v for k, v in given.items() if v is not None}
    return helpers.get_settings(args.profile, **overrides)


def check_setup(args, settings, train_lengths, test_lengths, world_size: int):
    """(batch_size, max_tokens) for the samplers, once they can work here; else a SetupError."""
    import helpers

    longest = max(int(train_lengths.max()), int(test_lengths.max()))
    max_tokens, batch_size = args.max_tokens, settings.batch_size
    if max_tokens == "auto":
        max_tokens = max(helpers.token_budget(train_lengths, batch_size), longest)
    if max_tokens is not None:
        batch_size = args.batch_size  # with a budget a batch size is only a cap, if given
        if max_tokens < longest:
            raise SetupError("--max-tokens", f"{max_tokens} is below the longest review, {longest} tokens "
                             f"(max_len {settings.max_len}): raise it or lower --max-len")
    fewest = min(len(helpers.smart_batch_indices(train_lengths, batch_size, settings.seed + epoch,
                                                 max_tokens)) for epoch in range(settings.epochs))
    if fewest < world_size:
        option = "--max-tokens" if max_tokens is not None else "--batch-size"
        raise SetupError(option, f"{len(train_lengths)} training reviews make {fewest} batch"
                         f"{'es' if fewest > 1 else ''} an epoch, fewer than the {world_size} processes: "
                         "lower it, raise --train-size or start fewer processes (--nproc-per-node)")
    if len(test_lengths) < world_size:
        raise SetupError("--test-size", f"{len(test_lengths)} test reviews cannot give each of the "
                         f"{world_size} processes one")
    return batch_size, max_tokens


def weights_fingerprint(model) -> str:
    """sha256 of every parameter's name and bytes: equal on two processes iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Recorded:
    """Batches as the training loop receives them, recording each one's dataset indices."""

    def __init__(self, loader, log: list):
        self.loader, self.log = loader, log

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.log.append(batch["index"].tolist())
            yield batch


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    import helpers

    distributed = "WORLD_SIZE" in os.environ  # launched by torchrun / accelerate launch
    on_gpu = torch.cuda.is_available()
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if on_gpu and per_machine > torch.cuda.device_count():  # before any process waits for another
        if RANK == 0:
            print(f"train.py: error: argument --nproc-per-node: {per_machine} processes on this machine but "
                  f"{torch.cuda.device_count()} GPU(s): start at most that many, or hide the GPUs "
                  "(CUDA_VISIBLE_DEVICES=) to run the processes on the CPU with gloo", file=sys.stderr)
        return 2
    backend = "nccl" if on_gpu else "gloo"  # the same code either way
    if on_gpu:
        torch.cuda.set_device(LOCAL_RANK)
    device = torch.device("cuda", LOCAL_RANK) if on_gpu else torch.device("cpu")
    if distributed:
        dist.init_process_group(backend)

    def gather(value) -> list:
        """Every process's value, on every process."""
        if not distributed:
            return [value]
        values = [None] * WORLD_SIZE
        dist.all_gather_object(values, value)
        return values

    def stop_together(error: str | None) -> None:
        """All processes go on, or all stop (one process alone waiting for the others would hang)."""
        errors = [e for e in gather(error) if e]
        if errors:
            raise SystemExit(errors[0])

    say = print if RANK == 0 else (lambda *a, **k: None)
    try:
        try:
            settings = settings_from(args)
            out = args.out or helpers.output_dir("train")
            # Rank 0 first: a download or cache happens once, the others then read it.
            data = helpers.prepare_data(settings, verbose=RANK == 0) if RANK == 0 else None
            stop_together(None)
            if data is None:
                data = helpers.prepare_data(settings, verbose=False)
            batch_size, max_tokens = check_setup(args, settings, data.train.lengths, data.test.lengths,
                                                 WORLD_SIZE)
            error = None
        except SetupError as e:
            error = f"train.py: error: argument {e.args[0]}: {e.args[1]}"
        except (ValueError, OSError, RuntimeError) as e:
            error = f"train.py: error: {e}"
        if error and RANK == 0:
            print(error, file=sys.stderr)
        stop_together(error)

        say(f"{WORLD_SIZE} process(es), {backend} on {device.type}; settings:\n{settings.describe()}")
        model = helpers.load_model(settings, num_labels=data.train.num_labels).to(device)
        if distributed:
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[LOCAL_RANK] if on_gpu else None)
        collate = helpers.PadCollator(data.pad_id, settings.pad_to_multiple_of)
        sampler = helpers.SmartBatchSampler(data.train.lengths, batch_size, max_tokens=max_tokens,
                                            seed=settings.seed, num_replicas=WORLD_SIZE, rank=RANK,
                                            fail_fast=args.fail_fast)
        loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=collate, num_workers=args.workers,
                            pin_memory=on_gpu, generator=torch.Generator().manual_seed(settings.seed))
        say(f"each process trains on its share: {len(sampler)} of the {len(sampler.all_batches())} batches "
            "of an epoch" if distributed else f"{len(sampler)} batches an epoch")
        used = {}  # epoch -> this process's batches, as the loop received them

        def batches_for_epoch(epoch):
            sampler.set_epoch(epoch)  # a new arrangement every epoch, the same on every process
            return Recorded(loader, used.setdefault(epoch, [])) if args.save_batches else loader

        amp = not args.fp32
        history = helpers.fine_tune(model, batches_for_epoch, settings, device, amp=amp, verbose=RANK == 0)

        # Evaluation: length order, each process its share; rank 0 restores the dataset's order.
        test_sampler = helpers.SmartBatchSampler(data.test.lengths, batch_size, max_tokens=max_tokens,
                                                 shuffle=False, num_replicas=WORLD_SIZE, rank=RANK)
        test_loader = DataLoader(data.test, batch_sampler=test_sampler, collate_fn=collate,
                                 num_workers=args.workers, pin_memory=on_gpu)
        trained = model.module if distributed else model
        mine = helpers.evaluate(trained, test_loader, device, amp=amp, verbose=RANK == 0)
        parts = gather(dict(index=mine["index"], predictions=mine["predictions"], labels=mine["labels"],
                            logits=mine["logits"].numpy()))
        fingerprints = gather(weights_fingerprint(trained))
        losses = gather([h["losses"] for h in history])
        if args.save_batches:
            (out / "batches").mkdir(parents=True, exist_ok=True)
            (out / "batches" / f"rank{RANK}.json").write_text(json.dumps(used))
        if RANK == 0:
            everything = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            order = np.argsort(everything["index"], kind="stable")
            if not np.array_equal(everything["index"][order], np.arange(len(data.test))):
                raise RuntimeError("the processes did not evaluate every test review exactly once")
            test = {key: everything[key][order] for key in ("predictions", "labels", "logits")}
            accuracy = float((test["predictions"] == test["labels"]).mean())
            identical = len(set(fingerprints)) == 1
            print(f"test accuracy {accuracy:.3f} on {len(order):,} reviews, gathered from {WORLD_SIZE} "
                  f"process(es); weights identical on every process: {identical}")
            trained.save_pretrained(out / "model")
            data.tokenizer.save_pretrained(out / "model")
            epochs = [dict(epoch=e + 1, steps_per_process=len(losses[0][e]),
                           mean_loss=float(np.mean([l for rank in losses for l in rank[e]])),
                           seconds=history[e]["seconds"]) for e in range(settings.epochs)]
            results = dict(command=sys.argv, world_size=WORLD_SIZE, backend=backend if distributed else None,
                           device=str(device), settings=dataclasses.asdict(settings),
                           batch_size=batch_size, max_tokens=max_tokens, epochs=epochs,
                           test=dict(accuracy=accuracy, reviews=len(order), predictions=test["predictions"].tolist(),
                                     logits=test["logits"].tolist()),
                           weights_sha256=fingerprints, weights_identical=identical)
            (out / "results.json").write_text(json.dumps(results, indent=1))
            print(f"saved the model and its tokenizer to {out / 'model'}, results to {out / 'results.json'}")
        return 0
    except SystemExit as stop:
        return 2 if stop.code else 0
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
